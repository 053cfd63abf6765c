"""A tiny PNG writer (zlib + struct, no dependency) and a grid helper for greyscale samples."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an 8-bit greyscale (H, W) or RGB (H, W, 3) array as a PNG file."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError("write_png wants uint8 pixels")
    if img.ndim == 2:
        color, rows = 0, img
    elif img.ndim == 3 and img.shape[2] == 3:
        color, rows = 2, img.reshape(img.shape[0], -1)
    else:
        raise ValueError(f"unsupported image shape {img.shape}")
    h, w = img.shape[:2]
    raw = b"".join(b"\x00" + rows[y].tobytes() for y in range(h))  # filter type 0 on every row
    png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
    png += _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")
    path = Path(path)
    path.write_bytes(png)
    return path


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Images in [-1, 1] (model space) to 0..255, white strokes on black."""
    return np.clip((np.asarray(x, dtype=np.float32) + 1.0) * 127.5, 0, 255).round().astype(np.uint8)


def grid(rows: list[np.ndarray], *, scale: int = 2, pad: int = 2, label_width: int = 0, background: int = 40) -> np.ndarray:
    """Tile rows of images (each row: (n, h, w) uint8) into one picture, `pad` pixels apart,
    each pixel repeated `scale` times. Rows may differ in length; missing cells stay background."""
    n = max(len(r) for r in rows)
    h, w = rows[0].shape[1] * scale, rows[0].shape[2] * scale
    out = np.full((len(rows) * (h + pad) + pad, label_width + n * (w + pad) + pad), background, dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            big = np.kron(im, np.ones((scale, scale), dtype=np.uint8))
            y, x = pad + i * (h + pad), label_width + pad + j * (w + pad)
            out[y:y + h, x:x + w] = big
    return out


# A 3x5 bitmap font for row labels (digits, upper-case letters and a few signs).
_FONT = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001001001",
    "8": "111101111101111", "9": "111101111001111", "A": "010101111101101", "B": "110101110101110",
    "C": "011100100100011", "D": "110101101101110", "E": "111100110100111", "F": "111100110100100",
    "G": "011100101101011", "H": "101101111101101", "I": "111010010010111", "J": "001001001101010",
    "K": "101101110101101", "L": "100100100100111", "M": "101111111101101", "N": "110101101101101",
    "O": "010101101101010", "P": "110101110100100", "Q": "010101101110011", "R": "110101110101101",
    "S": "011100010001110", "T": "111010010010010", "U": "101101101101111", "V": "101101101101010",
    "W": "101101111111101", "X": "101101010101101", "Y": "101101010010010", "Z": "111001010100111",
    "-": "000000111000000", "+": "000010111010000", "_": "000000000000111", ".": "000000000000010",
    "/": "001001010100100", "(": "010100100100010", ")": "010001001001010", "=": "000111000111000",
    "@": "010101111100011", " ": "000000000000000", ":": "000010000010000", "%": "101001010100101",
}


def text(s: str, scale: int = 2, color: int = 230) -> np.ndarray:
    """Render `s` (upper-cased) with the 3x5 font: 4 px per character at scale 1."""
    s = s.upper()
    out = np.zeros((5 * scale, max(1, len(s)) * 4 * scale), dtype=np.uint8)
    for k, ch in enumerate(s):
        bits = _FONT.get(ch, _FONT[" "])
        glyph = np.array([int(b) for b in bits], dtype=np.uint8).reshape(5, 3) * color
        out[:, k * 4 * scale:(k * 4 + 3) * scale] = np.kron(glyph, np.ones((scale, scale), dtype=np.uint8))
    return out


def labelled_grid(rows: list[tuple[str, np.ndarray]], *, scale: int = 2, pad: int = 2, font: int = 2) -> np.ndarray:
    """`grid` with a text label left of each row."""
    width = max(len(label) for label, _ in rows) * 4 * font + 6
    img = grid([r for _, r in rows], scale=scale, pad=pad, label_width=width)
    h = rows[0][1].shape[1] * scale
    for i, (label, _) in enumerate(rows):
        t = text(label, font)
        y = pad + i * (h + pad) + max(0, (h - t.shape[0]) // 2)
        img[y:y + t.shape[0], 2:2 + min(t.shape[1], width - 4)] = t[:, :width - 4]
    return img
