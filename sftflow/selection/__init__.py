"""Choosing a model: the sweep's grid, the leaderboard, the champion and its challenge, their reports."""
