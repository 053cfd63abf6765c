"""`AdapterFile`: one LoRA file parsed into module entries, tensors loaded lazily per module."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from ..errors import InputFileError
from ..patches import AdapterKind, LowRank, Patch
from . import algebras
from .checks import ContentNotes, check_tensor_header
from .dialects import ParsedStem, parse_key, parse_stem
from .files import TensorSource
from .memory import MemorySource
from .peft_meta import PeftConfig, PeftMetadataError, parse_adapter_metadata

_COMPONENT_OF_PREFIX = {
    "unet.": "unet",
    "transformer.": "transformer",
    "text_encoder.": "text_encoder",
    "text_encoder_2.": "text_encoder_2",
    "text_encoder_3.": "text_encoder_3",
}


def _shape_of(p: Patch) -> tuple[int, ...]:
    if isinstance(p, LowRank):
        return p.shape if p.shape is not None else (p.out_features, int(p.down.shape[1]))
    return tuple(p.delta.shape)


# the largest ΔW one module may have, in values (or 64 per byte of the file): 512 MiB in float32, over
# the largest layers in the architecture tables (Wan's 5120 x 13824 FFN: 71 M values)
MAX_DELTA_VALUES = 1 << 27
_SHAPE_ERRORS = (ValueError, RuntimeError, IndexError, KeyError)  # AlgebraError is a ValueError
_FIT_HINT = "the module's tensors do not fit together: the file is corrupt or the tensors were mislabelled"


@dataclass(frozen=True)
class ModuleEntry:
    """One adapted module as written in the file."""

    stem: str
    parsed: ParsedStem | None
    roles: dict[str, str]  # role -> tensor key
    kind: AdapterKind

    @property
    def has_dora(self) -> bool:
        return "dora_scale" in self.roles


class AdapterFile:
    """A LoRA/LyCORIS file: its module entries, metadata and unparsed keys. Tensors stay on disk
    until `patches()` asks for one module's."""

    def __init__(
        self, path: str | Path, *, allow_pickle: bool = False, source: TensorSource | MemorySource | None = None
    ):
        self.path = Path(path)
        self.source = source if source is not None else TensorSource(self.path, allow_pickle=allow_pickle)
        self.metadata = self.source.metadata
        self._finite: set[str] = set()  # keys whose values were checked (a file is read once per pass)
        self.unparsed: list[str] = []
        self._delta_shapes: dict[str, dict[str, tuple[int, ...]]] = {}
        self.notes = ContentNotes()  # filled as tensors are read: the warnings `content_warnings` gives
        self.entries: dict[str, ModuleEntry] = self._parse()
        try:
            self.peft = parse_adapter_metadata(self.metadata)
        except PeftMetadataError as exc:
            raise InputFileError(
                self.path,
                f"PEFT metadata {exc}",
                key="__metadata__.lora_adapter_metadata",
                hint="it decides every module's alpha: fix the entry, or remove it to use alpha = rank",
            ) from None

    # -- parsing -------------------------------------------------------------------------------
    def _parse(self) -> dict[str, ModuleEntry]:
        by_stem: dict[str, dict[str, str]] = {}
        for key in self.source.keys():
            parsed = parse_key(key)
            if parsed is None:
                self.unparsed.append(key)
                continue
            roles = by_stem.setdefault(parsed.stem, {})
            if parsed.role in roles:
                raise InputFileError(
                    self.path,
                    f"two tensors give the same role '{parsed.role}' of module "
                    f"'{parsed.stem}' ('{roles[parsed.role]}')",
                    key=key,
                )
            roles[parsed.role] = key
        if not by_stem:
            self._raise_not_a_lora()
        entries = {}
        for stem, roles in sorted(by_stem.items()):
            try:
                kind = algebras.kind_of(set(roles))
            except algebras.AlgebraError as exc:
                raise InputFileError(
                    self.path,
                    str(exc),
                    key=next(iter(roles.values())),
                    hint="the file is incomplete or mixes adapter kinds in one module",
                ) from exc
            entry = ModuleEntry(stem, parse_stem(stem), roles, kind)
            for role, key in roles.items():
                check_tensor_header(self.path, key, role, self.source.dtypes[key], self.source.shapes[key])
            self._check_shapes(entry)
            self.delta_shapes(entry)
            entries[stem] = entry
        return entries

    def _raise_not_a_lora(self) -> None:
        keys = self.source.keys()
        if not keys:
            raise InputFileError(self.path, "holds no tensors", hint="the file is empty or was not saved properly")
        if sum(k.endswith((".weight", ".bias")) for k in keys) >= len(keys) / 2:
            raise InputFileError(
                self.path,
                f"looks like a full model checkpoint ({len(keys)} plain weights), not a LoRA",
                key=keys[0],
                hint="pass LoRA files to merge; give a base model with --base",
            )
        raise InputFileError(
            self.path,
            "no key follows a known LoRA convention",
            key=keys[0],
            hint="see `loramerge inspect` for the supported trainers' key formats",
        )

    def _check_shapes(self, entry: ModuleEntry) -> None:
        if entry.kind is not AdapterKind.LORA:
            return
        down = self.source.shapes[entry.roles["down"]]
        up = self.source.shapes[entry.roles["up"]]
        if len(down) < 2 or len(up) < 2 or up[1] != down[0]:
            raise InputFileError(
                self.path,
                f"up {list(up)} and down {list(down)} do not fit together "
                f"(up needs {down[0] if down else '?'} columns)",
                key=entry.roles["up"],
                hint="the file is corrupt or the tensors were mislabelled",
            )

    # -- facts -----------------------------------------------------------------------------------
    @cached_property
    def format(self) -> str:
        families = Counter(e.parsed.family for e in self.entries.values() if e.parsed)
        return families.most_common(1)[0][0] if families else "unknown"

    @cached_property
    def kinds(self) -> dict[str, int]:
        counts = Counter(e.kind.value for e in self.entries.values())
        dora = sum(e.has_dora for e in self.entries.values())
        if dora:
            counts["dora"] = dora
        return dict(sorted(counts.items()))

    def rank(self, entry: ModuleEntry) -> int | None:
        shapes = {role: self.source.shapes[key] for role, key in entry.roles.items()}
        return algebras.rank_of(entry.kind, {r: torch.empty(s, device="meta") for r, s in shapes.items()})

    def peft_config(self, entry: ModuleEntry) -> PeftConfig | None:
        if not self.peft or entry.parsed is None:
            return None
        component = _COMPONENT_OF_PREFIX.get(entry.parsed.prefix, "")
        return self.peft.get(component) or self.peft.get("")

    def alpha(self, entry: ModuleEntry) -> float | None:
        """The alpha that scales this module (alpha tensor first, then PEFT metadata, else None = scale 1)."""
        if "alpha" in entry.roles:
            key = entry.roles["alpha"]
            value = float(self.source.get(key).float().item())
            self.notes.check_alpha(self.path, key, value)
            return value
        rank = self.rank(entry)
        cfg = self.peft_config(entry)
        if cfg is None or rank is None or entry.parsed is None:
            return None
        value = cfg.scale(entry.parsed.stem.path, rank) * rank
        self.notes.check_alpha(self.path, f"{entry.stem} (lora_adapter_metadata lora_alpha)", value)
        return value

    def delta_shapes(self, entry: ModuleEntry) -> dict[str, tuple[int, ...]]:
        """The shape of each patch ``patches(entry)`` gives ({"weight": ..., "bias"?: ...}), from the
        header alone (the algebra run on meta tensors): a module whose tensors do not combine fails here,
        before any data is read."""
        found = self._delta_shapes.get(entry.stem)
        if found is None:
            meta = {
                role: torch.empty(self.source.shapes[key], device="meta")
                for role, key in entry.roles.items()
                if role not in ("alpha", "dora_scale")
            }
            try:
                patches = algebras.compute(entry.kind, meta, None)
            except _SHAPE_ERRORS as exc:
                raise InputFileError(self.path, f"cannot compute ΔW: {exc}", key=entry.stem, hint=_FIT_HINT) from exc
            found = {param: _shape_of(p) for param, p in patches.items()}
            limit = max(MAX_DELTA_VALUES, 64 * self.size_bytes)
            for shape in found.values():
                if math.prod(shape) > limit:
                    raise InputFileError(
                        self.path,
                        f"ΔW of the module would be {list(shape)}: {math.prod(shape):,} values, more than "
                        f"{limit:,} (no model layer is that large; the tensors' shapes are corrupt)",
                        key=entry.stem,
                        hint=_FIT_HINT,
                    )
            self._delta_shapes[entry.stem] = found
        return found

    def content_warnings(self) -> list[str]:
        """What the tensors read so far deserve a warning for (zero LoRA, alpha <= 0, fp16-limit values)."""
        return self.notes.warnings()

    # -- tensors ---------------------------------------------------------------------------------
    def tensors(self, entry: ModuleEntry) -> dict[str, torch.Tensor]:
        keys = {role: key for role, key in entry.roles.items() if role != "alpha"}
        loaded = self.source.get_many(list(keys.values()))
        out = {}
        for role, key in keys.items():
            if key not in self._finite:  # values checked once per file, not once per pass
                self.notes.check_values(self.path, key, loaded[key])
                self._finite.add(key)
            out[role] = loaded[key]
        return out

    def patches(self, entry: ModuleEntry, base_weight: torch.Tensor | None = None) -> dict[str, Patch]:
        """ΔW (float32) of one module: ``{"weight": ..., "bias"?: ...}``. DoRA needs `base_weight`."""
        t = self.tensors(entry)
        dora = t.pop("dora_scale", None)
        alpha = self.alpha(entry)
        try:
            patches = algebras.compute(entry.kind, t, alpha)
        except _SHAPE_ERRORS as exc:  # tensors whose shapes do not combine: torch says which way
            raise InputFileError(self.path, f"cannot compute ΔW: {exc}", key=entry.stem, hint=_FIT_HINT) from exc
        if dora is not None:
            if base_weight is None:
                raise InputFileError(
                    self.path,
                    "DoRA (weight-decomposed) module needs the base weight to compute ΔW",
                    key=entry.roles["dora_scale"],
                    hint="pass the base model with --base MODEL.safetensors",
                )
            from ..patches import Dense

            try:
                patches["weight"] = Dense(algebras.apply_dora(patches["weight"].dense(), base_weight, dora))
            except _SHAPE_ERRORS as exc:
                raise InputFileError(
                    self.path, f"DoRA scale does not fit: {exc}", key=entry.roles["dora_scale"], hint=_FIT_HINT
                ) from exc
        self.notes.note_module(self.path, entry.stem, patches)
        return patches

    @cached_property
    def dtypes(self) -> dict[str, int]:
        return dict(Counter(self.source.dtypes.values()))

    @property
    def size_bytes(self) -> int:
        if isinstance(self.source, MemorySource):  # an earlier step of a recipe: no file behind it
            return self.source.size_bytes
        return self.path.stat().st_size
