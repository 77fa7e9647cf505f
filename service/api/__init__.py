"""The HTTP API (FastAPI): every endpoint of API.md over the engine's facade."""
