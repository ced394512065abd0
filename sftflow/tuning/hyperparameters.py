"""The tuning hyperparameters, as one type: each field's type, limits, description and default come from the
Settings field of the same name (sftflow/config.py); the line here adds what each backend calls it.

Everything else derives from `Hyperparameters`: the CLI's flags (sftflow.cli.config), the sweep's axes and grid
points (sftflow.selection.grid), the Vertex request (sftflow.backends.vertex) and the local runner's parameters
(sftflow.backends.local), the intent key (sftflow.tuning.intent), the reports and the champion record.

Adding a hyperparameter: a Settings field, one line in `Hyperparameters`, and its use in the local trainer
(sftflow.backends.local.training.TrainParams). An unset new field stays out of every intent key (see `keyed`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any, Literal, get_args, get_origin

import annotated_types
from pydantic import ConfigDict, ValidationError
from pydantic.dataclasses import dataclass
from pydantic.fields import FieldInfo

from sftflow.config import AdapterSize, Settings
from sftflow.errors import SftflowError


class GridError(SftflowError, ValueError):
    """A sweep grid value that cannot be tuned; the message names the flag and the value."""


def setting(name: str, *, vertex: str, local: str, short: str, choice: str = "an allowed value") -> Any:
    """Settings' field `name` (type limits, description, default) plus its names elsewhere: `vertex`, the
    google-genai CreateTuningJobConfig field; `local`, the local trainer's TrainParams field; `short`, its
    prefix in a sweep label (e2-a8-lr0p5); `choice`, what one of its allowed values is called in errors."""
    return FieldInfo.merge_field_infos(Settings.model_fields[name],
                                       json_schema_extra={"vertex": vertex, "local": local, "short": short,
                                                          "choice": choice})


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Hyperparameters:
    """The hyperparameters of one tuning job (a sweep's grid point). Invalid values raise ValidationError."""

    epochs: int = setting("epochs", vertex="epoch_count", local="epochs", short="e")
    adapter_size: AdapterSize = setting("adapter_size", vertex="adapter_size", local="lora_rank", short="a",
                                        choice="a Gemini adapter size")
    learning_rate_multiplier: float = setting("learning_rate_multiplier", vertex="learning_rate_multiplier",
                                              local="lr_multiplier", short="lr")

    @classmethod
    def from_settings(cls, s: Any) -> Hyperparameters:
        return cls(**{n: getattr(s, n) for n in names()})

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def keyed(self, always: Iterable[str] = ()) -> dict[str, Any]:
        """The fields in `always` and every other field that differs from its default: what identifies this
        configuration (an intent key, a label). A field added later, left at its default, changes nothing."""
        always = set(always)
        fields = type(self).__pydantic_fields__
        return {n: v for n, v in self.as_dict().items() if n in always or v != fields[n].default}

    @property
    def label(self) -> str:
        """A result label safe as a path segment: e2-a8-lr0p5 (see sftflow.infra.layout.NAME_PATTERN); the
        first three fields always, a later field only when it is not at its default."""
        parts = []
        for n, v in self.keyed(LABELLED).items():
            text = f"{v:g}" if isinstance(v, float) else str(v)
            short = type(self).__pydantic_fields__[n].json_schema_extra["short"]
            parts.append(short + text.replace(".", "p").replace("-", "m").replace("+", ""))
        return "-".join(parts)

    def for_backend(self, backend: Literal["vertex", "local"]) -> dict[str, Any]:
        """{the backend's name for the field: value} for every field that is set (None: the backend's default)."""
        fields = type(self).__pydantic_fields__
        return {fields[n].json_schema_extra[backend]: v for n, v in self.as_dict().items() if v is not None}


#: Always in a sweep label (the labels in users' leaderboards and eval folders are made of them).
LABELLED = ("epochs", "adapter_size", "learning_rate_multiplier")


def names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(Hyperparameters))


def _field(name: str) -> FieldInfo:
    return Hyperparameters.__pydantic_fields__[name]


def meta(name: str) -> dict[str, str]:
    return _field(name).json_schema_extra  # type: ignore[return-value]


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def setting_text(name: str) -> str:
    """What a field is and allows, for help texts: its description and limits."""
    choices = get_args(_kind(name)) if get_origin(_kind(name)) is Literal else None
    limits = f"allowed: {', '.join(map(str, choices))}" if choices else _bounds(name)
    return f"{_field(name).description.rstrip('.')}; {limits}"


# --------------------------------------------------------------------------- sweep axes


def _kind(name: str) -> Any:
    """The field's type without `| None` (an optional hyperparameter: None = the backend's default)."""
    kind = _field(name).annotation
    args = [a for a in get_args(kind) if a is not type(None)]
    return args[0] if get_origin(kind) is not Literal and len(args) == 1 else kind


def _bounds(name: str) -> str:
    kinds = {annotated_types.Ge: "ge", annotated_types.Gt: "gt", annotated_types.Le: "le", annotated_types.Lt: "lt"}
    got = {type(m).__name__: getattr(m, kinds[type(m)]) for m in _field(name).metadata if type(m) in kinds}
    if _kind(name) is int and {"Ge", "Le"} <= set(got):
        return f"{got['Ge']}..{got['Le']}"
    ops = {"Ge": ">=", "Gt": ">", "Le": "<=", "Lt": "<"}
    return " and ".join(f"{ops[k]} {v:g}" for k, v in got.items())


def _items(flag_: str, value: str | Iterable) -> list[str]:
    parts = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    parts = [p.strip() for p in parts]
    if not parts or any(p == "" for p in parts):
        raise GridError(f"{flag_}: {value!r}: empty value in the list; use e.g. {flag_} 1,2")
    return parts


def parse_axis(name: str, value: str | Iterable) -> list[Any]:
    """A comma list of values for hyperparameter `name`, each checked against its Settings limits, duplicates
    dropped, order kept; GridError (one line naming the flag) on the first bad value."""
    if name not in names():
        raise GridError(f"{flag(name)}: not a tuning hyperparameter (known: {', '.join(names())})")
    fl = flag(name)
    kind = _kind(name)
    choices = get_args(kind) if get_origin(kind) is Literal else None
    if choices:
        kind = type(choices[0])
    limits = f"allowed: {', '.join(map(str, choices))}" if choices else _bounds(name)
    out: list[Any] = []
    for p in _items(fl, value):
        try:
            x = kind(p)
        except ValueError:
            noun = "a whole number" if kind is int else "a number"
            raise GridError(f"{fl}: {p!r} is not {noun} ({limits})" if kind is int else
                            f"{fl}: {p!r} is not {noun}") from None
        if choices and x not in choices:
            raise GridError(f"{fl}: {x} is not {meta(name)['choice']} ({limits})")
        try:
            if isinstance(x, float) and not math.isfinite(x):
                raise ValueError
            Hyperparameters(**{name: x})
        except (ValidationError, ValueError):
            raise GridError(f"{fl}: {p} is out of range ({limits})") from None
        out.append(x)
    return list(dict.fromkeys(out))
