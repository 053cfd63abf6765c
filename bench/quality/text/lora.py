"""Task LoRAs on the text encoder, trained with PEFT (rank 8 on every attention and MLP Linear),
saved as a diffusion pipeline saves a text-encoder LoRA: the PEFT state dict under the
``text_encoder.`` prefix (diffusers' ``save_lora_weights(text_encoder_lora_layers=...)``), so that
loramerge sees the groups as a text encoder's, as it would in a real SD/SDXL/FLUX LoRA; applying a file (an input or a loramerge merge) goes
through loramerge's reader, as in the image domain (`bench.quality.lora.deltas_of_file`).

Training: the base and the class embeddings (the frozen heads) stay fixed; the loss is the cross
entropy of the cosines to the class embeddings over a temperature. Every random number (LoRA A
init, batches) comes from one seeded `torch.Generator`; dropout is off.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save_file

from ..determinism import generator
from .data import CLASSES, examples
from .model import embed, embed_texts, encode

TARGETS = ["query", "key", "value", "dense"]   # attention q/k/v/out and both MLP Linears, every layer
TEMPERATURE = 0.05


def heads(base: nn.Module) -> dict[str, torch.Tensor]:
    """Each task's frozen head: its class descriptions embedded by the base model."""
    return {t: embed_texts(base, list(c)) for t, c in CLASSES.items()}


def train_lora(base: nn.Module, task: str, *, seed: int, steps: int, rank: int = 8, lr: float = 2e-3,
               batch: int = 32, n_train: int = 1024) -> dict[str, torch.Tensor]:
    """A PEFT LoRA for `task`; returns the adapter's tensors (PEFT key names)."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    g = generator(seed)
    head = heads(base)[task]
    data = examples(task, "train", n_train, seed)
    cfg = LoraConfig(r=rank, lora_alpha=rank, target_modules=TARGETS, lora_dropout=0.0, bias="none")
    model = get_peft_model(copy.deepcopy(base), cfg)
    for name, p in model.named_parameters():
        if name.endswith("lora_A.default.weight"):  # PEFT's init draws from the global RNG: redo it from g
            with torch.no_grad():
                nn.init.kaiming_uniform_(p, a=math.sqrt(5), generator=g)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    labels = torch.tensor([e.label for e in data])
    for k in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * (0.5 * (1 + math.cos(math.pi * k / steps)) * 0.9 + 0.1)
        idx = torch.randint(0, len(data), (batch,), generator=g)
        e = embed(model, encode([data[int(i)].text for i in idx]))
        loss = nn.functional.cross_entropy(e @ head.T / TEMPERATURE, labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    state = get_peft_model_state_dict(model, save_embedding_layers=False)
    return {k: v.detach().clone().contiguous() for k, v in sorted(state.items())}


PEFT_PREFIX, PIPELINE_PREFIX = "base_model.model.", "text_encoder."


def save_lora(path: str | Path, tensors: dict[str, torch.Tensor], task: str) -> Path:
    named = {PIPELINE_PREFIX + k.removeprefix(PEFT_PREFIX): v for k, v in tensors.items()}
    save_file(named, str(path), metadata={"bench": "loramerge quality benchmark (text)", "task": task})
    return Path(path)


def module_of(stem: str, modules: dict[str, str]) -> str:
    """The encoder module a reader stem names, whatever dialect wrote it (PEFT dots or kohya underscores)."""
    flat = stem.replace(".", "_")
    hits = [m for key, m in modules.items() if flat == key or flat.endswith("_" + key)]
    if len(hits) != 1:
        raise KeyError(f"merged file names a module the encoder does not have (or several): {stem}")
    return hits[0]


def apply_deltas(base: nn.Module, deltas: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of `base` with each ΔW added to its Linear's weight."""
    model = copy.deepcopy(base)
    modules = {n.replace(".", "_"): n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    with torch.no_grad():
        for stem, d in deltas.items():
            w = model.get_submodule(module_of(stem, modules)).weight
            w.add_(d.reshape(w.shape).to(w.dtype))
    return model.eval()
