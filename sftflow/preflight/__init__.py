"""Preflight (`sftflow doctor`): is this backend and these settings ready for a run? Free or read-only calls only."""
