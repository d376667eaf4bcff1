"""Benchmarks: scripts that measure the service, run by hand (``python -m bench.<name>``)."""
