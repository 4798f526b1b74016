"""Sample grids and PNG output."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from latentjax.paths import Path, as_path
from latentjax.run import write_atomic


def image_grid(images: np.ndarray, ncol: int | None = None, pad: int = 1) -> np.ndarray:
    """Tiles uint8 images [N, H, W, C] into one [rows*(H+pad)+pad, ...] image, row-major."""
    n, h, w, c = images.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    grid = np.zeros((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y : y + h, x : x + w] = img
    return grid


def enlarge(image: np.ndarray, min_size: int = 96, size: int | None = None) -> np.ndarray:
    """``image`` [H, W, C] enlarged by nearest neighbour by the whole factor that brings a tile of
    ``size`` pixels (default H) to at least ``min_size``: small digits stay visible."""
    factor = max(1, min_size // (size or image.shape[0]))
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def save_png(path: str | Path, image: np.ndarray, scale: int = 1) -> Path:
    """Writes a uint8 [H, W, C] image (C = 1 or 3), optionally enlarged by nearest-neighbour,
    whole or not at all (a full disk leaves no empty PNG)."""
    path = as_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    write_atomic(path, lambda f: pil.save(f, format="PNG"))
    return path


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[-1, 1] float -> uint8."""
    return np.round((np.clip(images, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def pyplot():
    """matplotlib's pyplot on the Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
