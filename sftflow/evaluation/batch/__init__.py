"""Evaluation through Vertex AI batch prediction: half the price of online calls, no per-minute quota.

`mode` decides online or batch, `requests` writes and reads the JSONL files, `jobs` talks to
`client.batches`, `run` drives the rounds (batch, retries, online fallback) and returns the same
ExampleResult records as online mode, `cost` prices them at both rates. The evaluate step
(sftflow.evaluation.step.answer) is the one place that picks a mode and runs it.
"""
