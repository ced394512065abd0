"""Prefect tasks: thin wrappers over sftflow's domain functions adding retries, caching and artifacts."""
