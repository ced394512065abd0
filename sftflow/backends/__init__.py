"""Backend factory: the only place that knows which implementation a setting selects."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sftflow.backends.base import Generator, Tuner

if TYPE_CHECKING:
    from sftflow.config import Settings


def make_generator(settings: Settings, model: str) -> Generator:
    """A generator for `model`: a base model name or a tuned endpoint a Tuner returned."""
    if settings.backend == "vertex":
        from sftflow.backends.vertex import VertexGenerator

        return VertexGenerator(settings, model)
    from sftflow.backends.local import make_local_generator

    return make_local_generator(settings, model)


def make_tuner(settings: Settings) -> Tuner:
    if settings.backend == "vertex":
        from sftflow.backends.vertex import VertexTuner

        return VertexTuner(settings)
    from sftflow.backends.local import LocalTuner

    return LocalTuner(settings)
