"""ΔW of each adapter kind, computed from its stored tensors (FORMATS.md, 'Adapter algebras').

Input: the module's tensors by *role* (the dialect layer has already unified spellings:
``down``/``up``/``mid`` for LoRA, ``hada_*``, ``lokr_*``, ``diff``, ``diff_b``, ``w_norm``,
``b_norm``, ``dora_scale``), and the alpha that applies. Output: one patch per parameter
(``weight`` and, for full/norm adapters, ``bias``). Pure functions, float32, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..patches import AdapterKind, Dense, LowRank, Patch

LORA_ROLES = {"down", "up", "mid"}
LOHA_ROLES = {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"}
LOKR_ROLES = {"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"}
FULL_ROLES = {"diff", "diff_b"}
NORM_ROLES = {"w_norm", "b_norm"}
META_ROLES = {"alpha", "dora_scale"}
ALL_ROLES = LORA_ROLES | LOHA_ROLES | LOKR_ROLES | FULL_ROLES | NORM_ROLES | META_ROLES


class AlgebraError(ValueError):
    """The tensors of one module do not form a valid adapter (the caller adds file and key)."""


def kind_of(roles: set[str]) -> AdapterKind:
    """Which adapter kind a set of roles describes; raises when it is incomplete or mixed."""
    content = roles - META_ROLES
    for kind, family, required in (
        (AdapterKind.LORA, LORA_ROLES, {"down", "up"}),
        (AdapterKind.LOHA, LOHA_ROLES, {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"}),
        (AdapterKind.LOKR, LOKR_ROLES, set()),
        (AdapterKind.FULL, FULL_ROLES, set()),
        (AdapterKind.NORM, NORM_ROLES, set()),
    ):
        if content and content <= family:
            missing = required - content
            if missing:
                raise AlgebraError(f"{kind.value} adapter is missing {sorted(missing)}")
            return kind
    raise AlgebraError(f"tensors {sorted(content)} do not form one adapter kind")


def rank_of(kind: AdapterKind, t: Mapping[str, torch.Tensor]) -> int | None:
    """The rank that alpha divides by (None: the adapter has no rank, scale is 1)."""
    if kind is AdapterKind.LORA:
        return int(t["down"].shape[0])
    if kind is AdapterKind.LOHA:
        return int(t["hada_w1_b"].shape[0])
    if kind is AdapterKind.LOKR:
        for b in ("lokr_w1_b", "lokr_w2_b"):
            if b in t:
                return int(t[b].shape[0])
    return None


def compute(kind: AdapterKind, t: Mapping[str, torch.Tensor], alpha: float | None) -> dict[str, Patch]:
    """Patches (``weight`` and maybe ``bias``) of one adapted module, float32."""
    t = {k: v.float() for k, v in t.items()}
    rank = rank_of(kind, t)
    scale = 1.0 if alpha is None or rank is None else float(alpha) / rank
    if kind is AdapterKind.LORA:
        return {"weight": _lora(t, scale)}
    if kind is AdapterKind.LOHA:
        return {"weight": Dense(_loha(t) * scale)}
    if kind is AdapterKind.LOKR:
        return {"weight": Dense(_lokr(t) * scale)}
    patches: dict[str, Patch] = {}
    weight_role, bias_role = ("diff", "diff_b") if kind is AdapterKind.FULL else ("w_norm", "b_norm")
    if weight_role in t:
        patches["weight"] = Dense(t[weight_role])
    if bias_role in t:
        patches["bias"] = Dense(t[bias_role])
    return patches


def _lora(t: Mapping[str, torch.Tensor], scale: float) -> LowRank:
    down, up = t["down"], t["up"]
    rank = down.shape[0]
    if up.dim() < 2 or up.shape[1] != rank or (up.dim() == 4 and up.shape[2:] != (1, 1)):
        raise AlgebraError(f"up {tuple(up.shape)} does not fit down {tuple(down.shape)} (rank {rank})")
    if "mid" in t:
        mid = t["mid"]
        if mid.dim() != 4 or mid.shape[:2] != (rank, rank) or down.dim() != 4 or down.shape[2:] != (1, 1):
            raise AlgebraError(f"Tucker mid {tuple(mid.shape)} does not fit down {tuple(down.shape)}")
        # W[o,i,h,w] = Σ_ab up[o,a] mid[a,b,h,w] down[b,i]: fold mid into down (exact, rank r).
        down = torch.einsum("abhw,bi->aihw", mid, down[:, :, 0, 0])
    out = up.shape[0]
    shape = (out, *down.shape[1:]) if down.dim() > 2 else (out, down.shape[1])
    return LowRank(up.reshape(out, rank), down.reshape(rank, -1), scale, tuple(int(s) for s in shape))


def _loha(t: Mapping[str, torch.Tensor]) -> torch.Tensor:
    if "hada_t1" in t:
        w1 = torch.einsum("ij...,jr,ip->pr...", t["hada_t1"], t["hada_w1_b"], t["hada_w1_a"])
        w2 = torch.einsum("ij...,jr,ip->pr...", t["hada_t2"], t["hada_w2_b"], t["hada_w2_a"])
    else:
        w1 = t["hada_w1_a"] @ t["hada_w1_b"]
        w2 = t["hada_w2_a"] @ t["hada_w2_b"]
    if w1.shape != w2.shape:
        raise AlgebraError(f"LoHa halves differ in shape: {tuple(w1.shape)} vs {tuple(w2.shape)}")
    return w1 * w2


def _lokr(t: Mapping[str, torch.Tensor]) -> torch.Tensor:
    if "lokr_w1" in t:
        w1 = t["lokr_w1"]
    elif {"lokr_w1_a", "lokr_w1_b"} <= t.keys():
        w1 = t["lokr_w1_a"] @ t["lokr_w1_b"]
    else:
        raise AlgebraError("LoKr needs lokr_w1 or lokr_w1_a + lokr_w1_b")
    if "lokr_w2" in t:
        w2 = t["lokr_w2"]
    elif {"lokr_w2_a", "lokr_w2_b"} <= t.keys():
        a, b = t["lokr_w2_a"], t["lokr_w2_b"]
        if "lokr_t2" in t:
            w2 = torch.einsum("ij...,ip,jr->pr...", t["lokr_t2"], a, b)
        else:
            w2 = (a @ b.reshape(b.shape[0], -1)).reshape(a.shape[0], *b.shape[1:])
    else:
        raise AlgebraError("LoKr needs lokr_w2 or lokr_w2_a + lokr_w2_b")
    while w1.dim() < w2.dim():
        w1 = w1.unsqueeze(-1)
    return torch.kron(w1.contiguous(), w2.contiguous())


def apply_dora(delta: torch.Tensor, base: torch.Tensor, dora_scale: torch.Tensor) -> torch.Tensor:
    """ΔW of a weight-decomposed (DoRA) adapter: ``m · (W+ΔW)/‖W+ΔW‖ − W``.

    The norm axis follows the magnitude vector's shape: ``[out, 1, ...]`` normalises each output
    row, ``[1, in, ...]`` each input column (LyCORIS ``wd_on_out=False``).
    """
    base = base.float()
    merged = base + delta.reshape(base.shape)
    m = dora_scale.float()
    if m.dim() == 1:  # PEFT lora_magnitude_vector: one value per output row
        m = m.reshape(base.shape[0], *[1] * (base.dim() - 1))
    if m.shape[0] == base.shape[0] and (m.dim() == 1 or m.shape[1] == 1 or base.shape[1] == 1):
        norm = merged.reshape(merged.shape[0], -1).norm(dim=1).reshape(m.shape)
    else:
        norm = merged.transpose(0, 1).reshape(merged.shape[1], -1).norm(dim=1).reshape(m.shape)
    eps = torch.finfo(torch.float32).eps
    return merged * (m / (norm + eps)) - base
