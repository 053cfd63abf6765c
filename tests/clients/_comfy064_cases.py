"""What the ComfyUI 0.3.64 subprocess is given: the format-advice cells (converted fixtures), the
merged outputs (LoRA, LoHa, LoKr and DoRA inputs merged to LoRA, in every output format and in
float32/float16/bfloat16), and the node-pack check. Built in the test process; each file's expected
ΔW is what loramerge itself reads back from it, per fixture truth key, after checking that this
equals the merge result within the output dtype's rounding.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from loramerge.formats.advice import ARCHITECTURES, FORMATS

FIXTURE_OF = {
    "sd15": "sd15_peft_diffusers",
    "sdxl": "sdxl_peft_diffusers",
    "flux": "flux_peft_diffusers",
    "wan": "wan_peft_diffusers",
    "qwen_image": "qwen_image_peft_diffusers",
    "hunyuan_video": "hunyuan_video_peft_diffusers",
    "ltx": "ltx_peft_diffusers",
    "zimage": "zimage_peft_diffusers",
}
# Relative error of a written group's ΔW against the merge result: float32 factors are exact, half
# precision rounds each factor once (unit roundoff 2^-11, bfloat16 2^-8; a product of two rounded
# factors stays within about twice that in norm).
DTYPE_RTOL = {"float32": 1e-6, "float16": 2e-3, "bfloat16": 1.6e-2}
NODE_STACK = (("sdxl_peft_diffusers", 0.8, 0.6), ("sdxl_lycoris_locon", 0.5, 0.5))
NODE_OUTPUT_STRENGTHS = (0.7, 1.3)


@dataclass(frozen=True)
class MergeCase:
    arch: str
    what: str  # the inputs' kinds, for the test id
    inputs: tuple[tuple[str, float], ...]  # (fixture, strength)
    mode: str
    fmt: str
    dtype: str
    base: str | None = None  # base-model file for DoRA inputs (a key of base_files)

    @property
    def id(self) -> str:
        return f"{self.arch}-{self.fmt}-{self.what}-{self.mode}-{self.dtype}"


def _cases():
    for fmt in FORMATS:
        yield MergeCase("sd15", "lora", (("sd15_peft_diffusers", 0.7),), "weighted_sum", fmt, "float16")
        yield MergeCase(
            "sdxl",
            "lora+locon",
            (("sdxl_peft_diffusers", 0.8), ("sdxl_lycoris_locon", 0.5)),
            "weighted_sum",
            fmt,
            "float32",
        )
        yield MergeCase(
            "flux",
            "lora+lokr",
            (("flux_peft_diffusers", 0.8), ("lycoris_wrapper", 0.5)),
            "weighted_sum",
            fmt,
            "float32",
        )
        yield MergeCase("wan", "lora", (("wan_peft_diffusers", 0.7),), "weighted_sum", fmt, "bfloat16")
        # ComfyUI 0.3.64 has no Z-Image model (see zimage_probe): nothing to load a merge into.
        yield MergeCase("qwen_image", "lora", (("qwen_image_peft_diffusers", 0.7),), "weighted_sum", fmt, "float32")
        yield MergeCase("hunyuan_video", "lora", (("hunyuan_video_peft_diffusers", 0.7),), "weighted_sum", fmt,
                        "bfloat16")
        yield MergeCase("ltx", "lora", (("ltx_peft_diffusers", 0.7),), "weighted_sum", fmt, "float16")
    yield MergeCase(
        "sdxl",
        "loha+lokr",
        (("sdxl_lycoris_loha", 0.8), ("sdxl_lycoris_lokr", 0.5)),
        "weighted_sum",
        "kohya",
        "float16",
    )
    yield MergeCase(
        "sdxl",
        "dora+locon",
        (("sdxl_lycoris_dora", 0.8), ("sdxl_lycoris_locon", 0.5)),
        "weighted_sum",
        "comfy",
        "bfloat16",
        base="sdxl_pipeline",
    )
    yield MergeCase(
        "flux",
        "dora+lora",
        (("flux_peft_dora_diffusers", 0.8), ("flux_peft_diffusers", 0.5)),
        "ties",
        "kohya",
        "bfloat16",
        base="flux_transformer",
    )


MERGE_CASES: tuple[MergeCase, ...] = tuple(_cases())


def base_files(base_models: dict, folder: Path) -> dict[str, Path]:
    """The tiny base models, plus SDXL's UNet and both text encoders in one file with pipeline prefixes."""
    out = dict(base_models)
    merged = {}
    for prefix, name in (("unet", "sdxl_unet"), ("text_encoder", "clip_l"), ("text_encoder_2", "clip_g")):
        merged.update({f"{prefix}.{k}": v for k, v in load_file(base_models[name]).items()})
    out["sdxl_pipeline"] = folder / "sdxl_pipeline.safetensors"
    save_file(merged, str(out["sdxl_pipeline"]))
    return out


def written_delta(path: Path, arch: str) -> dict[str, torch.Tensor]:
    """ΔW per group key, as loramerge reads the written file back."""
    from loramerge import architectures as A
    from loramerge.formats.align import align, load_group
    from loramerge.formats.reader import AdapterFile

    table = A.get_table(arch)
    written = align(AdapterFile(path), table, A.placer(arch), strict=True)
    return {key: load_group(written, table, key).dense().float() for key in written.groups}


def to_truth_keys(delta: dict[str, torch.Tensor], truth_keys, arch: str) -> dict[str, torch.Tensor]:
    """Group-keyed ΔW -> fixture-truth-keyed ΔW (every group must have a truth key)."""
    from loramerge import architectures as A
    from tests.formats.test_fixture_truth import canonical

    table = A.get_table(arch)
    out, used = {}, set()
    for tk in truth_keys:
        gk = canonical(table, tk)
        if gk in delta:
            out[tk] = delta[gk]
            used.add(gk)
    assert used == set(delta), f"written groups without a fixture truth key: {sorted(set(delta) - used)[:5]}"
    return out


def build_merge(case: MergeCase, real_fixtures, bases: dict, work: Path, memo: dict | None = None) -> dict:
    """Merge and save `case`; the worker spec (file, expected ΔW) and the library-side facts.
    `memo`: merges by (inputs, mode, base), so that one merge is written in every format once."""
    from loramerge.api import merge

    inputs = [f"{real_fixtures[name].path}:{strength}" for name, strength in case.inputs]
    base = str(bases[case.base]) if case.base else None
    memo = {} if memo is None else memo
    key = (tuple(inputs), case.mode, base)
    if key not in memo:
        memo[key] = merge(inputs, mode=case.mode, auto_strength=False, seed=0, base=base)
    result = memo[key]
    path = work / f"merge.{case.id}.safetensors"
    written = result.save(path, format=case.fmt, dtype=case.dtype)
    back = written_delta(path, case.arch)
    worst = 0.0
    for g in result.groups:
        want = g.patch.dense().float()
        got = back[g.key].reshape(want.shape)
        worst = max(worst, float((got - want).norm() / want.norm().clamp_min(1e-30)))
    truth_keys = set().union(*(real_fixtures[name].truth for name, _ in case.inputs))
    truth = work / f"merge.{case.id}.truth.safetensors"
    save_file({k: v.contiguous() for k, v in to_truth_keys(back, truth_keys, case.arch).items()}, str(truth))
    facts = {
        "dtype": written.dtype,
        "format": written.format,
        "groups": len(result.groups),
        "written_groups": len(back),
        "worst_vs_merge": worst,
        "strategies": result.report.strategy_counts,
    }
    return {
        "id": case.id,
        "arch": case.arch,
        "format": case.fmt,
        "lora": str(path),
        "truth": str(truth),
        "facts": facts,
    }


def make_job(work: Path, real_fixtures, converted, base_models) -> dict:
    """The whole job of the session's ComfyUI 0.3.64 subprocess."""
    cells = []
    for arch in ARCHITECTURES:
        fx = real_fixtures[FIXTURE_OF[arch]]
        truth = work / f"{fx.name}.truth.safetensors"
        save_file({k: v.contiguous() for k, v in fx.truth.items()}, str(truth))
        cells += [
            {"arch": arch, "format": fmt, "lora": str(converted(fx.name, fmt)), "truth": str(truth)} for fmt in FORMATS
        ]
    bases = base_files(base_models, work)
    memo: dict = {}
    merges = [build_merge(case, real_fixtures, bases, work, memo) for case in MERGE_CASES]
    loras = work / "loras"
    loras.mkdir()
    for name, _, _ in NODE_STACK:
        shutil.copy(real_fixtures[name].path, loras / f"{name}.safetensors")
    nodes = {
        "loras": str(loras),
        "work": str(work / "nodes"),
        "stack": [n for n, _, _ in NODE_STACK],
        "strengths": [[m, c] for _, m, c in NODE_STACK],
        "output_strengths": list(NODE_OUTPUT_STRENGTHS),
    }
    return {"cells": cells, "merges": merges, "nodes": nodes, "probes": ["zimage"]}
