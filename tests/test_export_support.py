"""Shared fixtures of the test_export_* tests: a tiny trained DVBPR + GAN, exported once per process.

The world is written in the generic format (so ``load_dvbpr`` and the CLI can
reload it from the work directory): 96 items, 3 shapes (the categories) in 4
colours, drawn on 40x32 (portrait) canvases so that the pad-to-square step is
exercised; each of 32 users buys only items of one colour, so a recommender that
sees pixels ranks a user's held-out item above random items.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

import tfmodels  # noqa: F401  (tf-keras before TensorFlow)
from tfmodels import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
CATEGORIES = ["top", "shoe", "bag"]
COLOURS = np.array([[210, 40, 40], [40, 190, 60], [40, 70, 220], [225, 205, 40]])


def write_world(folder: str, n_items: int = 96, n_users: int = 32, per_user: int = 8, seed: int = 0) -> None:
    """Writes items.csv, interactions.csv and img/*.png (generic format) into ``folder``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(folder, "img"), exist_ok=True)
    colour = np.arange(n_items) % len(COLOURS)
    shape = (np.arange(n_items) // len(COLOURS)) % len(CATEGORIES)
    rows = []
    for i in range(n_items):
        img = np.full((40, 32, 3), 236, np.uint8)
        y0, x0, h, w = [(6, 6, 26, 20), (22, 3, 12, 26), (10, 8, 20, 16)][shape[i]]
        c = np.clip(COLOURS[colour[i]] + rng.integers(-25, 26, 3), 0, 255)
        img[y0:y0 + h, x0:x0 + w] = c
        path = f"img/{i}.png"
        Image.fromarray(img).save(os.path.join(folder, path))
        rows.append(f"item{i},{path},{CATEGORIES[shape[i]]}")
    with open(os.path.join(folder, "items.csv"), "w") as f:
        f.write("item_id,image_path,category\n" + "\n".join(rows) + "\n")
    lines = []
    for u in range(n_users):
        liked = np.flatnonzero(colour == u % len(COLOURS))
        for t, i in enumerate(rng.choice(liked, size=per_user, replace=False)):
            lines.append(f"user{u},item{i},{t}")
    with open(os.path.join(folder, "interactions.csv"), "w") as f:
        f.write("user_id,item_id,timestamp\n" + "\n".join(lines) + "\n")


def tiny_cfg(data_dir: str, cache_dir: str):
    cfg = config_lib.tiny()
    cfg.data.dataset, cfg.data.data_dir, cfg.data.cache_dir = "generic", data_dir, cache_dir
    cfg.model.embedding_dim, cfg.model.fc_units = 8, 32
    cfg.train.steps, cfg.train.steps_per_loop, cfg.train.batch_size = 160, 40, 32
    cfg.train.eval_every = cfg.train.checkpoint_every = 80
    cfg.train.learning_rate = 1e-3
    cfg.train.histogram_every = 0
    cfg.gan.resolution, cfg.gan.steps, cfg.gan.batch_size, cfg.gan.sample_every = 16, 2, 8, 2
    cfg.design.starts, cfg.design.invert_steps = 2, 3
    return cfg


@functools.lru_cache(maxsize=None)
def trained() -> dict:
    """Trains the tiny DVBPR (160 steps) and GAN (2 steps) once per process; returns paths."""
    from tfmodels.training.gan import train_gan
    from tfmodels.training.recommender import train_dvbpr

    root = tempfile.mkdtemp(prefix="test_export_")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    data_dir = os.path.join(root, "data")
    write_world(data_dir)
    cfg = tiny_cfg(data_dir, os.path.join(root, "cache"))
    rec, gan = os.path.join(root, "rec"), os.path.join(root, "gan")
    train_dvbpr(cfg, rec)
    train_gan(cfg, gan)
    return {"root": root, "rec": rec, "gan": gan, "data": data_dir}


@functools.lru_cache(maxsize=None)
def exported() -> dict:
    """Exports the trained pair once per process into <root>/export (version 1); returns paths."""
    from export.bundle import export_all

    t = trained()
    base = os.path.join(t["root"], "export")
    written = export_all(t["rec"], t["gan"], base, log=lambda *a: None)
    return {**t, "base": base, "written": written}


@functools.lru_cache(maxsize=None)
def in_process():
    """The same models, rebuilt in this process from the work directories (the round-trip reference)."""
    from export.designer import build_designer_module
    from export.item_encoder import build_item_encoder
    from export.recommender import build_recommender_module
    from tfmodels.design import build_designer
    from tfmodels.training.recommender import load_dvbpr

    t = trained()
    model, dataset, split, images = recommender = load_dvbpr(t["rec"])
    designer = build_designer(t["rec"], t["gan"], recommender=recommender)
    return {"model": model, "dataset": dataset, "split": split, "images": images,
            "recommender": build_recommender_module(model, dataset, split, images),
            "designer": build_designer_module(designer), "designer_object": designer,
            "encoder": build_item_encoder(model.item_tower, 1e-3)}




def run_clean_python(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter (isolated mode, cwd=/, TF_USE_LEGACY_KERAS unset).

    The code itself must not import this project; callers check ``sys.modules``.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("TF_USE_LEGACY_KERAS", "PYTHONPATH")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return subprocess.run([PYTHON, "-I", "-c", code, *args], cwd="/", env=env, capture_output=True, text=True,
                          timeout=timeout)
