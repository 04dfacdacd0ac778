"""Findings out: the report formats."""
