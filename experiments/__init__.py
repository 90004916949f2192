"""Experiment programs (run with ``python -m experiments.<name>``)."""
