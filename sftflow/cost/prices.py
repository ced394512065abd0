"""Vertex AI list prices per 1M tokens, for what a run's evaluations cost (training: `cost.py`).

Public source: https://cloud.google.com/vertex-ai/generative-ai/pricing (Gemini text prices as listed
in 2025; not verifiable offline, so every figure is a default that the setting
`generation_prices_usd` overrides per model). Output includes thinking tokens, which Vertex bills
as output. A tuned model's endpoint is billed at its base model's price. Batch prediction is billed
at a discount (`batch_discount`, 50% per the same page): a batch evaluation asks `usd(..., batch=True)`.
"""

from __future__ import annotations

from dataclasses import dataclass

PRICING_URL = "https://cloud.google.com/vertex-ai/generative-ai/pricing"
LOCAL_SOURCE = "local backend: runs on this machine, nothing is billed"


@dataclass(frozen=True)
class TokenPrice:
    """USD per 1M input / output tokens of one model, where the figures come from, and its batch discount."""

    input_per_million: float
    output_per_million: float
    source: str = PRICING_URL
    batch_discount: float = 0.5  # share taken off the online price for batch prediction

    def usd(self, input_tokens: int, output_tokens: int, *, batch: bool = False) -> float:
        online = (input_tokens * self.input_per_million + output_tokens * self.output_per_million) / 1e6
        return online * (1 - self.batch_discount) if batch else online


#: Base model → (input, output) USD per 1M tokens: Vertex AI list prices (text, prompts ≤ 200k tokens).
LIST_PRICES: dict[str, tuple[float, float]] = {
    "gemini-2.5-pro": (1.25, 10.0),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-flash-lite": (0.10, 0.40),
    "gemini-2.0-flash": (0.15, 0.60),
    "gemini-2.0-flash-001": (0.15, 0.60),
    "gemini-2.0-flash-lite": (0.075, 0.30),
    "gemini-2.0-flash-lite-001": (0.075, 0.30),
}


def price_for(model: str, backend: str, overrides: dict[str, tuple[float, float]] | None = None) -> TokenPrice | None:
    """The price of `model` (a base model name): the setting's override, else the list price; local: free.
    None when the model is not in either table (the cost is then shown as unknown, never guessed)."""
    if backend == "local":
        return TokenPrice(0.0, 0.0, source=LOCAL_SOURCE)
    name = model.removeprefix("publishers/google/models/")
    if overrides and name in overrides:
        i, o = overrides[name]
        return TokenPrice(float(i), float(o), source="setting generation_prices_usd")
    if name in LIST_PRICES:
        return TokenPrice(*LIST_PRICES[name])
    return None
