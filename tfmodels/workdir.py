"""The work directory W of a training run: one module owns every file in it.

Layout (the same for every model kind)::

    W/config.json     the resolved Config the run was trained with
    W/model.json      {"kind", "step", "best_step", "best_metric", sizes, ...}
    W/data.npz        what the model needs of its data: user and item ids,
                      categories, the leave-one-out split (and simulated users'
                      hidden tastes), so a trained run reopens without the raw data;
                      the pixels by the path of the decoded-image cache training
                      read, or W/images.npy when training got them in memory
    W/metrics.jsonl   one JSON record per evaluation
    W/ckpt/           latest checkpoints;  W/best/ the best by validation (+ best.json)
    W/tb/             TensorBoard

Every file is written atomically (``tfmodels.files``). ``check_resumable`` is the
one resume guard: before a run overwrites config.json it compares the settings
that shape the checkpoint (listed per kind in ``tfmodels.kinds``) with the saved
ones and refuses a change, naming the setting.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from tfmodels import config as config_lib
from tfmodels import files

CONFIG = "config.json"
MODEL = "model.json"
DATA = "data.npz"
METRICS = "metrics.jsonl"
IMAGES = "images.npy"


# --------------------------------------------------------------------------- config and model.json


def save_config(cfg, workdir: str) -> str:
    """Writes ``W/config.json`` atomically and returns its path."""
    os.makedirs(workdir, exist_ok=True)
    return files.write_json(os.path.join(workdir, CONFIG), config_lib.to_dict(cfg))


def load_config(workdir: str):
    """The Config saved in ``W/config.json``."""
    path = os.path.join(workdir, CONFIG)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {workdir!r} a tfmodels work directory?")
    with open(path) as f:
        return config_lib.from_dict(json.load(f))


def _jsonable(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


def write_model_json(workdir: str, info: dict) -> str:
    return files.write_json(os.path.join(workdir, MODEL), info, default=_jsonable)


def read_model_json(workdir: str, kind: str | None = None) -> dict:
    """``W/model.json`` (kind, step, sizes, ...); with ``kind``, another kind of run is an error."""
    path = os.path.join(workdir, MODEL)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {workdir!r} a trained tfmodels work directory?")
    with open(path) as f:
        info = json.load(f)
    if kind is not None and info.get("kind") != kind:
        raise ValueError(f"{path}: kind is {info.get('kind')!r}, expected {kind!r} "
                         f"(is this a work directory of `tfmodels train {kind}`?)")
    return info


def write_best(best_dir: str, best: dict) -> str:
    """``W/best/best.json``: the step, metric and value of the best checkpoint."""
    return files.write_json(os.path.join(best_dir, "best.json"), best, default=_jsonable)


def read_json(path: str):
    """A JSON file, or None if it does not exist."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


# --------------------------------------------------------------------------- metrics


def read_metrics(workdir: str) -> list[dict]:
    """All evaluation records of ``W/metrics.jsonl`` ([] if none; a torn last line is skipped)."""
    path = os.path.join(workdir, METRICS)
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # cut by a copy or a foreign writer; the loop itself writes atomically
    return out


def write_metrics(workdir: str, records: list[dict]) -> None:
    # Rewritten whole through a temp file: a kill never leaves a torn line.
    files.write_text(os.path.join(workdir, METRICS),
                     "".join(json.dumps(r, sort_keys=True, default=_jsonable) + "\n" for r in records))


# --------------------------------------------------------------------------- checkpoints


def latest_checkpoint(workdir: str) -> str | None:
    import tensorflow as tf

    return tf.train.latest_checkpoint(os.path.join(workdir, "ckpt"))


def checkpoint_path(workdir: str, best: bool = True) -> str:
    """The best checkpoint (``W/best/``) if ``best`` and present, else the latest in ``W/ckpt/``."""
    import tensorflow as tf

    path = tf.train.latest_checkpoint(os.path.join(workdir, "best")) if best else None
    if best and not path:
        print(f"note: {workdir} has no best/ checkpoint; using the latest", file=sys.stderr)
    path = path or latest_checkpoint(workdir)
    if not path:
        raise FileNotFoundError(f"no checkpoint in {workdir}/best or {workdir}/ckpt")
    return path


# --------------------------------------------------------------------------- the resume guard


def _get(cfg_dict: dict, key: str):
    section, _, name = key.partition(".")
    return cfg_dict.get(section, {}).get(name)


def check_resumable(cfg, workdir: str, keys) -> None:
    """Refuses to resume ``workdir`` with other values of ``keys`` (dotted config keys).

    Does nothing when ``workdir`` holds no checkpoint yet. Call it before the run
    writes its config.json.

    Raises:
      ValueError: naming the first setting whose saved value differs.
    """
    if not latest_checkpoint(workdir) or not os.path.exists(os.path.join(workdir, CONFIG)):
        return
    old, new = config_lib.to_dict(load_config(workdir)), config_lib.to_dict(cfg)
    for key in keys:
        if _get(old, key) != _get(new, key):
            raise ValueError(f"{workdir} holds a run trained with {key}={_get(old, key)!r}, this run asks for "
                             f"{_get(new, key)!r}: its checkpoint cannot be resumed "
                             "(use the same setting or another --workdir)")


# --------------------------------------------------------------------------- data.npz


def save_data(workdir: str, dataset, split=None, images=None) -> str:
    """Writes ``W/data.npz``: ids, categories, the split and simulated users (if any).

    ``images`` (uint8 [N, R, R, 3], the pixels training reads, if any) are
    recorded so that a reopened run can embed its catalogue without the raw
    data: a memory-mapped decoded-image cache by its path, an array in memory
    as ``W/images.npy``. On a resumed run the data must be the same as the first time.

    Raises:
      ValueError: when ``W/data.npz`` exists and records other items or users.
    """
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, DATA)
    arrays = {"item_ids": np.asarray(dataset.item_ids).astype(str), "user_ids": np.asarray(dataset.user_ids).astype(str),
              "categories": np.asarray(dataset.categories, np.int32),
              "category_names": np.asarray(list(dataset.category_names), dtype=str),
              "name": np.asarray(dataset.name), "image_cache": np.asarray(_keep_images(workdir, images))}
    if split is not None:
        arrays.update(train_user=split.train_user, train_item=split.train_item, val_item=split.val_item,
                      test_item=split.test_item)
    users = (dataset.extra or {}).get("users")
    if users is not None:
        arrays.update({f"users_{k}": np.asarray(v) for k, v in users.state().items()})
    if os.path.exists(path):
        with np.load(path) as old:
            for key in ("item_ids", "user_ids"):
                if not np.array_equal(old[key], arrays[key]):
                    raise ValueError(f"{workdir} was trained on other data: its {DATA} lists {len(old[key])} "
                                     f"{key.split('_')[0]}s ({', '.join(old[key][:3])}, ...), the data now has "
                                     f"{len(arrays[key])} ({', '.join(arrays[key][:3])}, ...); use another --workdir")
    with files.replacing(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    return path


def _keep_images(workdir: str, images) -> str:
    if images is None:
        return ""
    cache = getattr(images, "filename", None)
    if cache and len(np.load(cache, mmap_mode="r")) == len(images):
        return os.path.abspath(cache)
    with files.replacing(os.path.join(workdir, IMAGES), suffix=".npy") as tmp:
        np.save(tmp, np.asarray(images, np.uint8))
    return IMAGES  # relative: found again if W moves


def _recorded_images(workdir: str, recorded: str, num_items: int) -> np.ndarray | None:
    """The pixels ``save_data`` recorded (memory-mapped), or None when gone or not the run's items."""
    path = recorded if not recorded or os.path.isabs(recorded) else os.path.join(workdir, recorded)
    if not path or not os.path.exists(path):
        return None
    array = np.load(path, mmap_mode="r")
    return array if len(array) == num_items else None


def load_data(workdir: str):
    """(dataset, split) as the run in ``workdir`` saw them, from ``W/data.npz`` alone.

    The dataset has the run's ids, categories, training interactions (the
    split's training pairs) and simulated users; its images are the decoded-image
    cache training read, when there is one (``image_array`` also reads the raw data).

    A run of an earlier version (no ``W/data.npz``) reads its data again.
    """
    from tfmodels.data.dataset import Dataset, Split
    from tfmodels.data.images import ArrayImageSource

    path = os.path.join(workdir, DATA)
    if not os.path.exists(path):
        # A run of an earlier version: its data as config.json names them.
        from tfmodels.data.loading import load_for_training

        print(f"note: {workdir} has no {DATA} (trained by an earlier version); reading its data again",
              file=sys.stderr)
        return load_for_training(load_config(workdir))
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    item_ids, user_ids = data["item_ids"], data["user_ids"]
    split = None
    if "train_user" in data:
        split = Split(num_users=len(user_ids), num_items=len(item_ids), train_user=data["train_user"],
                      train_item=data["train_item"], val_item=data["val_item"], test_item=data["test_item"])
    extra = {}
    users_state = {k[len("users_"):]: v for k, v in data.items() if k.startswith("users_")}
    if users_state:
        from tfmodels.data.simulated import SimulatedUsers

        extra["users"] = SimulatedUsers.from_state(users_state)
    pixels = _recorded_images(workdir, str(data["image_cache"]), len(item_ids))
    images = (ArrayImageSource(pixels, fingerprint=os.path.basename(str(data["image_cache"])), labels=item_ids)
              if pixels is not None else _NoImages(workdir, len(item_ids)))
    inter_user = split.train_user if split is not None else np.zeros(0, np.int32)
    inter_item = split.train_item if split is not None else np.zeros(0, np.int32)
    dataset = Dataset(name=str(data["name"]), item_ids=item_ids, images=images,
                      categories=data["categories"], category_names=[str(n) for n in data["category_names"]],
                      user_ids=user_ids, inter_user=inter_user, inter_item=inter_item, extra=extra)
    return dataset, split


class _NoImages:
    """The images of a run that recorded no image cache (or lost it): an error naming the way out."""

    fingerprint = "none"

    def __init__(self, workdir: str, num_items: int):
        self.workdir, self.num_items = workdir, num_items

    def __len__(self):
        return self.num_items

    def describe(self, index):
        return f"item #{index}"

    def load(self, index):
        from tfmodels.data.dataset import BadImageError

        raise BadImageError(f"{self.workdir} holds no image cache: use tfmodels.workdir.image_array(workdir)")

    def render(self, indices, resolution):
        return None


def image_array(workdir: str) -> np.ndarray:
    """The catalogue's pixels as the run in ``workdir`` trained on them: uint8 [N, R, R, 3].

    The decoded-image cache training read (memory-mapped), or, when none was
    recorded or it is gone, the images read again from the raw data its
    config.json names (``tfmodels.data.images.load_images``).

    Raises:
      FileNotFoundError / ValueError: neither the cache nor the raw data (the same items) are there.
    """
    path = os.path.join(workdir, DATA)
    cache, item_ids = "", None
    if os.path.exists(path):
        with np.load(path) as z:
            cache, item_ids = str(z["image_cache"]), z["item_ids"]
        pixels = _recorded_images(workdir, cache, len(item_ids))
        if pixels is not None:
            return pixels
    from tfmodels.data.images import load_images
    from tfmodels.data.loading import load_dataset

    cfg = load_config(workdir)
    print(f"note: {workdir}: no image cache ({cache or 'none recorded'}); reading the images of "
          f"{cfg.data.dataset} {cfg.data.data_dir or '(default location)'} again", file=sys.stderr)
    dataset = load_dataset(cfg)
    if item_ids is not None and not np.array_equal(np.asarray(dataset.item_ids).astype(str), item_ids):
        raise ValueError(f"{workdir}: the data at {cfg.data.data_dir or cfg.data.dataset} are not the "
                         f"{len(item_ids)} items the run was trained on")
    return load_images(dataset, cfg.data.resolution, cfg.data.cache_dir, skip_bad=cfg.data.skip_bad_images)
