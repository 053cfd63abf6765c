"""Real SDXL UNet attention shapes (what rank-32 LoRAs usually target), as native LDM names."""

from __future__ import annotations

# (LDM block, transformer depth, width)
_BLOCKS = ([("input_blocks.4.1", 2, 640), ("input_blocks.5.1", 2, 640), ("input_blocks.7.1", 10, 1280),
            ("input_blocks.8.1", 10, 1280), ("middle_block.1", 10, 1280)]
           + [(f"output_blocks.{i}.1", 10, 1280) for i in (0, 1, 2)]
           + [(f"output_blocks.{i}.1", 2, 640) for i in (3, 4, 5)])
CONTEXT = 2048


def sdxl_attention_modules() -> dict[str, tuple[int, int]]:
    """native module name -> (out, in) of every attention/FF linear in SDXL's transformer blocks."""
    out: dict[str, tuple[int, int]] = {}
    for block, depth, d in _BLOCKS:
        out[f"{block}.proj_in"] = (d, d)
        out[f"{block}.proj_out"] = (d, d)
        for t in range(depth):
            p = f"{block}.transformer_blocks.{t}"
            for m in ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_out.0"):
                out[f"{p}.{m}"] = (d, d)
            out[f"{p}.attn2.to_k"] = (d, CONTEXT)
            out[f"{p}.attn2.to_v"] = (d, CONTEXT)
            out[f"{p}.ff.net.0.proj"] = (8 * d, d)
            out[f"{p}.ff.net.2"] = (d, 4 * d)
    return out
