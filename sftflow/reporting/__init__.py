"""Every step's markdown and tables, as plain strings and rows: evaluation, comparison and verdict,
prepared data, tuning job and dry run, the run report. Tasks turn them into Prefect artifacts;
steps write them as report files. Numbers come from sftflow.evaluation.stats; words are made here."""
