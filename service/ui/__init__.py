"""The inspector page's static files (static/): one HTML page, its script and its styles."""
