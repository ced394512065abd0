"""Dataset formats, Gemini tuning rules and the embedded sample data."""
