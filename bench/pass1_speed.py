"""Benchmark: CPU time of pass-1 statistics (`group_stats`) over a synthetic SDXL-style stack.

The stack is built in memory, deterministically: 3 LoRAs of ranks 8, 12 and 16 over 55 groups
with SDXL shapes of widths 320–1280 (a conv ResNet block at 320, a 640 and a 1280 transformer
block, CLIP-L and CLIP-G text-encoder layers). The UNet groups hold all three LoRAs; the text-encoder
groups two of them (LoRAs 0 and 2), as when one LoRA was trained without its text encoder. The
LoRAs share part of their factors, so cosines and conflicts are not trivial.

Run from the repository root (any checkout whose `group_stats` has the public signature):

    PYTHONPATH=src .venv/bin/python bench/pass1_speed.py [--threads N] [--repeat K] [--sample-size S]

Prints the CPU seconds (`time.process_time()`, all threads) and wall seconds of `group_stats` over
all groups, and the CPU seconds per kind of group. A bench, not a test: one run is fine. To compare
with an older version, extract its sources (``git archive <commit> src | tar -x -C /tmp/old``) and
run with ``PYTHONPATH=/tmp/old/src``. On a shared or busy machine use ``--threads 1``: with several
threads, OpenMP's spin-waiting makes CPU times swing by 10x between runs.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections import defaultdict

import torch

from loramerge.analysis.stats import group_stats

try:  # the patch types' module, before and after its rename
    from loramerge.patches import LowRank
except ImportError:
    from loramerge.patches import LowRank

RANKS = (8, 12, 16)
TE_LORAS = (0, 2)
SEED = 2024


def sdxl_like_modules() -> list[tuple[str, str, tuple[int, ...]]]:
    """(kind, key, weight shape) of the 55 groups."""
    mods: list[tuple[str, str, tuple[int, ...]]] = []
    for layer in (0, 1):  # CLIP-L, width 768: 12 groups
        p = f"te1.text_model.encoder.layers.{layer}"
        mods += [("te", f"{p}.self_attn.{m}", (768, 768)) for m in ("q_proj", "k_proj", "v_proj", "out_proj")]
        mods += [("te", f"{p}.mlp.fc1", (3072, 768)), ("te", f"{p}.mlp.fc2", (768, 3072))]
    p = "te2.text_model.encoder.layers.0"  # CLIP-G, width 1280: 6 groups
    mods += [("te", f"{p}.self_attn.{m}", (1280, 1280)) for m in ("q_proj", "k_proj", "v_proj", "out_proj")]
    mods += [("te", f"{p}.mlp.fc1", (5120, 1280)), ("te", f"{p}.mlp.fc2", (1280, 5120))]
    p = "diffusion_model.input_blocks.1.0"  # ResNet block at 320: 3 groups
    mods += [("unet320", f"{p}.in_layers.2", (320, 320, 3, 3)), ("unet320", f"{p}.out_layers.3", (320, 320, 3, 3)),
             ("unet320", f"{p}.emb_layers.1", (320, 1280))]
    mods += _transformer("unet640", "diffusion_model.input_blocks.4.1", 640, depth=1)   # 12 groups
    mods += _transformer("unet1280", "diffusion_model.input_blocks.7.1", 1280, depth=2)  # 22 groups
    assert len(mods) == 55
    return mods


def _transformer(kind: str, block: str, d: int, depth: int) -> list[tuple[str, str, tuple[int, ...]]]:
    mods = [(kind, f"{block}.proj_in", (d, d)), (kind, f"{block}.proj_out", (d, d))]
    for t in range(depth):
        p = f"{block}.transformer_blocks.{t}"
        mods += [(kind, f"{p}.{m}", (d, d)) for m in ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                                                        "attn2.to_q", "attn2.to_out.0")]
        mods += [(kind, f"{p}.attn2.to_k", (d, 2048)), (kind, f"{p}.attn2.to_v", (d, 2048)),
                 (kind, f"{p}.ff.net.0.proj", (8 * d, d)), (kind, f"{p}.ff.net.2", (d, 4 * d))]
    return mods


def build_stack(seed: int = SEED) -> list[tuple[str, str, tuple[int, ...], list[LowRank]]]:
    """(kind, key, loras, patches) per group; half of each LoRA's rank is shared with LoRA 0's directions."""
    g = torch.Generator().manual_seed(seed)
    stack = []
    for kind, key, shape in sdxl_like_modules():
        out, inn = shape[0], int(torch.tensor(shape[1:]).prod())
        loras = TE_LORAS if kind == "te" else tuple(range(len(RANKS)))
        shared_up = torch.randn(out, max(RANKS) // 2, generator=g)
        shared_down = torch.randn(max(RANKS) // 2, inn, generator=g) / inn ** 0.5
        patches = []
        for i in loras:
            r, h = RANKS[i], RANKS[i] // 2
            up = torch.cat([shared_up[:, :h], torch.randn(out, r - h, generator=g)], 1) * 0.01
            down = torch.cat([shared_down[:h], torch.randn(r - h, inn, generator=g) / inn ** 0.5])
            patches.append(LowRank(up, down, 16.0 / r, shape))
        stack.append((kind, key, loras, patches))
    return stack


def generator_for(seed: int, key: str) -> torch.Generator:
    """Seeded from (seed, key) like the library's per-group generators."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def run(stack, sample_size: int) -> tuple[float, float, dict[str, float], list]:
    per_kind: dict[str, float] = defaultdict(float)
    results = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for kind, key, loras, patches in stack:
        t = time.process_time()
        results.append(group_stats(key, loras, patches, generator=generator_for(7, key), sample_size=sample_size))
        per_kind[kind] += time.process_time() - t
    return time.process_time() - cpu0, time.perf_counter() - wall0, dict(per_kind), results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--sample-size", type=int, default=100_000)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    stack = build_stack()
    run(stack[:2], args.sample_size)  # warm-up: first-call overheads of the kernels
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(stack)} groups, "
          f"sample_size {args.sample_size}")
    for k in range(args.repeat):
        cpu, wall, per_kind, results = run(stack, args.sample_size)
        kinds = ", ".join(f"{kind} {sec:.2f}" for kind, sec in per_kind.items())
        print(f"run {k}: pass-1 CPU {cpu:.2f} s, wall {wall:.2f} s  ({kinds})")
    conflict = sum(s.conflict for s in results) / len(results)
    excess = sum(s.excess_conflict for s in results) / len(results)
    print(f"mean conflict {conflict:.4f}, mean excess conflict {excess:.4f}, "
          f"mean cosine {sum(s.cosine for s in results) / len(results):.4f}")


if __name__ == "__main__":
    main()
