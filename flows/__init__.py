"""Prefect flows composing sftflow's tasks; each is also a CLI subcommand and a deployment."""
