"""The option table: every merge option once, derived from `MergeConfig`'s fields.

The CLI's ``merge``/``analyze`` options and the ComfyUI settings node are both built from
`OPTIONS`, so that a new field of `MergeConfig` appears in both with the same name, default, help
and choices. Dependency-free like `config` (the dynamic choice lists import what they name).
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from enum import Enum
from typing import Any, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt

from .config import MergeConfig

AUTO = "auto"
"""The choice that stands for "unset" (None) where a widget cannot hold None."""


@dataclass(frozen=True)
class OptionSpec:
    """One option: a `MergeConfig` field and how each front end spells it."""

    field: str
    kind: type  # an Enum subclass, float, int, bool or str
    optional: bool  # None is allowed: "automatic"
    default: Any
    help: str
    cli: str  # flag declaration: "--error-target", or "--strict/--lenient" for a boolean
    widget: str  # ComfyUI widget name
    dynamic_choices: str | None = None  # "strategies" | "presets" | "architectures"
    lo: Any = None  # bounds as declared on the field (gt/ge, lt/le)
    hi: Any = None
    hi_open: bool = False  # the upper bound itself is excluded (lt)
    step: float | None = None  # widget step of a float option, where finer than the default

    @property
    def flags(self) -> tuple[str, ...]:
        """Every flag the CLI accepts for this option."""
        return tuple(self.cli.split("/"))

    def choices(self) -> list[str] | None:
        """The allowed values (enum values, or the dynamic list with "auto" first), else None."""
        if isinstance(self.kind, type) and issubclass(self.kind, Enum):
            return [e.value for e in self.kind]
        if self.dynamic_choices is None:
            return None
        return [AUTO, *_DYNAMIC[self.dynamic_choices]()]

    @property
    def default_value(self) -> Any:
        return self.default.value if isinstance(self.default, Enum) else self.default


def _strategies() -> list[str]:
    from . import strategies

    return strategies.names()


def _presets() -> list[str]:
    from .presets import PRESETS

    return list(PRESETS)


def _architectures() -> list[str]:
    from .architectures import TABLES

    return list(TABLES)


_DYNAMIC = {"strategies": _strategies, "presets": _presets, "architectures": _architectures}


def _base_type(annotation: Any) -> tuple[type, bool]:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0], True
    return annotation, False


def _bounds(metadata: list) -> tuple[Any, Any, bool]:
    lo: Any = None
    hi: Any = None
    hi_open = False
    for m in metadata:
        if isinstance(m, (Ge, Gt)):
            lo = m.ge if isinstance(m, Ge) else m.gt
        if isinstance(m, (Le, Lt)):
            hi, hi_open = (m.le, False) if isinstance(m, Le) else (m.lt, True)
    return lo, hi, hi_open


def _spec(name: str) -> OptionSpec:
    info = MergeConfig.model_fields[name]
    kind, optional = _base_type(info.annotation)
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    lo, hi, hi_open = _bounds(info.metadata)
    return OptionSpec(
        name,
        kind,
        optional,
        info.default,
        info.description or "",
        str(extra.get("cli", "--" + name.replace("_", "-"))),
        str(extra.get("widget", name)),
        str(extra["choices"]) if "choices" in extra else None,
        lo,
        hi,
        hi_open,
        float(extra["step"]) if "step" in extra else None,  # type: ignore[arg-type]
    )


OPTIONS: tuple[OptionSpec, ...] = tuple(_spec(name) for name in MergeConfig.model_fields if name != "inputs")
BY_FIELD: dict[str, OptionSpec] = {o.field: o for o in OPTIONS}
