"""Safetensors files written byte by byte (to hold what no library writes) and a valid tiny LoRA to start from."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

DOWN, UP, ALPHA = "lora_unet_a.lora_down.weight", "lora_unet_a.lora_up.weight", "lora_unet_a.alpha"
NAMES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.int32: "I32",
    torch.bool: "BOOL",
}


DROP = object()  # an override value that removes the field


def raw_file(path: Path, header: dict | str | bytes, data: bytes = b"") -> Path:
    """A file of an 8-byte little-endian header length, the header as given, then `data`."""
    text = header if isinstance(header, bytes) else (header if isinstance(header, str) else json.dumps(header)).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def tensors_file(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None, overrides: dict[str, dict] | None = None
) -> Path:
    """The tensors laid out as safetensors lays them out (in key order), then header fields replaced
    by `overrides` ({key: {field: value}}), without any check of what they say."""
    header: dict = {"__metadata__": metadata} if metadata is not None else {}
    data = b""
    for key, t in tensors.items():
        raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[key] = {
            "dtype": NAMES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [len(data), len(data) + len(raw)],
        }
        data += raw
    for key, fields in (overrides or {}).items():
        if isinstance(fields, dict) and isinstance(header.get(key), dict):
            fields = {f: v for f, v in {**header[key], **fields}.items() if v is not DROP}
        header[key] = fields
    return raw_file(path, header, data)


def lora_tensors(
    seed: int = 0, rows: int = 4, cols: int = 3, rank: int = 2, alpha: float = 1.0
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        DOWN: torch.randn(rank, cols, generator=g),
        UP: torch.randn(rows, rank, generator=g),
        ALPHA: torch.tensor(alpha),
    }
