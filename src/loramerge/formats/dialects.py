"""Trainer key conventions: split each tensor key into (module stem, role) and the stem into
(branch prefix, module path, dotted or underscored).

Pure string work, table-driven, no guessing: a key that matches no rule is returned as unparsed
and reported by the reader; it is never dropped silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..architectures.engine import Stem
from ..architectures.spec import Branch

# (regex on the key's tail, role). The stem is everything before the match. First match wins,
# so longer, more specific spellings come first.
_SUFFIXES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern + r"$"), role)
    for pattern, role in (
        (r"\.lora_linear_layer\.down\.weight", "down"),
        (r"\.lora_linear_layer\.up\.weight", "up"),
        (r"_lora\.down\.weight", "down"),
        (r"_lora\.up\.weight", "up"),
        (r"\.lora\.down\.weight", "down"),
        (r"\.lora\.up\.weight", "up"),
        (r"\.lora_down\.weight", "down"),
        (r"\.lora_up\.weight", "up"),
        (r"\.lora_mid\.weight", "mid"),
        (r"\.lora_A(?:\.[A-Za-z0-9_\-]+)?\.weight", "down"),
        (r"\.lora_B(?:\.[A-Za-z0-9_\-]+)?\.weight", "up"),
        (r"\.lora_A", "down"),
        (r"\.lora_B", "up"),
        (r"\.lora_magnitude_vector(?:\.[A-Za-z0-9_\-]+)?(?:\.weight)?", "dora_scale"),
        (r"\.(hada_w1_a|hada_w1_b|hada_w2_a|hada_w2_b|hada_t1|hada_t2)", "<group>"),
        (r"\.(lokr_w1_a|lokr_w1_b|lokr_w2_a|lokr_w2_b|lokr_w1|lokr_w2|lokr_t2)", "<group>"),
        (r"\.(diff_b|diff|w_norm|b_norm|dora_scale|alpha)", "<group>"),
    )
)

# The branch prefixes loramerge writes (an architecture table may override them, e.g. SD's "unet").
KOHYA_PREFIX: dict[Branch, str] = {
    Branch.DENOISER: "lora_unet",
    Branch.TE1: "lora_te1",
    Branch.TE2: "lora_te2",
    Branch.TE3: "lora_te3",
}
DIFFUSERS_PREFIX: dict[Branch, str] = {
    Branch.DENOISER: "transformer",
    Branch.TE1: "text_encoder",
    Branch.TE2: "text_encoder_2",
    Branch.TE3: "text_encoder_3",
}


def _longest_first(prefixes):
    return tuple(sorted(prefixes, key=lambda p: -len(p[0])))


# Underscored (kohya-family) stem prefixes read -> branch: the written ones plus the other trainers'.
_KOHYA_PREFIXES: tuple[tuple[str, Branch], ...] = _longest_first(
    [(p + "_", b) for b, p in KOHYA_PREFIX.items()]
    + [("lora_transformer_", Branch.DENOISER), ("lora_te_", Branch.TE1), ("lycoris_", Branch.DENOISER)]
)

# Dotted stem prefixes read -> (family, branch): the written diffusers ones, "unet." and ComfyUI's.
_DOTTED_PREFIXES: tuple[tuple[str, str, Branch], ...] = _longest_first(
    [(p + ".", "diffusers", b) for b, p in DIFFUSERS_PREFIX.items()]
    + [
        ("unet.", "diffusers", Branch.DENOISER),
        ("model.diffusion_model.", "comfy", Branch.DENOISER),
        ("diffusion_model.", "comfy", Branch.DENOISER),
    ]
)


@dataclass(frozen=True)
class ParsedKey:
    key: str
    stem: str  # the whole module reference as written, e.g. "lora_unet_input_blocks_4_1_proj_in"
    role: str  # "down", "up", "alpha", "hada_w1_a", ...


@dataclass(frozen=True)
class ParsedStem:
    family: str  # "kohya", "lycoris", "diffusers", "comfy", "peft"
    prefix: str  # the prefix as written ("lora_te2_", "text_encoder_2.", ...)
    stem: Stem


def parse_key(key: str) -> ParsedKey | None:
    """Split a tensor key into module stem and role; None when no convention matches."""
    for pattern, role in _SUFFIXES:
        match = pattern.search(key)
        if match and match.start() > 0:
            return ParsedKey(key, key[: match.start()], match.group(1) if role == "<group>" else role)
    return None


def parse_stem(stem: str) -> ParsedStem | None:
    """Turn a module stem into branch + path; None when its prefix is unknown."""
    for prefix, branch in _KOHYA_PREFIXES:
        if stem.startswith(prefix) and len(stem) > len(prefix):
            family = "lycoris" if prefix == "lycoris_" else "kohya"
            return ParsedStem(family, prefix, Stem(branch, stem[len(prefix) :], dotted=False))
    family_override = None
    rest = stem
    if rest.startswith("base_model.model."):
        rest = rest[len("base_model.model.") :]
        family_override = "peft"
        if not any(rest.startswith(p) for p, _, _ in _DOTTED_PREFIXES):
            branch = Branch.TE1 if rest.startswith("text_model.") else Branch.DENOISER
            return ParsedStem("peft", "base_model.model.", Stem(branch, _legacy(rest), dotted=True))
    for prefix, family, branch in _DOTTED_PREFIXES:
        if rest.startswith(prefix) and len(rest) > len(prefix):
            return ParsedStem(
                family_override or family, prefix, Stem(branch, _legacy(rest[len(prefix) :]), dotted=True)
            )
    return None


_LEGACY = (
    (re.compile(r"\.processor\.(to_q|to_k|to_v)$"), r".\1"),
    (re.compile(r"\.processor\.to_out$"), r".to_out.0"),
)


def _legacy(path: str) -> str:
    """Old diffusers attention-processor spellings -> module paths."""
    for pattern, repl in _LEGACY:
        path = pattern.sub(repl, path)
    return path
