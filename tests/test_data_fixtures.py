"""Tiny data sets in every supported format, written by the tests themselves into tmp_path.

Imported by the other tests/test_data_*.py modules; it holds no tests itself.
"""

from __future__ import annotations

import gzip
import io
import os
import struct

import numpy as np
from PIL import Image


def jpeg_bytes(colour=(200, 30, 30), size=(20, 30), bg=(235, 235, 235)) -> bytes:
    """A 2:3 product-photo-like JPEG: a coloured block on a light backdrop (W x H = size)."""
    w, h = size
    arr = np.empty((h, w, 3), np.uint8)
    arr[:] = bg
    arr[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = colour
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


# article id -> (category, colour). Ids keep their leading zero.
HM_ARTICLES = {
    "0108775015": ("Garment Upper body", (200, 30, 30)),
    "0108775044": ("Garment Upper body", (30, 200, 30)),
    "0110065001": ("Underwear", (30, 30, 200)),
    "0111586001": ("Garment Lower body", (20, 20, 20)),
    "0456163060": ("Shoes", (250, 200, 0)),
}

# t_dat, customer, article (file order matters for ties).
HM_TRANSACTIONS = [
    ("2019-01-01", "cust_a", "0108775015"),
    ("2019-01-02", "cust_a", "0108775044"),
    ("2019-01-02", "cust_a", "0110065001"),
    ("2019-01-05", "cust_a", "0108775015"),  # repeat purchase
    ("2019-01-07", "cust_a", "0456163060"),
    ("2019-01-01", "cust_b", "0111586001"),
    ("2019-01-03", "cust_b", "0108775015"),
    ("2019-02-01", "cust_c", "0108775044"),
    ("2019-02-01", "cust_c", "0111586001"),
    ("2019-02-02", "cust_c", "0110065001"),
]


def write_hm(root, articles=None, transactions=None, customers=None, with_images=True) -> str:
    """Writes a tiny H&M Kaggle layout under ``root`` and returns its path."""
    root = str(root)
    os.makedirs(root, exist_ok=True)
    articles = HM_ARTICLES if articles is None else articles
    transactions = HM_TRANSACTIONS if transactions is None else transactions
    with open(os.path.join(root, "articles.csv"), "w") as f:
        f.write("article_id,prod_name,product_type_name,product_group_name\n")
        for aid, (group, _) in articles.items():
            f.write(f"{aid},name {aid},type {group[:4]},{group}\n")
    with open(os.path.join(root, "transactions_train.csv"), "w") as f:
        f.write("t_dat,customer_id,article_id,price,sales_channel_id\n")
        for t, c, a in transactions:
            f.write(f"{t},{c},{a},0.03,2\n")
    if customers is None:
        customers = sorted({c for _, c, _ in transactions})
    with open(os.path.join(root, "customers.csv"), "w") as f:
        f.write("customer_id,FN,Active,club_member_status,fashion_news_frequency,age,postal_code\n")
        for c in customers:
            f.write(f"{c},,,ACTIVE,NONE,30.0,xyz\n")
    if with_images:
        for aid, (_, colour) in articles.items():
            d = os.path.join(root, "images", aid[:3])
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, aid + ".jpg"), "wb") as f:
                f.write(jpeg_bytes(colour))
    return root


def write_generic(root, with_timestamps=True) -> str:
    root = str(root)
    os.makedirs(os.path.join(root, "pics"), exist_ok=True)
    colours = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0)]
    with open(os.path.join(root, "items.csv"), "w") as f:
        f.write("item_id,image_path,category\n")
        for k, c in enumerate(colours):
            with open(os.path.join(root, "pics", f"i{k}.jpg"), "wb") as g:
                g.write(jpeg_bytes(c, size=(24, 24)))
            f.write(f"item{k},pics/i{k}.jpg,{'tops' if k % 2 else 'shoes'}\n")
    rows = [("u1", "item0", 5), ("u1", "item1", 3), ("u1", "item2", 9), ("u2", "item3", 1), ("u2", "item1", 2)]
    with open(os.path.join(root, "interactions.csv"), "w") as f:
        f.write("user_id,item_id" + (",timestamp" if with_timestamps else "") + "\n")
        for u, i, t in rows:
            f.write(f"{u},{i}" + (f",{t}" if with_timestamps else "") + "\n")
    return root


def write_dvbpr_npy(path, latin1_strings=False) -> str:
    """A tiny file shaped like the paper's AmazonFashion6ImgPartitioned.npy.

    With ``latin1_strings`` the JPEG bytes are stored as str decoded with latin1,
    which is what a Python-2 pickle read with encoding='latin1' yields.
    """
    itemnum, usernum = 5, 3
    colours = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0), (0, 200, 200)]
    items = []
    for i in range(itemnum):
        blob = jpeg_bytes(colours[i], size=(16, 24))
        onehot = np.zeros(3, np.float32)
        onehot[i % 3] = 1
        items.append({"imgs": blob.decode("latin1") if latin1_strings else blob, "c": onehot, "asin": f"B00{i}"})
    user_train = {0: [{"productid": 0, "reviewerID": "x"}, {"productid": 1}], 1: [{"productid": 2}],
                  2: [{"productid": 3}, {"productid": 0}]}
    user_val = {0: [{"productid": 2}], 1: [{"productid": 4}], 2: []}
    user_test = {0: [{"productid": 4}], 1: [{"productid": 0}], 2: []}
    data = np.empty(6, dtype=object)
    for k, v in enumerate([user_train, user_val, user_test, items, usernum, itemnum]):
        data[k] = v
    np.save(str(path), data, allow_pickle=True)
    return str(path)


def write_idx(path, array: np.ndarray) -> str:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(">" + "i" * array.ndim, *array.shape)
    with gzip.open(str(path), "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())
    return str(path)


def write_fashion_mnist(root, n_train=6, n_test=4) -> str:
    root = str(root)
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(0)
    for part, n in (("train", n_train), ("t10k", n_test)):
        write_idx(os.path.join(root, f"{part}-images-idx3-ubyte.gz"), rng.integers(0, 256, (n, 28, 28)))
        write_idx(os.path.join(root, f"{part}-labels-idx1-ubyte.gz"), np.arange(n) % 10)
    return root
