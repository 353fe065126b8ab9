"""Evaluation: scoring, metrics, the random-forest baseline and the report."""
