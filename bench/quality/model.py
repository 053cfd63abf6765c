"""A small class-conditional DDPM on 16x16 digits: an MLP denoiser (eps prediction, sinusoidal
time embedding + class embedding, residual blocks), a linear-beta schedule and ancestral sampling.

Every Linear layer of the denoiser is a LoRA target; the module names (``blocks.0.fc1`` ...) become
kohya names (``lora_unet_blocks_0_fc1``) in the LoRA files.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import SIZE
from .determinism import build, generator


@dataclass(frozen=True)
class ModelConfig:
    hidden: int = 256
    blocks: int = 3
    emb: int = 128
    classes: int = 10
    steps: int = 200           # diffusion steps T
    beta_start: float = 5e-4   # the DDPM schedule 1e-4..0.02 for T=1000, rescaled to T=200
    beta_end: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)


class Block(nn.Module):
    def __init__(self, hidden: int, emb: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.cond = nn.Linear(emb, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(F.silu(self.fc1(self.norm(h)) + self.cond(e)))


class Denoiser(nn.Module):
    """eps(x_t, t, y): x_t flattened (256), t sinusoidal, y a class embedding."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.time_mlp = nn.Sequential(nn.Linear(cfg.emb, cfg.emb), nn.SiLU(), nn.Linear(cfg.emb, cfg.emb))
        self.class_emb = nn.Embedding(cfg.classes, cfg.emb)
        self.in_proj = nn.Linear(SIZE * SIZE, cfg.hidden)
        self.blocks = nn.ModuleList(Block(cfg.hidden, cfg.emb) for _ in range(cfg.blocks))
        self.out_norm = nn.LayerNorm(cfg.hidden)
        self.out_proj = nn.Linear(cfg.hidden, SIZE * SIZE)

    def time_features(self, t: torch.Tensor) -> torch.Tensor:
        half = self.cfg.emb // 2
        freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float32) / half)
        a = t.float()[:, None] * freqs[None]
        return torch.cat([a.sin(), a.cos()], dim=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        e = F.silu(self.time_mlp(self.time_features(t)) + self.class_emb(y))
        h = self.in_proj(x.reshape(x.shape[0], -1))
        for b in self.blocks:
            h = b(h, e)
        return self.out_proj(F.silu(self.out_norm(h))).reshape(x.shape)


def load_denoiser(cfg: ModelConfig, state: dict[str, torch.Tensor]) -> Denoiser:
    """A denoiser holding `state` (built without drawing random initial weights)."""
    return build(lambda: Denoiser(cfg), state=state).eval()


def linear_names(model: nn.Module) -> list[str]:
    """The LoRA targets: every nn.Linear of the denoiser, by module path."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]


class Schedule:
    def __init__(self, cfg: ModelConfig):
        self.T = cfg.steps
        self.betas = torch.linspace(cfg.beta_start, cfg.beta_end, cfg.steps, dtype=torch.float64)
        self.alphas = 1 - self.betas
        self.abar = torch.cumprod(self.alphas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.abar[:-1]])
        self.post_var = self.betas * (1 - abar_prev) / (1 - self.abar)
        self.coef_x0 = self.betas * abar_prev.sqrt() / (1 - self.abar)
        self.coef_xt = (1 - abar_prev) * self.alphas.sqrt() / (1 - self.abar)

    def noisy(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        a = self.abar[t].float().view(-1, 1, 1)
        return a.sqrt() * x0 + (1 - a).sqrt() * eps


def diffusion_loss(model: nn.Module, sched: Schedule, x0: torch.Tensor, y: torch.Tensor,
                   g: torch.Generator) -> torch.Tensor:
    t = torch.randint(0, sched.T, (x0.shape[0],), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    return F.mse_loss(model(sched.noisy(x0, t, eps), t, y), eps)


def train_base(x: torch.Tensor, y: torch.Tensor, *, seed: int, steps: int, cfg: ModelConfig = ModelConfig(),
               batch: int = 256, lr: float = 2e-3, ema: float = 0.995) -> Denoiser:
    """Train the base denoiser from scratch on real digits; returns the EMA weights. Every random
    number (initial weights, batches, timesteps, noise) comes from one generator seeded with `seed`."""
    g = generator(seed)
    model = build(lambda: Denoiser(cfg), generator=g)
    avg = copy.deepcopy(model).requires_grad_(False)
    sched = Schedule(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warm = max(1, steps // 20)
    lr_at = lambda k: lr * min(1.0, (k + 1) / warm) * (0.5 * (1 + math.cos(math.pi * k / steps)) * 0.9 + 0.1)
    for k in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(k)
        idx = torch.randint(0, x.shape[0], (batch,), generator=g)
        loss = diffusion_loss(model, sched, x[idx], y[idx], g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            d = min(ema, (1 + k) / (10 + k))
            for pa, pm in zip(avg.parameters(), model.parameters()):
                pa.mul_(d).add_(pm.detach(), alpha=1 - d)
    return avg.eval()


@torch.inference_mode()
def sample(model: nn.Module, labels: torch.Tensor, noise_seed: int, cfg: ModelConfig = ModelConfig()) -> torch.Tensor:
    """Ancestral DDPM sampling (x0 clipped to [-1, 1]) from a fixed noise seed: the same seed
    gives every method the same starting noise and the same per-step noise."""
    sched = Schedule(cfg)
    g = torch.Generator().manual_seed(noise_seed)
    n = labels.shape[0]
    x = torch.randn((n, SIZE, SIZE), generator=g)
    for t in reversed(range(sched.T)):
        tt = torch.full((n,), t, dtype=torch.long)
        eps = model(x, tt, labels)
        a = sched.abar[t].item()
        x0 = ((x - math.sqrt(1 - a) * eps) / math.sqrt(a)).clamp(-1, 1)
        mean = sched.coef_x0[t].item() * x0 + sched.coef_xt[t].item() * x
        z = torch.randn((n, SIZE, SIZE), generator=g)
        x = mean + (math.sqrt(sched.post_var[t].item()) * z if t > 0 else 0.0)
    return x.clamp(-1, 1)
