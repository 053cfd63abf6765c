"""Small helpers shared by the strategy, sparsifier and refinement modules (internal)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def check_inputs(
    deltas: Sequence[torch.Tensor],
    weights: Sequence[float],
    generator: torch.Generator | None,
    what: str,
    min_inputs: int = 1,
    max_inputs: int | None = None,
) -> None:
    """Raise ValueError/TypeError unless the deltas and weights form one valid merge group."""
    n = len(deltas)
    if n != len(weights):
        raise ValueError(f"{what}: got {n} deltas but {len(weights)} weights; give one weight per delta")
    if n < min_inputs or (max_inputs is not None and n > max_inputs):
        wanted = f"exactly {min_inputs}" if max_inputs == min_inputs else f"at least {min_inputs}"
        if max_inputs is not None and max_inputs != min_inputs:
            wanted = f"{min_inputs} to {max_inputs}"
        raise ValueError(f"{what}: takes {wanted} deltas, got {n}")
    first = deltas[0]
    for i, d in enumerate(deltas):
        if not isinstance(d, torch.Tensor):
            raise TypeError(f"{what}: delta {i} is a {type(d).__name__}, not a torch.Tensor")
        if d.shape != first.shape or d.dtype != first.dtype or d.device != first.device:
            raise ValueError(
                f"{what}: delta {i} is {tuple(d.shape)} {d.dtype} on {d.device}, delta 0 is "
                f"{tuple(first.shape)} {first.dtype} on {first.device}; all deltas of a group must match"
            )
        if not d.is_floating_point():
            raise TypeError(f"{what}: delta {i} has dtype {d.dtype}; deltas must be floating point")
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(
            f"{what}: pass a CPU torch.Generator (random numbers are drawn on the CPU and moved, "
            "so that results do not depend on the device)"
        )


def rows(t: torch.Tensor) -> torch.Tensor:
    """2-D view with dim 0 (output rows) kept and the rest flattened; 0-/1-D tensors are one row."""
    if t.dim() <= 1:
        return t.reshape(1, -1)
    return t.reshape(t.shape[0], -1)


def contributions(deltas: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Stack of ``w_i · ΔW_i`` along a new dim 0 (a new tensor; the inputs are not touched)."""
    return torch.stack([d * float(w) for d, w in zip(deltas, weights)])


def frob(t: torch.Tensor) -> float:
    """Frobenius norm as a Python float, accumulated in float64."""
    return float(torch.linalg.vector_norm(t.double())) if t.numel() else 0.0


def norm_target(deltas: Sequence[torch.Tensor], weights: Sequence[float]) -> float:
    """``Σ|w_i|·‖ΔW_i‖ / Σ|w_i|``: the norm SLERP and consensus rescale their result to (0 if Σ|w_i| = 0)."""
    total = sum(abs(w) for w in weights)
    if total == 0.0:
        return 0.0
    return sum(abs(w) * frob(d) for d, w in zip(deltas, weights)) / total


def rescale_to(t: torch.Tensor, target: float) -> torch.Tensor:
    """``t`` scaled to Frobenius norm ``target``; zero stays zero."""
    n = frob(t)
    if n == 0.0 or target == 0.0:
        return torch.zeros_like(t)
    return t * (target / n)


def uniform(shape: torch.Size, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """U[0,1) numbers drawn on the CPU generator and moved to ``like``'s device and dtype.

    Drawing on the CPU makes every random choice identical on CPU and CUDA for one seed.
    """
    r = torch.rand(shape, generator=generator, dtype=torch.float32, device="cpu")
    return r.to(device=like.device, dtype=like.dtype)


def normal(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard normal numbers drawn on the CPU generator, moved to ``like``'s device and dtype."""
    r = torch.randn(shape, generator=generator, dtype=torch.float32, device="cpu")
    return r.to(device=like.device, dtype=like.dtype)


def check_fraction(name: str, value: float, *, low: float = 0.0, high: float = 1.0) -> None:
    if not (low <= value <= high):
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
