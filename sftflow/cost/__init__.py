"""What tuning and evaluation cost: list prices, the one estimate formula, token counts, the approval gate, what a run spent."""
