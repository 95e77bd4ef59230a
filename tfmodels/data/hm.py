"""Reader for the H&M Kaggle layout ("H&M Personalized Fashion Recommendations").

Expected files in the data folder::

    transactions_train*.csv   t_dat, customer_id, article_id[, price, sales_channel_id]
    articles*.csv             article_id, <category column>, ...
    customers*.csv            customer_id, ...          (optional)
    images/<first 3 digits of article_id>/<article_id>.jpg

Items are the rows of the articles file (the whole catalogue, also articles
nobody bought: they are cold items); users are the customers who appear in the
transactions. Ids stay strings: article ids are 10-digit strings with a leading
zero. Timestamps are days since 1970-01-01 from ``t_dat``.

Memory stays bounded for the full Kaggle files (31M transactions, 105k articles,
1.4M customers): only the three needed transaction columns are parsed, 32 MB of
CSV at a time (pyarrow's multi-threaded parser), and each block's ids are turned
into int32 positions by a C++ hash lookup (``pyarrow.compute.index_in``) against
the article and customer id tables, so per transaction only int32 user, int32
item and int64 day are kept (16 bytes). No Python loop over rows. Measured on a
synthetic Kaggle-shaped file of 4M transactions (1.3M customers, 105k
articles): peak RSS 1.1 GB after reading, most of it the customer id table.
Runs on the host.
"""

from __future__ import annotations

import csv
import glob
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from tfmodels.data.dataset import Dataset
from tfmodels.data.images import FileImageSource

TRANSACTION_COLUMNS = ("t_dat", "customer_id", "article_id")
# CSV bytes parsed at a time: bounds memory, large enough for the parser's threads.
BLOCK_BYTES = 32 << 20


def _find_one(data_dir: str, pattern: str, required: bool = True) -> str | None:
    matches = sorted(glob.glob(os.path.join(data_dir, pattern)))
    if not matches:
        if required:
            raise FileNotFoundError(f"H&M layout: no {pattern} in {data_dir!r} (expected the Kaggle files "
                                    f"transactions_train*.csv, articles*.csv, customers*.csv and images/)")
        return None
    if len(matches) > 1:
        names = ", ".join(os.path.basename(m) for m in matches)
        raise ValueError(f"H&M layout: several files match {pattern} in {data_dir!r}: {names}; keep one")
    return matches[0]


def _header(path: str) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        row = next(csv.reader(f), None)
    if not row:
        raise ValueError(f"{path}: empty file, expected a CSV header")
    return [c.strip().lstrip("\ufeff") for c in row]


def _require_columns(path: str, wanted, extra_hint: str = "") -> None:
    columns = _header(path)
    for name in wanted:
        if name not in columns:
            raise ValueError(f"{path}: missing column {name!r}{extra_hint}; columns are {columns}")


def _read_articles(path: str, category_column: str):
    hint = " (set the category column with --category-column / data.category_column)" if category_column else ""
    _require_columns(path, ["article_id"], "")
    if category_column:
        _require_columns(path, [category_column], hint)
    usecols = ["article_id"] + ([category_column] if category_column else [])
    df = pd.read_csv(path, usecols=usecols, dtype=str, keep_default_na=False, engine="pyarrow")
    ids = df["article_id"].to_numpy(dtype=object).astype(str)
    uniq, counts = np.unique(ids, return_counts=True)
    if len(uniq) != len(ids):
        dup = uniq[counts > 1]
        raise ValueError(f"{path}: {len(dup)} article_id values occur more than once, e.g. {dup[:3].tolist()}")
    if category_column:
        values = df[category_column].to_numpy(dtype=object).astype(str)
        names, codes = np.unique(values, return_inverse=True)
        categories = codes.astype(np.int32)
        category_names = names.tolist()
        # Empty cells mean "unknown", not a category called "".
        if "" in category_names:
            empty = category_names.index("")
            categories = np.where(categories == empty, -1, categories - (categories > empty)).astype(np.int32)
            category_names.remove("")
    else:
        categories = np.full(len(ids), -1, np.int32)
        category_names = []
    return ids, categories, category_names


def _stream_csv(path: str, columns, block_bytes: int = 0):
    """Yields pyarrow RecordBatches of ``columns`` (as strings), parsing ~block_bytes of the file at a time.

    The file is cut at line ends into blocks that are parsed one after the
    other (each by pyarrow's multi-threaded parser), so memory is bounded by
    one block whatever the file size. pyarrow's own streaming reader reads far
    ahead of the consumer, which for a 3.5 GB file means gigabytes. Assumes no
    newline inside quoted fields (true of the Kaggle files).
    """
    _require_columns(path, columns)
    convert = pacsv.ConvertOptions(include_columns=list(columns), column_types={c: pa.string() for c in columns},
                                   strings_can_be_null=False)
    block = block_bytes or BLOCK_BYTES
    with open(path, "rb") as f:
        header = f.readline()
        rest = b""
        while True:
            chunk = f.read(block)
            data = rest + chunk
            if chunk:
                cut = data.rfind(b"\n") + 1
                if cut == 0:  # a line longer than a block: read more
                    rest = data
                    continue
                data, rest = data[:cut], data[cut:]
            else:
                rest = b""
            if data.strip():
                try:
                    table = pacsv.read_csv(pa.py_buffer(header + data), convert_options=convert)
                except pa.ArrowInvalid as e:
                    raise ValueError(f"{path}: cannot parse: {e}") from None
                del data
                # One batch per block: each batch costs a hash-table build in index_in.
                yield from table.combine_chunks().to_batches()
            if not chunk:
                break


def _read_id_column(path: str, column: str) -> pa.Array:
    """One id column of a CSV as a pyarrow string array (bounded-memory streaming read)."""
    parts = [b.column(0) for b in _stream_csv(path, [column])]
    return pa.concat_arrays(parts) if parts else pa.array([], pa.string())


def _stream_transactions(path: str):
    """Yields record batches of (t_dat, customer_id, article_id) as strings."""
    return _stream_csv(path, TRANSACTION_COLUMNS)


def _days(dates: pa.Array, path: str) -> np.ndarray:
    """Days since 1970-01-01 of YYYY-MM-DD strings; parses each distinct date once."""
    enc = pc.dictionary_encode(dates)
    try:
        secs = pc.cast(pc.strptime(enc.dictionary, format="%Y-%m-%d", unit="s"), pa.int64()).to_numpy()
    except pa.ArrowInvalid as e:
        raise ValueError(f"{path}: column 't_dat' must hold dates as YYYY-MM-DD ({e})") from None
    return (secs // 86400)[enc.indices.to_numpy()]


def _unique_strings(path: str, column: str) -> pa.Array:
    """Distinct values of a transactions column in first-appearance order, streaming (no customers file)."""
    merged = pa.array([], pa.string())
    for batch in _stream_transactions(path):
        # Merging every batch keeps memory at one id table plus one batch.
        batch_ids = pc.unique(batch.column(batch.schema.get_field_index(column)))
        merged = pc.unique(pa.concat_arrays([merged, batch_ids]))
    return merged


def read_hm(data_dir: str, category_column: str = "product_group_name", check_customers: bool = True) -> Dataset:
    """Reads the H&M Kaggle layout in ``data_dir`` into a Dataset.

    Args:
      data_dir: folder with transactions_train*.csv, articles*.csv, customers*.csv, images/.
      category_column: articles column used as the item category ("" = none).
      check_customers: if customers*.csv exists, every transacting customer must be in it.

    Raises:
      FileNotFoundError: a required file is missing.
      ValueError: a missing column (naming file and column), a transaction whose
        article id is not in the articles file (naming ids and count), an unknown
        customer, duplicate article ids, unparsable dates.
    """
    if not data_dir:
        raise ValueError("H&M: no data folder given (--data-dir D, data.data_dir)")
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"H&M: data folder {data_dir!r} does not exist")
    tx_path = _find_one(data_dir, "transactions_train*.csv")
    art_path = _find_one(data_dir, "articles*.csv")
    cust_path = _find_one(data_dir, "customers*.csv", required=False)
    image_dir = os.path.join(data_dir, "images")
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"H&M layout: no images/ folder in {data_dir!r} (expected images/<first 3 digits>/<article_id>.jpg)")

    item_ids, categories, category_names = _read_articles(art_path, category_column)
    item_set = pa.array(item_ids, pa.string())
    # Customer ids: the customers file is the id table when present (checked:
    # every transacting customer must be in it); else collected from the transactions.
    if cust_path and check_customers:
        cust_set = _read_id_column(cust_path, "customer_id")
    else:
        cust_set = _unique_strings(tx_path, "customer_id")

    # One streaming pass: ids -> int32 positions by hash lookup in C++ (pc.index_in).
    users, items, days = [], [], []
    unknown_items: dict[str, int] = {}
    unknown_customers: dict[str, int] = {}
    for batch in _stream_transactions(tx_path):
        col = {name: batch.column(batch.schema.get_field_index(name)) for name in TRANSACTION_COLUMNS}
        item = pc.index_in(col["article_id"], value_set=item_set)
        user = pc.index_in(col["customer_id"], value_set=cust_set)
        for codes, ids, bad in ((item, col["article_id"], unknown_items), (user, col["customer_id"], unknown_customers)):
            if codes.null_count:
                missing = pc.filter(ids, pc.is_null(codes)).value_counts()
                for entry in missing.to_pylist():
                    bad[entry["values"]] = bad.get(entry["values"], 0) + entry["counts"]
        items.append(item.fill_null(-1).to_numpy().astype(np.int32))
        users.append(user.fill_null(-1).to_numpy().astype(np.int32))
        days.append(_days(col["t_dat"], tx_path))
    if unknown_items:
        ids = sorted(unknown_items, key=lambda a: -unknown_items[a])
        raise ValueError(f"{tx_path}: {len(ids)} article_id values are not in {os.path.basename(art_path)} "
                         f"({sum(unknown_items.values())} transactions), e.g. {ids[:5]}")
    if unknown_customers:
        ids = sorted(unknown_customers, key=lambda a: -unknown_customers[a])
        raise ValueError(f"{tx_path}: {len(ids)} customer_id values are not in {os.path.basename(cust_path)} "
                         f"({sum(unknown_customers.values())} transactions), e.g. {ids[:3]}")
    inter_item = np.concatenate(items) if items else np.zeros(0, np.int32)
    inter_cust = np.concatenate(users) if users else np.zeros(0, np.int32)
    inter_time = np.concatenate(days).astype(np.int64) if days else np.zeros(0, np.int64)
    del items, users, days

    # Users = customers with at least one transaction, in customers-file order.
    present = np.bincount(inter_cust, minlength=len(cust_set)) > 0
    new_index = (np.cumsum(present) - 1).astype(np.int32)
    inter_user = new_index[inter_cust]
    del inter_cust
    user_ids = cust_set.filter(pa.array(present)).to_numpy(zero_copy_only=False).astype(str)

    paths = np.array([os.path.join(image_dir, a[:3], a + ".jpg") for a in item_ids.tolist()], dtype=object)
    images = FileImageSource(paths, labels=item_ids)
    return Dataset(
        name="hm",
        item_ids=item_ids,
        images=images,
        categories=categories,
        category_names=category_names,
        user_ids=user_ids,
        inter_user=inter_user,
        inter_item=inter_item,
        inter_time=inter_time,
        extra={"files": {"transactions": tx_path, "articles": art_path, "customers": cust_path},
               "category_column": category_column},
    )
