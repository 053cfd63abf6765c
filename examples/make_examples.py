"""Regenerate the example LoRAs shipped in this folder (deterministic; no download).

Three SDXL-named LoRAs in the formats people meet (kohya with .alpha tensors, and PEFT/diffusers
with `lora_adapter_metadata`), with the interplay merges are about: a *style* LoRA on every
attention layer, a *character* LoRA sharing part of the style's subspace in the middle block
(aligned there) and pushing against it in the up blocks (conflicting), and a *detail* LoRA that is
orthogonal to both. Widths are SDXL's divided by 20 so the files stay small; names are real.

    python examples/make_examples.py
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
BLOCKS = ([("input_blocks.4.1", 2, 32), ("input_blocks.5.1", 2, 32), ("input_blocks.7.1", 4, 64),
           ("input_blocks.8.1", 4, 64), ("middle_block.1", 4, 64)]
          + [(f"output_blocks.{i}.1", 4, 64) for i in (0, 1, 2)] + [(f"output_blocks.{i}.1", 2, 32) for i in (3, 4, 5)])
CONTEXT = 102


def modules() -> dict[str, tuple[int, int]]:
    out = {}
    for block, depth, d in BLOCKS:
        for t in range(depth):
            p = f"{block}.transformer_blocks.{t}"
            for m in ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_out.0"):
                out[f"{p}.{m}"] = (d, d)
            out[f"{p}.attn2.to_k"] = (d, CONTEXT)
            out[f"{p}.attn2.to_v"] = (d, CONTEXT)
    return out


def factors(name, shape, rank, seed):
    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    out, inn = shape
    return torch.randn(out, rank, generator=g) * 0.02, torch.randn(rank, inn, generator=g) / inn ** 0.5


def main() -> None:
    mods = modules()
    style, character, detail = {}, {}, {}
    for name, shape in mods.items():
        up, down = factors(name, shape, 8, 1)
        style[name] = (up, down, 4.0)
        if "attn2" in name or "middle_block" in name or "output_blocks.1." in name:
            cu, cd = factors(name, shape, 4, 2)
            if "middle_block" in name:        # shares the style's directions: aligned
                cu, cd = up[:, :4] * 0.8 + cu * 0.3, down[:4]
            elif "output_blocks.1." in name:  # pushes against the style: conflicting
                cu, cd = -up[:, :4] * 0.9 + cu * 0.2, down[:4]
            character[name] = (cu, cd, 2.0)
        if "attn1" in name:
            du, dd = factors(name, shape, 4, 3)
            detail[name] = (du, dd, 4.0)
    _kohya(HERE / "style_kohya.safetensors", style)
    _kohya(HERE / "detail_kohya.safetensors", detail)
    _peft(HERE / "character_peft.safetensors", character)


def _kohya(path, lora):
    t = {}
    for name, (up, down, alpha) in lora.items():
        stem = "lora_unet_" + name.replace(".", "_")
        t[f"{stem}.lora_up.weight"], t[f"{stem}.lora_down.weight"] = up.half(), down.half()
        t[f"{stem}.alpha"] = torch.tensor(alpha).half()
    save_file(t, path, metadata={"ss_network_module": "networks.lora", "ss_base_model_version": "sdxl_base_v1-0"})


def _peft(path, lora):
    """PEFT/diffusers naming needs diffusers module paths: LDM input_blocks.{4,5,7,8}.1 etc. map to
    down_blocks.{1,2}.attentions.{0,1}, middle_block.1 to mid_block.attentions.0, output_blocks.N.1 to
    up_blocks.{N//3}.attentions.{N%3}."""
    t = {}
    for name, (up, down, _) in lora.items():
        t[f"unet.{_diffusers(name)}.lora_A.weight"] = down.contiguous()
        t[f"unet.{_diffusers(name)}.lora_B.weight"] = up.contiguous()
    meta = {"unet.r": 4, "unet.lora_alpha": 2.0, "unet.rank_pattern": {}, "unet.alpha_pattern": {}}
    save_file(t, path, metadata={"lora_adapter_metadata": json.dumps(meta)})


def _diffusers(name: str) -> str:
    block, rest = name.split(".transformer_blocks.", 1)
    parts = block.split(".")
    if parts[0] == "middle_block":
        prefix = "mid_block.attentions.0"
    elif parts[0] == "input_blocks":
        n = int(parts[1])
        prefix = f"down_blocks.{(n - 1) // 3}.attentions.{(n - 1) % 3}"
    else:
        n = int(parts[1])
        prefix = f"up_blocks.{n // 3}.attentions.{n % 3}"
    return f"{prefix}.transformer_blocks.{rest}"


if __name__ == "__main__":
    main()
