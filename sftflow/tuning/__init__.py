"""Tuning: one job per intent (claims and keys), polling, the tune step and its report."""
