"""Evaluation through Vertex AI batch prediction: half the price of online calls, no per-minute quota.

`requests` writes and reads the JSONL files, `jobs` talks to `client.batches`, `run` drives the
rounds (batch, retries, online fallback) and returns the same ExampleResult records as online mode.
"""
