"""Experiment suites, the demo and the report."""
