"""Pictures and tables for reports (``tfmodels demo``): labelled panels, training curves, Markdown.

Host-side NumPy + PIL + matplotlib (Agg backend); nothing here trains or
needs a GPU. TensorBoard event files are read with TensorFlow's record reader
only in :func:`read_scalars`. Every file is written atomically (``save_png``
for PNGs, temp file + ``os.replace`` for the rest).
"""

from __future__ import annotations

import glob
import json
import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tfmodels.data.preview import image_grid, save_png
from tfmodels.workdir import read_metrics
from tfmodels import files
from tfmodels.files import write_text

TITLE_HEIGHT = 14


def fit_tiles(images, side: int) -> np.ndarray:
    """Resizes uint8 images [N, H, W, 3] to [N, side, side, 3] (nearest when enlarging, so pixels stay visible)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"fit_tiles: expected images [N, H, W, 3], got shape {images.shape}")
    if len(images) == 0:
        return np.zeros((0, side, side, 3), np.uint8)
    if images.shape[1] == side and images.shape[2] == side:
        return images.astype(np.uint8)
    out = []
    for im in images:
        pil = Image.fromarray(np.asarray(im, np.uint8))
        enlarge = side >= max(pil.size)
        out.append(np.asarray(pil.resize((side, side), Image.NEAREST if enlarge else Image.LANCZOS)))
    return np.stack(out).astype(np.uint8)


def _title_band(text: str, width: int) -> np.ndarray:
    band = Image.new("RGB", (width, TITLE_HEIGHT), (255, 255, 255))
    ImageDraw.Draw(band).text((3, 1), text, fill=(0, 0, 0), font=ImageFont.load_default())
    return np.asarray(band)


def labelled_rows(rows, side: int = 72, cols: int | None = None) -> np.ndarray:
    """Stacks titled rows of labelled tiles into one picture.

    Args:
      rows: list of (title, images uint8 [n, H, W, 3], labels list of n strings).
        Empty rows are shown with their title and "(none)".
      side: tile side in pixels (every image is resized to it).
      cols: tiles per row (default: the longest row).

    Returns:
      uint8 [H', W', 3].
    """
    cols = cols or max([len(r[1]) for r in rows] + [1])
    blank = np.full((1, side, side, 3), 255, np.uint8)
    parts = []
    width = None
    for title, images, labels in rows:
        images = fit_tiles(images, side) if len(images) else np.zeros((0, side, side, 3), np.uint8)
        labels = list(labels)[:cols] if labels is not None else [""] * len(images)
        images = images[:cols]
        if len(images) == 0:
            title += " (none)"
        pad_n = cols - len(images)
        tiles = np.concatenate([images, np.repeat(blank, pad_n, axis=0)]) if pad_n else images
        grid = image_grid(tiles, cols=cols, labels=labels + [""] * pad_n)
        width = grid.shape[1]
        parts += [_title_band(title, width), grid]
    return np.concatenate(parts, axis=0)


def read_scalars(tb_dir: str, prefix: str = "") -> dict:
    """{tag: (steps int64 [n], values float64 [n])} of every scalar in a TensorBoard folder.

    Reads all ``events.out.tfevents.*`` files under ``tb_dir`` (TF2 tensor
    summaries and TF1 simple values); later writes of a step replace earlier
    ones (a resumed run re-logs from its checkpoint). Tags not starting with
    ``prefix`` are skipped. Missing folder: {}.
    """
    files = sorted(glob.glob(os.path.join(tb_dir, "**", "events.out.tfevents.*"), recursive=True))
    if not files:
        return {}
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    series: dict = {}
    for path in files:
        try:
            for record in tf.data.TFRecordDataset(path):
                event = event_pb2.Event.FromString(record.numpy())
                for v in event.summary.value:
                    if not v.tag.startswith(prefix):
                        continue
                    if v.HasField("tensor"):
                        arr = tf.make_ndarray(v.tensor)
                        if arr.size != 1 or arr.dtype.kind not in "fiu":
                            continue
                        value = float(arr.reshape(()))
                    elif v.HasField("simple_value"):
                        value = float(v.simple_value)
                    else:
                        continue
                    series.setdefault(v.tag, {})[int(event.step)] = value
        except tf.errors.DataLossError:
            continue  # a file still being written: use what was read
    out = {}
    for tag, by_step in series.items():
        steps = np.array(sorted(by_step), np.int64)
        out[tag] = (steps, np.array([by_step[s] for s in steps], np.float64))
    return out


def _smooth(values: np.ndarray, n: int = 5) -> np.ndarray:
    if len(values) < 2 * n:
        return values
    kernel = np.ones(n) / n
    padded = np.concatenate([np.full(n - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def plot_training_curves(runs: dict, out_path: str, oracle: float | None = None,
                         gan_workdir: str = "", classifier_workdir: str = "") -> str:
    """Writes a 2x2 figure: validation AUC vs step, training losses, GAN losses, classifier accuracy.

    Args:
      runs: {name: workdir} of recommenders (their metrics.jsonl and tb/).
      out_path: PNG to write.
      oracle: the oracle's validation-free test AUC, drawn as a dashed line (simulated worlds).
      gan_workdir, classifier_workdir: optional work directories for the lower panels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    ax = axes[0, 0]
    for name, w in runs.items():
        recs = [r for r in read_metrics(w) if r.get("auc_all") is not None]
        if not recs:
            continue
        steps = [r["step"] for r in recs]
        vals = [r["auc_all"] for r in recs]
        if len(recs) == 1:
            ax.axhline(vals[0], ls=":", lw=1.2, label=f"{name} ({vals[0]:.3f})", color="grey")
        else:
            ax.plot(steps, vals, marker="o", ms=3, label=f"{name} (last {vals[-1]:.3f})")
    if oracle is not None and math.isfinite(oracle):
        ax.axhline(oracle, ls="--", color="black", lw=1, label=f"oracle, test ({oracle:.3f})")
    ax.axhline(0.5, color="red", lw=0.6, alpha=0.5)
    ax.set_title("validation AUC (all items) vs step")
    ax.set_xlabel("step")
    ax.legend(fontsize=7)

    ax = axes[0, 1]
    for name, w in runs.items():
        s = read_scalars(os.path.join(w, "tb"), "train/")
        key = "train/bpr" if "train/bpr" in s else "train/loss"
        if key in s and len(s[key][0]) > 1:
            ax.plot(s[key][0], _smooth(s[key][1]), label=f"{name} {key.split('/')[1]}")
    ax.axhline(math.log(2), color="red", lw=0.6, alpha=0.5, label="ln 2 (chance)")
    ax.set_title("training BPR loss (smoothed)")
    ax.set_xlabel("step")
    ax.legend(fontsize=7)

    ax = axes[1, 0]
    s = read_scalars(os.path.join(gan_workdir, "tb"), "train/") if gan_workdir else {}
    for key in ("train/d_loss", "train/g_loss"):
        if key in s:
            ax.plot(s[key][0], _smooth(s[key][1]), label=key.split("/")[1])
    ax.set_title("GAN losses")
    ax.set_xlabel("step")
    if s:
        ax.legend(fontsize=7)

    ax = axes[1, 1]
    recs = [r for r in read_metrics(classifier_workdir) if "accuracy" in r] if classifier_workdir else []
    if recs:
        ax.plot([r["step"] for r in recs], [r["accuracy"] for r in recs], marker="o", ms=3, label="held-out accuracy")
        if "chance" in recs[-1]:
            ax.axhline(recs[-1]["chance"], color="red", lw=0.6, alpha=0.5, label="chance")
        ax.legend(fontsize=7)
    ax.set_title("category classifier (VBPR's pre-trained CNN)")
    ax.set_xlabel("step")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with files.replacing(out_path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return out_path


def fmt(value, digits: int = 3) -> str:
    """A table cell: floats rounded, None / NaN as 'n/a'."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: list, rows: list) -> list:
    """Lines of a Markdown table (cells formatted with :func:`fmt`)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return lines


__all__ = ["fit_tiles", "labelled_rows", "read_scalars", "read_metrics", "plot_training_curves",
           "markdown_table", "fmt", "write_text", "save_png"]
