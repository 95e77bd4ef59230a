"""Pictures of a catalogue: image grids, contact sheets and a user's favourites.

All host-side NumPy + PIL; every PNG is written atomically (temporary file, then
``os.replace``) so a reader never sees half a picture.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tfmodels import files

_LABEL_HEIGHT = 12
_PAD_COLOUR = 255


def _font():
    return ImageFont.load_default()


def _fit_text(draw, text: str, width: int, font) -> str:
    """Shortens ``text`` (with an ellipsis) until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…" if text else ""


def image_grid(images: np.ndarray, cols: int, labels=None, pad: int = 2) -> np.ndarray:
    """Tiles images into one picture, optionally with a text label under each tile.

    Args:
      images: uint8 [N, H, W, 3] (or [N, H, W] grey).
      cols: tiles per row (rows = ceil(N / cols)).
      labels: optional list of N strings, drawn with PIL's default font under
        each tile (shortened with an ellipsis to the tile width).
      pad: white pixels between and around tiles.

    Returns:
      uint8 [rows * (H + L + pad) + pad, cols * (W + pad) + pad, 3], where
      L = 12 when labels are given, else 0.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"image_grid: expected images [N, H, W, 3], got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"image_grid: expected uint8 images, got {images.dtype}")
    if cols < 1:
        raise ValueError(f"image_grid: cols must be >= 1, got {cols}")
    n, h, w, _ = images.shape
    if labels is not None and len(labels) != n:
        raise ValueError(f"image_grid: {len(labels)} labels for {n} images")
    rows = max(1, -(-n // cols))
    lh = _LABEL_HEIGHT if labels is not None else 0
    out = np.full((rows * (h + lh + pad) + pad, cols * (w + pad) + pad, 3), _PAD_COLOUR, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        y0, x0 = pad + r * (h + lh + pad), pad + c * (w + pad)
        out[y0:y0 + h, x0:x0 + w] = images[i]
    if labels is not None and n:
        canvas = Image.fromarray(out)
        draw = ImageDraw.Draw(canvas)
        font = _font()
        for i, text in enumerate(labels):
            r, c = divmod(i, cols)
            y0, x0 = pad + r * (h + lh + pad) + h, pad + c * (w + pad)
            draw.text((x0 + 1, y0), _fit_text(draw, str(text), w - 2, font), fill=(40, 40, 40), font=font)
        out = np.asarray(canvas)
    return out


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of one uint8 [H, W, 3] (or grey [H, W]) image, in memory (host, Pillow).

    The one PNG encoder of the package: ``save_png`` writes its bytes to disk,
    exports use them for warm-up requests.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3):
        raise ValueError(f"png_bytes: expected uint8 [H, W(, 3)], got {image.dtype} {image.shape}")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def save_png(array: np.ndarray, path: str) -> str:
    """Writes a uint8 [H, W, 3] (or [H, W]) array as PNG atomically; returns ``path``."""
    data = png_bytes(array)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with files.replacing(path, ".png") as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return path


def upscale(images: np.ndarray, min_side: int) -> np.ndarray:
    """Nearest-neighbour upscaling of uint8 tiles [N, H, W, 3] by an integer factor so they are at
    least ``min_side`` px (small GAN images with readable labels under them)."""
    images = np.asarray(images)
    h = images.shape[1]
    factor = max(1, -(-min_side // h))
    if factor == 1:
        return images
    return images.repeat(factor, axis=1).repeat(factor, axis=2)


def _category_name(dataset, item: int) -> str:
    c = int(dataset.categories[item]) if len(dataset.categories) else -1
    return dataset.category_names[c] if 0 <= c < len(dataset.category_names) else "?"


def contact_sheet(dataset, images: np.ndarray, out_path: str, n: int = 64, seed: int = 0) -> str:
    """Writes a sheet of ``n`` items sampled across categories, labelled by category.

    Items are drawn round-robin over the categories (a seeded random item of
    each category in turn, so rare categories show too), 8 per row, sorted by
    category. Tiles smaller than 96 px are enlarged (nearest neighbour) so the
    labels fit.

    Args:
      dataset: the Dataset (for categories and names).
      images: uint8 [num_items, R, R, 3], the catalogue images by item index.
      out_path: PNG to write (atomically).
      n: number of tiles.
      seed: seed of the sample.

    Returns:
      out_path.
    """
    images = np.asarray(images)
    if len(images) != dataset.num_items:
        raise ValueError(f"contact_sheet: {len(images)} images for {dataset.num_items} items")
    rng = np.random.default_rng(seed)
    cats = np.asarray(dataset.categories)
    pools = [rng.permutation(np.flatnonzero(cats == c)).tolist() for c in np.unique(cats)]
    chosen: list[int] = []
    while len(chosen) < min(n, dataset.num_items) and any(pools):
        for pool in pools:
            if pool and len(chosen) < n:
                chosen.append(pool.pop())
    chosen = sorted(chosen, key=lambda i: (cats[i], i))
    labels = [f"{_category_name(dataset, i)}" for i in chosen]
    tiles = upscale(images[np.asarray(chosen, dtype=np.int64)], 96)
    return save_png(image_grid(tiles, cols=8, labels=labels), out_path)


def favourites_sheet(dataset, images: np.ndarray, users, user_idx: int, out_path: str, n: int = 16) -> str:
    """Writes a simulated user's purchases (top rows) and top true-score items (bottom rows).

    Args:
      dataset: the Dataset whose interactions were simulated by ``users``.
      images: uint8 [num_items, R, R, 3] catalogue images.
      users: a ``tfmodels.data.simulated.SimulatedUsers``.
      user_idx: the user to show.
      out_path: PNG to write (atomically).
      n: at most this many purchases and exactly this many top items.

    Returns:
      out_path.
    """
    images = np.asarray(images)
    if not 0 <= user_idx < dataset.num_users:
        raise ValueError(f"favourites_sheet: user index {user_idx} out of range [0, {dataset.num_users})")
    if len(images) != dataset.num_items:
        raise ValueError(f"favourites_sheet: {len(images)} images for {dataset.num_items} items")
    scores = users.score_matrix(images, user_idx=np.array([user_idx]))[0]
    bought = np.asarray(dataset.inter_item)[np.asarray(dataset.inter_user) == user_idx]
    bought = list(dict.fromkeys(bought.tolist()))[:n]
    top = np.argsort(-scores, kind="stable")[:n]
    cols = min(8, n)
    row_len = -(-n // cols) * cols
    tiles, labels = [], []
    blank = np.full(images.shape[1:], 255, np.uint8)
    for group, name in ((bought, "bought"), (top.tolist(), "top")):
        for k in range(row_len):
            if k < len(group):
                i = group[k]
                tiles.append(images[i])
                labels.append(f"{name} {scores[i]:+.3f}")
            else:
                tiles.append(blank)
                labels.append("")
    grid = image_grid(upscale(np.stack(tiles), 96), cols=cols, labels=labels)
    return save_png(grid, out_path)
