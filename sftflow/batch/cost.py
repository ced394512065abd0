"""What an evaluation's generation costs at online and at batch rates.

Vertex AI bills Gemini per input and output token; batch prediction costs 50% of the online
price (https://cloud.google.com/vertex-ai/generative-ai/pricing, "Batch prediction" column;
https://cloud.google.com/vertex-ai/generative-ai/docs/multimodal/batch-prediction-gemini). Prices
are settings (`price_per_million_input_tokens`, `price_per_million_output_tokens`,
`batch_discount`), never hidden constants. Thinking tokens are billed as output but are not in
the per-example records, so a thinking model's figure is a lower bound. The words for a report
are in sftflow.reporting.evaluation (`mode_lines`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sftflow.results import ExampleResult

PRICE_SOURCE = "https://cloud.google.com/vertex-ai/generative-ai/pricing"


def batch_discount(online_usd: float, discount: float) -> float:
    """The batch price of work that costs `online_usd` online (`discount` 0.5: half price)."""
    if not 0.0 <= discount <= 1.0:
        raise ValueError(f"batch_discount: expected 0..1, got {discount}")
    return online_usd * (1.0 - discount)


def generation_cost(results: Sequence[ExampleResult], *, mode: str, price_in: float, price_out: float,
                    discount: float) -> dict[str, Any]:
    """Tokens of the answered examples and their price online and in batch; `usd` is what `mode` paid."""
    prompt = sum(r.prompt_tokens or 0 for r in results if r.error is None)
    output = sum(r.output_tokens or 0 for r in results if r.error is None)
    online = (prompt * price_in + output * price_out) / 1_000_000
    batch = batch_discount(online, discount)
    return {"mode": mode, "prompt_tokens": prompt, "output_tokens": output, "online_usd": online,
            "batch_usd": batch, "usd": batch if mode == "batch" else online,
            "price_per_million_input_tokens": price_in, "price_per_million_output_tokens": price_out,
            "batch_discount": discount, "source": PRICE_SOURCE}

