"""The in-memory data model every reader produces.

A :class:`Dataset` is a catalogue of items (each with an image source and an
optional category), a list of users, and interactions (user, item, optional
timestamp) as parallel integer arrays. Ids stay strings (H&M article ids keep
their leading zero). A :class:`Split` is the leave-one-out partition that
training and evaluation use.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np


class BadImageError(ValueError):
    """An item's image is missing or cannot be decoded."""


class ImageSource:
    """Gives access to item images by item index.

    Subclasses implement ``load`` (native size, uint8 [h, w, 3]) and ``describe``
    (a human-readable name for error messages: a path, an item id). A source that
    can draw at any resolution (procedural garments) overrides ``render``.
    """

    fingerprint: str = ""
    """Changes whenever the images change; part of the on-disk cache key."""

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> np.ndarray:
        """Returns image ``index`` as uint8 [h, w, 3]; raises BadImageError."""
        raise NotImplementedError

    def describe(self, index: int) -> str:
        return f"item #{index}"

    def render(self, indices: np.ndarray, resolution: int) -> np.ndarray | None:
        """Returns uint8 [len(indices), resolution, resolution, 3], or None to use ``load`` + resize."""
        return None


@dataclass
class Dataset:
    """Items, users and interactions, as every reader returns them."""

    name: str
    """Short name of the source (hm, generic, ...), used in cache keys and reports."""
    item_ids: np.ndarray
    """str [num_items]: the catalogue's own ids."""
    images: ImageSource
    """Image of each item, by item index."""
    categories: np.ndarray
    """int32 [num_items]: category index per item, -1 where unknown."""
    category_names: list[str]
    """Name of each category index."""
    user_ids: np.ndarray
    """str [num_users]: the users' own ids (may be empty: an image-only dataset)."""
    inter_user: np.ndarray
    """int32 [num_interactions]: user index of each interaction, in file order."""
    inter_item: np.ndarray
    """int32 [num_interactions]: item index of each interaction."""
    inter_time: np.ndarray | None = None
    """int64 [num_interactions] (e.g. days or seconds), or None where there are no timestamps."""
    predefined_split: "Split | None" = None
    """A split shipped with the data (the paper's .npy files); None = leave-one-out by time."""
    extra: dict = field(default_factory=dict)
    """Reader-specific extras (e.g. simulated users' hidden tastes)."""

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_interactions(self) -> int:
        return len(self.inter_user)

    def fingerprint(self) -> str:
        """A short hash of the catalogue and its images, for cache keys."""
        h = hashlib.sha1()
        h.update(self.name.encode())
        h.update(str(self.num_items).encode())
        h.update("\n".join(map(str, self.item_ids[:1000])).encode())
        h.update(self.images.fingerprint.encode())
        return h.hexdigest()[:16]


@dataclass
class Split:
    """Leave-one-out split: distinct training pairs plus one validation and one test item per user."""

    num_users: int
    num_items: int
    train_user: np.ndarray
    """int32 [num_train_pairs]: user of each distinct training pair, sorted by user then item."""
    train_item: np.ndarray
    """int32 [num_train_pairs]: item of each distinct training pair."""
    val_item: np.ndarray
    """int32 [num_users]: held-out validation item per user, -1 where none."""
    test_item: np.ndarray
    """int32 [num_users]: held-out test item per user, -1 where none."""

    def train_offsets(self) -> np.ndarray:
        """int64 [num_users + 1]: CSR offsets of each user's training items in ``train_item``."""
        counts = np.bincount(self.train_user, minlength=self.num_users)
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def train_item_counts(self) -> np.ndarray:
        """int64 [num_items]: training interactions per item (item popularity)."""
        return np.bincount(self.train_item, minlength=self.num_items).astype(np.int64)

    def cold_items(self) -> np.ndarray:
        """bool [num_items]: items with no training interaction."""
        return self.train_item_counts() == 0
