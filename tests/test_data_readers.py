"""Each reader loads its format into the same Dataset, and bad input gives a clear error."""

from __future__ import annotations

import os

import numpy as np
import pytest

import tfmodels  # noqa: F401  (sets the Keras switch before anything imports TensorFlow)
from tfmodels import config as config_lib
from tfmodels.data.dvbpr_npy import read_dvbpr_npy
from tfmodels.data.fashion_mnist import DEFAULT_DIR, read_fashion_mnist
from tfmodels.data.generic import read_generic
from tfmodels.data.hm import read_hm
from tfmodels.data.loading import load_dataset

from test_data_fixtures import (HM_ARTICLES, HM_TRANSACTIONS, write_dvbpr_npy, write_fashion_mnist, write_generic,
                                write_hm)


def test_hm_loads_ids_as_strings_with_categories_and_days(tmp_path):
    d = read_hm(write_hm(tmp_path))
    assert d.name == "hm"
    assert d.item_ids.tolist() == list(HM_ARTICLES)  # leading zeros kept, catalogue order
    assert d.num_users == 3 and d.num_interactions == len(HM_TRANSACTIONS)
    assert sorted(d.user_ids.tolist()) == ["cust_a", "cust_b", "cust_c"]
    names = d.category_names
    assert names == sorted({g for g, _ in HM_ARTICLES.values()})
    assert names[d.categories[list(HM_ARTICLES).index("0456163060")]] == "Shoes"
    # Interactions in file order, mapped to the right ids; days since 1970.
    got = [(d.user_ids[u], d.item_ids[i]) for u, i in zip(d.inter_user, d.inter_item)]
    assert got == [(c, a) for _, c, a in HM_TRANSACTIONS]
    assert d.inter_time[0] == (np.datetime64("2019-01-01") - np.datetime64("1970-01-01")).astype(int)
    assert d.inter_time[4] - d.inter_time[0] == 6
    assert d.images.describe(0).endswith("images/010/0108775015.jpg (item 0108775015)")
    assert d.images.load(0).shape == (30, 20, 3)


def test_hm_block_reader_cuts_at_line_ends(tmp_path, monkeypatch):
    from tfmodels.data import hm

    root = write_hm(tmp_path)
    whole = read_hm(root)
    monkeypatch.setattr(hm, "BLOCK_BYTES", 37)  # blocks end mid-line; a line is ~100 bytes
    small = read_hm(root)
    for name in ("inter_user", "inter_item", "inter_time"):
        np.testing.assert_array_equal(getattr(whole, name), getattr(small, name))
    assert whole.user_ids.tolist() == small.user_ids.tolist()


def test_hm_other_category_column(tmp_path):
    d = read_hm(write_hm(tmp_path), category_column="product_type_name")
    assert "type Shoe" in d.category_names


def test_hm_missing_category_column_names_file_and_column(tmp_path):
    root = write_hm(tmp_path)
    with pytest.raises(ValueError) as e:
        read_hm(root, category_column="colour_group_name")
    msg = str(e.value)
    assert "articles.csv" in msg and "'colour_group_name'" in msg and "--category-column" in msg


def test_hm_missing_transaction_column(tmp_path):
    root = write_hm(tmp_path)
    path = os.path.join(root, "transactions_train.csv")
    text = open(path).read().replace("t_dat,", "date,", 1)
    open(path, "w").write(text)
    with pytest.raises(ValueError, match=r"transactions_train.csv: missing column 't_dat'"):
        read_hm(root)


def test_hm_unknown_article_id_named_with_count(tmp_path):
    tx = HM_TRANSACTIONS + [("2019-03-01", "cust_a", "0999999001"), ("2019-03-02", "cust_b", "0999999001")]
    root = write_hm(tmp_path, transactions=tx)
    with pytest.raises(ValueError) as e:
        read_hm(root)
    msg = str(e.value)
    assert "0999999001" in msg and "1 article_id values are not in articles.csv" in msg and "(2 transactions)" in msg


def test_hm_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="transactions_train"):
        read_hm(str(tmp_path))
    root = write_hm(tmp_path / "x", with_images=False)
    with pytest.raises(FileNotFoundError, match="images/"):
        read_hm(root)


def test_hm_unknown_customer(tmp_path):
    root = write_hm(tmp_path, customers=["cust_a", "cust_b"])
    with pytest.raises(ValueError, match=r"1 customer_id values are not in customers.csv.*cust_c"):
        read_hm(root)


def test_generic_loads_with_relative_paths_and_categories(tmp_path):
    d = read_generic(write_generic(tmp_path))
    assert d.num_items == 4 and d.num_users == 2 and d.num_interactions == 5
    assert d.category_names == ["shoes", "tops"]
    assert d.categories.tolist() == [0, 1, 0, 1]
    assert d.inter_time.tolist() == [5, 3, 9, 1, 2]
    assert d.images.load(2)[12, 12].argmax() == 2  # the blue one
    d2 = read_generic(write_generic(tmp_path / "nt", with_timestamps=False))
    assert d2.inter_time is None


def test_generic_date_timestamps(tmp_path):
    root = write_generic(tmp_path)
    path = os.path.join(root, "interactions.csv")
    open(path, "w").write("user_id,item_id,timestamp\nu1,item0,2020-01-01\nu1,item1,2020-01-02 12:00\n")
    d = read_generic(root)
    assert d.inter_time[1] - d.inter_time[0] == 36 * 3600


def test_generic_bad_inputs(tmp_path):
    root = write_generic(tmp_path)
    open(os.path.join(root, "interactions.csv"), "a").write("u3,nosuchitem,4\n")
    with pytest.raises(ValueError, match=r"1 item_id values are not in items.csv.*nosuchitem"):
        read_generic(root)
    open(os.path.join(root, "items.csv"), "w").write("item_id,path\nitem0,a.jpg\n")
    with pytest.raises(ValueError, match=r"items.csv: missing column 'image_path'"):
        read_generic(root)
    with pytest.raises(FileNotFoundError, match="interactions.csv"):
        read_generic(str(tmp_path / "empty"))


@pytest.mark.parametrize("latin1", [False, True])
def test_dvbpr_npy_keeps_its_split(tmp_path, latin1):
    path = write_dvbpr_npy(tmp_path / "tiny.npy", latin1_strings=latin1)
    d = read_dvbpr_npy(path, allow_pickle=True)
    assert d.num_items == 5 and d.num_users == 3
    assert d.categories.tolist() == [0, 1, 2, 0, 1] and len(d.category_names) == 3
    s = d.predefined_split
    assert s.val_item.tolist() == [2, 4, -1] and s.test_item.tolist() == [4, 0, -1]
    assert list(zip(s.train_user.tolist(), s.train_item.tolist())) == [(0, 0), (0, 1), (1, 2), (2, 0), (2, 3)]
    img = d.images.load(1)  # JPEG bytes survive the latin1 round trip
    assert img.shape == (24, 16, 3) and img[12, 8, 1] > 150


def test_dvbpr_npy_refuses_pickle_without_flag(tmp_path):
    path = write_dvbpr_npy(tmp_path / "tiny.npy")
    with pytest.raises(ValueError) as e:
        read_dvbpr_npy(path)
    msg = str(e.value)
    assert "--allow-pickle" in msg and "run arbitrary code" in msg and "tiny.npy" in msg


def test_fashion_mnist_tiny_idx(tmp_path):
    d = read_fashion_mnist(write_fashion_mnist(tmp_path))
    assert d.num_items == 10 and d.num_users == 0 and d.num_interactions == 0
    assert d.category_names[9] == "Ankle boot" and d.categories.tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    img = d.images.load(0)
    assert img.shape == (28, 28, 3) and (img[..., 0] == img[..., 2]).all()  # grayscale -> RGB
    assert read_fashion_mnist(str(tmp_path), max_items=3).num_items == 3


def test_fashion_mnist_truncated_file(tmp_path):
    root = write_fashion_mnist(tmp_path)
    import gzip
    path = os.path.join(root, "t10k-images-idx3-ubyte.gz")
    data = gzip.open(path).read()
    with gzip.open(path, "wb") as f:
        f.write(data[:-100])
    with pytest.raises(ValueError, match="truncated"):
        read_fashion_mnist(root)


@pytest.mark.skipif(not os.path.exists(os.path.join(DEFAULT_DIR, "train-labels-idx1-ubyte.gz")),
                    reason=f"Fashion-MNIST not installed at {DEFAULT_DIR} (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_real_files():
    d = read_fashion_mnist(max_items=1000)
    assert d.num_items == 1000 and len(d.category_names) == 10
    assert set(np.unique(d.categories)) == set(range(10))


def test_load_dataset_dispatch(tmp_path):
    cfg = config_lib.tiny()
    cfg.data.dataset = "generic"
    cfg.data.data_dir = write_generic(tmp_path)
    assert load_dataset(cfg).num_items == 4
    cfg.data.dataset = "dvbpr-npy"
    cfg.data.data_dir = write_dvbpr_npy(tmp_path / "t.npy")
    with pytest.raises(ValueError, match="--allow-pickle"):
        load_dataset(cfg)
    cfg.data.allow_pickle = True
    assert load_dataset(cfg).predefined_split is not None
    cfg.data.dataset = "nope"
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        load_dataset(cfg)
