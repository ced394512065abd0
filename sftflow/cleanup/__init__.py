"""Cleanup: what a run made, planned in full, then deleted."""
