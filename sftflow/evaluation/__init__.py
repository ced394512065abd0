"""Evaluation: the concurrent engine, results and checkpoints, ROUGE, statistics, plots, batch prediction, the evaluate and compare steps and their reports."""
