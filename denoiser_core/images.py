"""Small display helpers for the demo: tone mapping, PSNR and a dependency-free PNG writer."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np


def to_srgb(linear: np.ndarray) -> np.ndarray:
    """Linear RGB -> sRGB-encoded values in [0, 1] (clamped first: no tone curve beyond the sRGB OETF)."""
    x = np.clip(np.nan_to_num(np.asarray(linear, dtype=np.float32)[..., :3], nan=0.0), 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055).astype(np.float32)


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of two images with values in [0, 1]."""
    mse = float(np.mean((np.asarray(image, np.float64) - np.asarray(reference, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def to_uint8(srgb: np.ndarray) -> np.ndarray:
    return np.clip(np.round(srgb * 255.0), 0, 255).astype(np.uint8)


def encode_png(rgb: np.ndarray) -> bytes:
    """8-bit RGB (H, W, 3) uint8 -> PNG bytes (filter type 0 on every row, zlib-deflated)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width, channels = rgb.shape
    if channels != 3:
        raise ValueError("encode_png takes (H, W, 3) uint8")
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, width * 3)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit truecolour, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(b"IEND", b""))


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an 8-bit RGB PNG atomically."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temp.write_bytes(encode_png(rgb))
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path
