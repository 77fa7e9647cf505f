"""``python -m bench``: the one-table benchmark harness (bench/run.py)."""

from bench.run import main

main()
