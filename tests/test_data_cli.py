"""``tfmodels data stats`` / ``preview`` on tiny files, and the real H&M sample when present."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

import tfmodels  # noqa: F401
from tfmodels.cli import build_parser, main

from test_data_fixtures import write_dvbpr_npy, write_generic, write_hm

HM_DIR = os.environ.get("TFMODELS_HM_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "hm"))
HAS_PREVIEW = importlib.util.find_spec("tfmodels.data.preview") is not None


def stats(capsys, *argv):
    code = main(["data", "stats", *argv])
    out = capsys.readouterr()
    assert code == 0, out.err
    lines = out.out.strip().splitlines()
    assert len(lines) == 1  # one JSON object, nothing else on stdout
    return json.loads(lines[0])


def test_stats_generic_prints_one_json_object(tmp_path, capsys):
    s = stats(capsys, "--dataset", "generic", "--data-dir", write_generic(tmp_path))
    for key in ("users", "items", "interactions", "distinct_pairs", "categories", "val_users", "test_users",
                "cold_val_items", "cold_test_items"):
        assert key in s
    assert (s["users"], s["items"], s["interactions"], s["distinct_pairs"], s["categories"]) == (2, 4, 5, 5, 2)
    assert s["val_users"] == 1 and s["test_users"] == 1  # only u1 has 3 items


def test_stats_hm_tiny_with_category_column(tmp_path, capsys):
    root = write_hm(tmp_path)
    s = stats(capsys, "--dataset", "hm", "--data-dir", root, "--category-column", "product_type_name")
    assert s["items"] == 5 and s["users"] == 3 and s["categories"] == 3
    assert s["val_users"] == 2 and s["test_users"] == 2


def test_stats_pickle_refused_without_flag(tmp_path, capsys):
    path = write_dvbpr_npy(tmp_path / "t.npy")
    assert main(["data", "stats", "--dataset", "dvbpr-npy", "--data-dir", path]) == 2
    assert "--allow-pickle" in capsys.readouterr().err
    s = stats(capsys, "--dataset", "dvbpr-npy", "--data-dir", path, "--allow-pickle")
    assert s["predefined_split"] is True and s["val_users"] == 2 and s["test_users"] == 2


def test_stats_skip_bad_images(tmp_path, capsys):
    root = write_hm(tmp_path / "hm")
    open(os.path.join(root, "images", "045", "0456163060.jpg"), "wb").write(b"not a jpeg")
    s = stats(capsys, "--dataset", "hm", "--data-dir", root, "--skip-bad-images",
              "--set", "data.resolution=8", "--set", f"data.cache_dir={tmp_path / 'c'}")
    assert s["items"] == 4 and s["interactions"] == 9


def test_stats_bad_input_is_a_clean_error(tmp_path, capsys):
    assert main(["data", "stats", "--dataset", "hm", "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["data", "stats", "--dataset", "generic", "--data-dir", str(tmp_path), "--set", "data.nope=1"]) == 2
    assert "unknown key 'nope'" in capsys.readouterr().err


def test_help_explains_flags():
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices["data"]
    stats_parser = sub._subparsers._group_actions[0].choices["stats"]
    text = stats_parser.format_help()
    assert "runs code" in text and "--skip-bad-images" in text and "--category-column" in text


@pytest.mark.skipif(not HAS_PREVIEW, reason="tfmodels.data.preview (helper 'world') not present yet")
def test_preview_writes_png(tmp_path, capsys):
    from PIL import Image

    root = write_hm(tmp_path / "hm")
    out = tmp_path / "sheet.png"
    assert main(["data", "preview", "--dataset", "hm", "--data-dir", root, "--out", str(out),
                 "--resolution", "32", "--user", "cust_a"]) == 0
    img = np.asarray(Image.open(out))
    assert img.ndim == 3 and img.shape[0] > 32
    user_png = tmp_path / "sheet_user0.png"
    assert user_png.exists()  # cust_a is user 0 (first in the transactions)


@pytest.mark.skipif(not os.path.exists(os.path.join(HM_DIR, "transactions_train_sample.csv")),
                    reason=f"real H&M sample not found at {HM_DIR} (set TFMODELS_HM_DIR); research-only data, not in the repo")
def test_real_hm_sample_stats(capsys):
    s = stats(capsys, "--dataset", "hm", "--data-dir", HM_DIR)
    assert s["users"] == 1364 and s["items"] == 17033 and s["distinct_pairs"] == 27443
    assert s["interactions"] == 31662
    assert 0 < s["cold_test_items"] <= s["test_users"] <= s["users"]


@pytest.mark.skipif(importlib.util.find_spec("tfmodels.data.simulated") is None,
                    reason="tfmodels.data.simulated (helper 'world') not present yet")
def test_stats_garments_world(capsys, tmp_path):
    s = stats(capsys, "--dataset", "garments", "--preset", "tiny", "--set", f"data.cache_dir={tmp_path}")
    assert s["users"] == 60 and s["items"] == 200 and s["categories"] >= 6
    assert s["test_users"] == 60  # every simulated user buys >= 3 items
