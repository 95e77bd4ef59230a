"""Reader for the DVBPR paper's .npy files (e.g. ``AmazonFashion6ImgPartitioned.npy``).

Each file is a pickled Python list (usually written by Python 2)::

    [user_train, user_validation, user_test, Item, usernum, itemnum]

``user_train[u]`` / ``user_validation[u]`` / ``user_test[u]`` are lists of dicts
with at least ``'productid'`` (the item index); ``Item[i]['imgs']`` holds the raw
JPEG bytes of item i and ``Item[i]['c']`` (where present) a one-hot category.
The splits may be dicts keyed by user index or lists indexed by it.

Unpickling executes whatever code the file's author put in it, so this reader
refuses to run unless the caller opts in (``allow_pickle=True``, the CLI's
``--allow-pickle``). Python-2 byte strings are read with ``encoding='latin1'``
and turned back into the original bytes. The file's own train / validation /
test split is kept as ``Dataset.predefined_split``. Runs on the host.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from tfmodels.data.dataset import Dataset, Split
from tfmodels.data.images import BytesImageSource

PICKLE_REFUSAL = (
    "{path}: DVBPR .npy files are Python pickles, and unpickling can run arbitrary code from the file. "
    "Only load files you trust, and say so with --allow-pickle (data.allow_pickle=true)."
)


def _get(entry, key):
    """entry[key] for dict keys written as str (latin1) or bytes (encoding='bytes')."""
    if isinstance(entry, dict):
        if key in entry:
            return entry[key]
        bkey = key.encode()
        if bkey in entry:
            return entry[bkey]
        return None
    return None


def _as_bytes(value) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        # latin1 maps code points 0-255 back to the original byte values.
        return value.encode("latin1")
    if isinstance(value, np.ndarray):
        return value.tobytes()
    return bytes(value)


def _entries(split, u):
    if isinstance(split, dict):
        return split.get(u, split.get(str(u), []))
    return split[u] if u < len(split) else []


def read_dvbpr_npy(path: str, allow_pickle: bool = False) -> Dataset:
    """Reads a DVBPR .npy file (see module docstring) into a Dataset with its own split.

    Raises:
      ValueError: when ``allow_pickle`` is False (the message names --allow-pickle and why).
      FileNotFoundError / ValueError: missing file, unexpected structure, product ids out of range.
    """
    if not path:
        raise ValueError("dvbpr-npy: no file given (--data-dir FILE.npy, data.data_dir)")
    if os.path.isdir(path):
        found = sorted(f for f in os.listdir(path) if f.endswith(".npy"))
        if len(found) != 1:
            raise ValueError(f"dvbpr-npy: {path!r} is a folder with {len(found)} .npy files; give the file itself")
        path = os.path.join(path, found[0])
    if not os.path.exists(path):
        raise FileNotFoundError(f"dvbpr-npy: {path!r} does not exist")
    if not allow_pickle:
        raise ValueError(PICKLE_REFUSAL.format(path=path))
    try:
        data = np.load(path, allow_pickle=True, encoding="latin1")
    except Exception as e:
        raise ValueError(f"{path}: cannot read as a pickled .npy file ({type(e).__name__}: {e})") from None
    if isinstance(data, np.ndarray) and data.dtype == object:
        data = data.tolist() if data.ndim else data.item()
    if not isinstance(data, (list, tuple)) or len(data) != 6:
        raise ValueError(f"{path}: expected a list [user_train, user_validation, user_test, Item, usernum, itemnum], "
                         f"got {type(data).__name__}" + (f" of length {len(data)}" if hasattr(data, '__len__') else ""))
    user_train, user_val, user_test, items, usernum, itemnum = data
    usernum, itemnum = int(usernum), int(itemnum)

    def item_entry(i):
        return items.get(i) if isinstance(items, dict) else (items[i] if i < len(items) else None)

    num_cat = 0
    blobs, onehots = [], []
    for i in range(itemnum):
        entry = item_entry(i)
        blobs.append(_as_bytes(_get(entry, "imgs")))
        c = _get(entry, "c")
        onehots.append(c)
        if c is not None:
            num_cat = max(num_cat, len(np.asarray(c).ravel()))
    categories = np.full(itemnum, -1, np.int32)
    if num_cat:
        for i, c in enumerate(onehots):
            if c is not None:
                c = np.asarray(c, dtype=np.float64).ravel()
                if c.size and c.max() > 0:
                    categories[i] = int(np.argmax(c))
    category_names = [f"category {k}" for k in range(num_cat)]

    users, items_of, kinds = [], [], []
    for kind, split in ((0, user_train), (1, user_val), (2, user_test)):
        for u in range(usernum):
            for e in _entries(split, u):
                pid = _get(e, "productid")
                if pid is None:
                    raise ValueError(f"{path}: an interaction of user {u} has no 'productid' key (keys: {list(e)})")
                users.append(u)
                items_of.append(int(pid))
                kinds.append(kind)
    inter_user = np.asarray(users, np.int32)
    inter_item = np.asarray(items_of, np.int32)
    kinds = np.asarray(kinds, np.int8)
    bad = (inter_item < 0) | (inter_item >= itemnum)
    if bad.any():
        raise ValueError(f"{path}: {int(bad.sum())} interactions name a productid outside 0..{itemnum - 1}, "
                         f"e.g. {inter_item[bad][:5].tolist()}")

    train = kinds == 0
    keys = np.unique(inter_user[train].astype(np.int64) * max(itemnum, 1) + inter_item[train])
    val_item = np.full(usernum, -1, np.int32)
    test_item = np.full(usernum, -1, np.int32)
    # One held-out item per user; if a file holds several, the last one is used.
    val_item[inter_user[kinds == 1]] = inter_item[kinds == 1]
    test_item[inter_user[kinds == 2]] = inter_item[kinds == 2]
    split = Split(usernum, itemnum, (keys // max(itemnum, 1)).astype(np.int32),
                  (keys % max(itemnum, 1)).astype(np.int32), val_item, test_item)

    st = os.stat(path)
    fp = hashlib.sha1(f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:16]
    item_ids = np.arange(itemnum).astype(str)
    name = "dvbpr-" + os.path.splitext(os.path.basename(path))[0]
    return Dataset(
        name=name,
        item_ids=item_ids,
        images=BytesImageSource(blobs, item_ids, fp),
        categories=categories,
        category_names=category_names,
        user_ids=np.arange(usernum).astype(str),
        inter_user=inter_user,
        inter_item=inter_item,
        inter_time=None,
        predefined_split=split,
        extra={"file": path},
    )
