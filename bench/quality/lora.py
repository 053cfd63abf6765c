"""LoRAs on the denoiser: training with the base frozen, kohya-style files, and applying a file.

A LoRA file holds, for every Linear module ``m`` of the denoiser, ``lora_unet_<m with _>.lora_down.weight``
(``[rank, in]``), ``.lora_up.weight`` (``[out, rank]``) and ``.alpha`` (a scalar, ≠ rank), so loramerge
reads it under architecture ``unknown``. Applying a file — an input LoRA or a merge written by
loramerge — goes through loramerge's own reader (`AdapterFile(path).patches(entry)["weight"].dense()`
is ΔW) and adds ΔW to the base weights: the same code for every method, so methods differ only in the merge.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save_file

from .determinism import generator
from .model import Denoiser, Schedule, diffusion_loss, linear_names


def kohya_name(module: str) -> str:
    return "lora_unet_" + module.replace(".", "_")


class LoRALinear(nn.Module):
    """``y = base(x) + (alpha/rank)·up(down(x))``, base frozen; kohya init (down Kaiming from
    `generator`, up zero)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator: torch.Generator):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.rank, self.alpha = rank, alpha
        self.down = nn.Parameter(torch.empty(rank, base.in_features))
        self.up = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5), generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.down.T @ self.up.T) * (self.alpha / self.rank)


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def train_lora(base: Denoiser, x: torch.Tensor, y: torch.Tensor, *, seed: int, steps: int, rank: int = 8,
               alpha: float = 4.0, lr: float = 2e-3, batch: int = 128,
               sampler=None) -> dict[str, torch.Tensor]:
    """Train a LoRA on (x, y) with the base frozen; returns the kohya tensors of the file.

    `sampler(g, batch)` may pick batch indices (default: uniform over the data). Every random
    number (initial down weights, batches, timesteps, noise) comes from one generator seeded with `seed`."""
    g = generator(seed)
    model = copy.deepcopy(base).requires_grad_(False)
    names = linear_names(model)
    adapters = {}
    for name in names:
        adapters[name] = LoRALinear(model.get_submodule(name), rank, alpha, g)
        _set(model, name, adapters[name])
    params = [p for a in adapters.values() for p in (a.down, a.up)]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = Schedule(base.cfg)
    model.train()
    for k in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * (0.5 * (1 + math.cos(math.pi * k / steps)) * 0.9 + 0.1)
        idx = sampler(g, batch) if sampler is not None else torch.randint(0, x.shape[0], (batch,), generator=g)
        loss = diffusion_loss(model, sched, x[idx], y[idx], g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    tensors = {}
    for name, a in adapters.items():
        stem = kohya_name(name)
        tensors[f"{stem}.lora_down.weight"] = a.down.detach().clone().contiguous()
        tensors[f"{stem}.lora_up.weight"] = a.up.detach().clone().contiguous()
        tensors[f"{stem}.alpha"] = torch.tensor(float(alpha))
    return tensors


def save_lora(path: str | Path, tensors: dict[str, torch.Tensor], name: str) -> Path:
    meta = {"ss_network_module": "networks.lora", "ss_output_name": name, "bench": "loramerge quality benchmark"}
    save_file(tensors, str(path), metadata=meta)
    return Path(path)


def deltas_of_file(path: str | Path) -> dict[str, torch.Tensor]:
    """ΔW per kohya stem, read with loramerge's reader."""
    from loramerge.formats.reader import AdapterFile

    f = AdapterFile(path)
    return {e.stem: f.patches(e)["weight"].dense() for e in f.entries.values()}


def apply_deltas(base: Denoiser, deltas: dict[str, torch.Tensor], strength: float = 1.0) -> Denoiser:
    """A copy of `base` with ΔW added to each Linear weight (stems that are not modules are an error)."""
    model = copy.deepcopy(base)
    by_stem = {kohya_name(n): n for n in linear_names(model)}
    with torch.no_grad():
        for stem, d in deltas.items():
            if stem not in by_stem:
                raise KeyError(f"merged file names a module the denoiser does not have: {stem}")
            w = model.get_submodule(by_stem[stem]).weight
            w.add_(d.reshape(w.shape).to(w.dtype), alpha=strength)
    return model.eval()
