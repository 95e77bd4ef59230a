"""Reader for the generic format most users will bring: two CSV files in one folder.

``interactions.csv``::

    user_id,item_id[,timestamp]

``items.csv``::

    item_id,image_path[,category]

``image_path`` is relative to the folder of ``items.csv`` (absolute paths work
too). ``timestamp`` may be a number (seconds, days, any increasing unit) or a
date/time string (converted to seconds since 1970). Ids are kept as strings.
Rows are read by pandas' pyarrow engine (typed, no Python row loop). Runs on the host.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from tfmodels.data.dataset import Dataset
from tfmodels.data.images import FileImageSource


def _read_csv(path: str, required: list[str], optional: list[str]) -> pd.DataFrame:
    if not os.path.exists(path):
        raise FileNotFoundError(f"generic format: {path} does not exist (expected interactions.csv and items.csv)")
    header = pd.read_csv(path, nrows=0).columns.str.strip().tolist()
    for name in required:
        if name not in header:
            raise ValueError(f"{path}: missing column {name!r}; columns are {header}")
    usecols = required + [c for c in optional if c in header]
    return pd.read_csv(path, usecols=usecols, dtype=str, keep_default_na=False, skipinitialspace=True)


def _timestamps(values: pd.Series, path: str) -> np.ndarray:
    numeric = pd.to_numeric(values, errors="coerce")
    if not numeric.isna().any():
        return numeric.to_numpy().astype(np.int64)
    try:
        parsed = pd.to_datetime(values, utc=True, format="mixed")
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: column 'timestamp' holds values that are neither numbers nor dates ({e})") from None
    if parsed.isna().any():
        row = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        raise ValueError(f"{path}: empty timestamp on data row {row + 1}")
    seconds = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.to_numpy().astype(np.int64)


def read_generic(data_dir: str) -> Dataset:
    """Reads ``data_dir/interactions.csv`` and ``data_dir/items.csv`` into a Dataset.

    Raises:
      FileNotFoundError: a CSV is missing.
      ValueError: a missing column (naming file and column), duplicate item ids,
        an interaction whose item id is not in items.csv (naming ids and count),
        unparsable timestamps.
    """
    if not data_dir:
        raise ValueError("generic: no data folder given (--data-dir D, data.data_dir)")
    inter_path = os.path.join(data_dir, "interactions.csv")
    items_path = os.path.join(data_dir, "items.csv")
    items = _read_csv(items_path, ["item_id", "image_path"], ["category"])
    inter = _read_csv(inter_path, ["user_id", "item_id"], ["timestamp"])

    item_ids = items["item_id"].to_numpy(dtype=object).astype(str)
    uniq, counts = np.unique(item_ids, return_counts=True)
    if len(uniq) != len(item_ids):
        raise ValueError(f"{items_path}: item_id values occur more than once, e.g. {uniq[counts > 1][:3].tolist()}")
    base = os.path.dirname(os.path.abspath(items_path))
    paths = np.array([p if os.path.isabs(p) else os.path.join(base, p)
                      for p in items["image_path"].tolist()], dtype=object)

    if "category" in items:
        values = items["category"].to_numpy(dtype=object).astype(str)
        names, codes = np.unique(values, return_inverse=True)
        names = names.tolist()
        categories = codes.astype(np.int32)
        if "" in names:
            empty = names.index("")
            categories = np.where(categories == empty, -1, categories - (categories > empty)).astype(np.int32)
            names.remove("")
    else:
        names, categories = [], np.full(len(item_ids), -1, np.int32)

    inter_item = pd.Index(item_ids).get_indexer(inter["item_id"].to_numpy(dtype=object))
    unknown = inter_item < 0
    if unknown.any():
        bad = pd.unique(inter["item_id"].to_numpy(dtype=object)[unknown])
        raise ValueError(f"{inter_path}: {len(bad)} item_id values are not in items.csv ({int(unknown.sum())} "
                         f"interactions), e.g. {list(bad[:5])}")
    user_codes, user_ids = pd.factorize(inter["user_id"].to_numpy(dtype=object))
    times = _timestamps(inter["timestamp"], inter_path) if "timestamp" in inter else None
    return Dataset(
        name="generic",
        item_ids=item_ids,
        images=FileImageSource(paths, labels=item_ids),
        categories=categories,
        category_names=names,
        user_ids=np.asarray(user_ids, dtype=object).astype(str),
        inter_user=user_codes.astype(np.int32),
        inter_item=inter_item.astype(np.int32),
        inter_time=times,
        extra={"files": {"interactions": inter_path, "items": items_path}},
    )
