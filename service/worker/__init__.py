"""Execution: Dramatiq actors that run instances (HTTP and Python tasks), the dispatcher that
hands scheduled instances to their runners, and the sweeper that re-dispatches stranded work."""
