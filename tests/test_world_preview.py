"""Preview pictures: grid shapes, atomic PNGs, contact and favourites sheets."""

import numpy as np
import pytest
from PIL import Image

from tfmodels import config
from tfmodels.data import preview, simulated


def test_image_grid_shape_with_and_without_labels():
    imgs = np.zeros((5, 10, 12, 3), np.uint8)
    assert preview.image_grid(imgs, cols=3, pad=2).shape == (2 * 12 + 2, 3 * 14 + 2, 3)
    labelled = preview.image_grid(imgs, cols=3, labels=list("abcde"), pad=2)
    assert labelled.shape == (2 * (12 + 12) + 2, 3 * 14 + 2, 3)
    # The label area holds dark text pixels; an unlabelled grid has only white there.
    assert labelled[12:24, 2:14].min() < 128
    with pytest.raises(ValueError, match="labels"):
        preview.image_grid(imgs, cols=3, labels=["a"])


def test_save_png_is_atomic_and_readable(tmp_path):
    arr = (np.arange(6 * 7 * 3) % 255).astype(np.uint8).reshape(6, 7, 3)
    path = preview.save_png(arr, str(tmp_path / "sub" / "x.png"))
    np.testing.assert_array_equal(np.asarray(Image.open(path)), arr)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["x.png"]  # no temp files left


def test_png_bytes_round_trip_and_bad_input():
    import io

    arr = (np.arange(5 * 4 * 3) * 7 % 256).astype(np.uint8).reshape(5, 4, 3)
    data = preview.png_bytes(arr)
    assert data.startswith(b"\x89PNG")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), arr)
    with pytest.raises(ValueError, match="png_bytes: expected uint8"):
        preview.png_bytes(arr.astype(np.float32))
    # upscale: nearest neighbour by an integer factor, to at least min_side.
    big = preview.upscale(arr[None], 12)
    assert big.shape == (1, 15, 12, 3)
    np.testing.assert_array_equal(big[0, ::3, ::3], arr)


def test_contact_and_favourites_sheets(tmp_path):
    cfg = config.tiny()
    cfg.data.cache_dir = str(tmp_path / "cache")
    ds = simulated.build_world(cfg)
    imgs = ds.images.render(np.arange(ds.num_items), 32)
    sheet = preview.contact_sheet(ds, imgs, str(tmp_path / "sheet.png"), n=16)
    w, h = Image.open(sheet).size
    assert w > 8 * 96 and h > 2 * 96
    fav = preview.favourites_sheet(ds, imgs, ds.extra["users"], 3, str(tmp_path / "fav.png"), n=8)
    assert Image.open(fav).size[0] > 8 * 96
