"""Plumbing every concern uses: storage, Google clients and credentials, file layout, retries, progress, the console and the local Prefect server."""
