"""Shared helpers of the test_train_* tests (also imported by their subprocess scripts).

``colour_world`` is a hand-made world where the answer is known: items are
noisy solid-colour squares of 4 colours, each user buys only items of one
colour, so a model that sees pixels can rank a user's held-out item above most
negatives (the best achievable AUC is about 0.75 + 0.25 / 2 = 0.875), and chance is 0.5.
"""

from __future__ import annotations

import os
import socket
import sys

import numpy as np

import tfmodels  # noqa: F401  (tf-keras before TensorFlow)
from tfmodels import config as config_lib
from tfmodels.data.dataset import Dataset, ImageSource, Split

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable

COLOURS = np.array([[220, 40, 40], [40, 200, 60], [40, 70, 220], [230, 210, 40]], np.float32)


class _Arrays(ImageSource):
    def __init__(self, arr):
        self.arr = arr
        self.fingerprint = f"colour-world-{arr.shape}"

    def __len__(self):
        return len(self.arr)

    def load(self, index):
        return self.arr[index]


def colour_world(num_users=40, num_items=120, per_user=8, resolution=32, seed=0):
    """(dataset, split, images uint8 [N, R, R, 3]) of the colour-preference world."""
    rng = np.random.default_rng(seed)
    colour = np.arange(num_items) % len(COLOURS)
    noise = rng.normal(0, 18, (num_items, resolution, resolution, 3))
    images = np.clip(COLOURS[colour][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    users, items = [], []
    val = np.full(num_users, -1, np.int32)
    test = np.full(num_users, -1, np.int32)
    for u in range(num_users):
        liked = np.flatnonzero(colour == u % len(COLOURS))
        chosen = rng.choice(liked, per_user, replace=False)
        val[u], test[u] = chosen[-2], chosen[-1]
        for i in sorted(chosen[:-2]):
            users.append(u)
            items.append(i)
    split = Split(num_users, num_items, np.array(users, np.int32), np.array(items, np.int32), val, test)
    dataset = Dataset(
        name="colour-world", item_ids=np.array([f"i{i}" for i in range(num_items)]),
        images=_Arrays(images), categories=colour.astype(np.int32),
        category_names=["red", "green", "blue", "yellow"],
        user_ids=np.array([f"u{u}" for u in range(num_users)]),
        inter_user=np.array(users, np.int32), inter_item=np.array(items, np.int32))
    return dataset, split, images


def tiny_config(**train):
    """tiny() preset at 32 px with a narrow tower; keyword args override cfg.train fields."""
    cfg = config_lib.tiny()
    cfg.data.dataset = "colour-world"
    cfg.model.width = 0.125
    cfg.model.fc_units = 32
    cfg.model.embedding_dim = 8
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def numpy_auc(score_fn, split, which="test"):
    """Mean over users of P(held-out item outscores a non-interacted item); ties count 1/2."""
    held = split.test_item if which == "test" else split.val_item
    users = np.flatnonzero(held >= 0)
    scores = score_fn(users)
    aucs = []
    for row, u in zip(scores, users):
        seen = set(split.train_item[split.train_user == u]) | {split.val_item[u], split.test_item[u]}
        neg = np.array([j for j in range(split.num_items) if j not in seen])
        s = row[held[u]]
        aucs.append(np.mean((s > row[neg]) + 0.5 * (s == row[neg])))
    return float(np.mean(aucs))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([REPO, os.path.join(REPO, "tests"), env.get("PYTHONPATH", "")])
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def test_colour_world_is_consistent():
    _, split, images = colour_world()
    assert images.shape == (120, 32, 32, 3) and images.dtype == np.uint8
    train = set(zip(split.train_user.tolist(), split.train_item.tolist()))
    for u in range(split.num_users):
        assert (u, split.val_item[u]) not in train and (u, split.test_item[u]) not in train
