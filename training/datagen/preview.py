"""Tone-mapped PNG previews and contact sheets of renders (numpy + zlib only)."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np


def to_srgb8(rgb: np.ndarray, exposure: float = 1.0) -> np.ndarray:
    """Linear HDR (H, W, 3) -> uint8 sRGB, with a simple Reinhard shoulder so highlights do not clip."""
    x = np.nan_to_num(np.asarray(rgb, dtype=np.float32)[..., :3] * exposure, nan=0.0, posinf=1e4)
    x = np.clip(x, 0.0, None)
    x = x / (1.0 + x / 4.0) * 1.25
    x = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(np.clip(x, 0.0031308, None), 1 / 2.4) - 0.055)
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_png(path: str, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 image as PNG, atomically."""
    h, w, _c = image.shape
    raw = b"".join(b"\x00" + image[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    tmp = f"{path}.partial"
    with open(tmp, "wb") as f:
        f.write(png)
    os.replace(tmp, path)


def auto_exposure(rgb: np.ndarray) -> float:
    """Scale that puts the image's mean luminance near middle grey."""
    lum = np.nan_to_num(rgb[..., :3]).mean()
    return 0.18 / max(float(lum), 1e-6)


def contact_sheet(images: list[np.ndarray], columns: int = 8, tile: int = 128, gap: int = 2) -> np.ndarray:
    """Tile linear HDR images (each auto-exposed, nearest-neighbour resized to ``tile``) into one image."""
    rows = max(1, -(-len(images) // columns))
    sheet = np.full((rows * (tile + gap) + gap, columns * (tile + gap) + gap, 3), 24, np.uint8)
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        scale = tile / max(h, w)
        ys = np.minimum((np.arange(int(h * scale)) / scale).astype(int), h - 1)
        xs = np.minimum((np.arange(int(w * scale)) / scale).astype(int), w - 1)
        small = to_srgb8(img[ys][:, xs], auto_exposure(img))
        r, c = divmod(i, columns)
        y0, x0 = gap + r * (tile + gap), gap + c * (tile + gap)
        sheet[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    return sheet
