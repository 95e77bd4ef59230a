"""Image pipeline: pad to square on the backdrop, decode once, cache, and bad images."""

from __future__ import annotations

import os

import numpy as np
import pytest

import tfmodels  # noqa: F401
from tfmodels.data import images as images_lib
from tfmodels.data.dataset import BadImageError
from tfmodels.data.hm import read_hm
from tfmodels.data.images import background_colour, drop_bad_images, load_images, square_resize
from tfmodels.data.pixels import embed_in_batches, resize_to, to_model_input, to_uint8
from tfmodels.data.splits import leave_one_out

from test_data_fixtures import HM_ARTICLES, HM_TRANSACTIONS, write_hm


def test_pad_on_backdrop_colour_and_resize():
    img = np.full((30, 20, 3), 235, np.uint8)
    img[10:20, 5:15] = (200, 30, 30)
    out = square_resize(img, 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    # The padded left/right margins take the backdrop colour, not black or white.
    assert np.abs(out[8, 0].astype(int) - 235).max() <= 2 and np.abs(out[8, 15].astype(int) - 235).max() <= 2
    assert out[8, 8, 0] > 150 and out[8, 8, 1] < 90  # the red block stays in the centre
    # A darker ringing line on the outermost columns (common in resized product
    # photos) is dropped, and the margins take the backdrop just inside it.
    photo = np.full((96, 64, 3), 240, np.uint8)
    photo[:, 0] = 200
    photo[:, -1] = 205
    out = square_resize(photo, 32)
    assert np.abs(out.astype(int) - 240).max() <= 2
    busy = np.random.default_rng(0).integers(0, 256, (30, 20, 3)).astype(np.uint8)
    assert background_colour(busy).tolist() == [255, 255, 255]


def test_load_images_caches_and_second_pass_equals_first(tmp_path, monkeypatch):
    d = read_hm(write_hm(tmp_path / "hm"))
    cache = str(tmp_path / "cache")
    first = np.array(load_images(d, 16, cache))
    assert first.shape == (len(HM_ARTICLES), 16, 16, 3) and first.dtype == np.uint8
    assert first[0, 8, 8, 0] > 150  # article 0 is red
    path = images_lib.cache_path(d, 16, cache)
    assert os.path.exists(path) and not [f for f in os.listdir(cache) if ".tmp" in f]

    def no_decode(*a, **k):
        raise AssertionError("second pass decoded images")

    monkeypatch.setattr(images_lib, "decode_images", no_decode)
    second = load_images(read_hm(str(tmp_path / "hm")), 16, cache)
    assert isinstance(second, np.memmap)
    np.testing.assert_array_equal(first, second)
    # Another resolution is another cache entry.
    with pytest.raises(AssertionError, match="decoded"):
        load_images(d, 8, cache)


def test_changed_image_invalidates_cache(tmp_path):
    root = write_hm(tmp_path / "hm")
    cache = str(tmp_path / "cache")
    d = read_hm(root)
    a = images_lib.cache_path(d, 8, cache)
    path = d.images.paths[0]
    with open(path, "ab") as f:
        f.write(b"\0")
    assert images_lib.cache_path(read_hm(root), 8, cache) != a


def test_corrupt_jpeg_is_named_with_count(tmp_path):
    root = write_hm(tmp_path / "hm")
    bad = os.path.join(root, "images", "011", "0110065001.jpg")
    open(bad, "wb").write(b"\xff\xd8 this is not a jpeg")
    d = read_hm(root)
    with pytest.raises(BadImageError) as e:
        load_images(d, 16, str(tmp_path / "cache"))
    msg = str(e.value)
    assert "1 of 5 item images" in msg and "0110065001.jpg" in msg and "cannot decode" in msg
    assert "--skip-bad-images" in msg


def test_missing_image_file_fails_before_decoding(tmp_path, monkeypatch):
    root = write_hm(tmp_path / "hm")
    for aid in ("0108775015", "0456163060"):
        os.remove(os.path.join(root, "images", aid[:3], aid + ".jpg"))
    d = read_hm(root)
    monkeypatch.setattr(images_lib, "decode_images", lambda *a, **k: pytest.fail("decoded before reporting missing"))
    with pytest.raises(BadImageError) as e:
        load_images(d, 16, str(tmp_path / "cache"))
    msg = str(e.value)
    assert "2 of 5 item images" in msg and "0456163060.jpg" in msg and "missing image file" in msg


def test_skip_bad_drops_items_and_their_interactions(tmp_path, capsys):
    root = write_hm(tmp_path / "hm")
    os.remove(os.path.join(root, "images", "010", "0108775044.jpg"))
    open(os.path.join(root, "images", "045", "0456163060.jpg"), "wb").write(b"garbage")
    d = read_hm(root)
    cache = str(tmp_path / "cache")
    good = drop_bad_images(d, 16, cache)
    assert "skipping 2 items" in capsys.readouterr().err
    assert good.item_ids.tolist() == ["0108775015", "0110065001", "0111586001"]
    dropped = sum(a in ("0108775044", "0456163060") for _, _, a in HM_TRANSACTIONS)
    assert good.num_interactions == d.num_interactions - dropped
    assert set(good.item_ids[good.inter_item]) <= set(good.item_ids)
    imgs = load_images(good, 16, cache)  # copied from the full cache, no error
    full = load_images(d, 16, cache, skip_bad=True)
    np.testing.assert_array_equal(imgs, np.asarray(full)[[0, 2, 3]])
    assert leave_one_out(good).num_items == 3


def test_to_model_input_range():
    import tensorflow as tf

    x = to_model_input(tf.constant([[0, 255, 128]], tf.uint8))
    assert x.dtype == tf.float32
    np.testing.assert_allclose(x.numpy(), [[-1.0, 1.0, 128 / 127.5 - 1]], atol=1e-6)


def test_to_uint8_inverts_to_model_input_on_host_and_in_tensorflow():
    import tensorflow as tf

    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=-1)
    host = to_model_input(x)
    assert isinstance(host, np.ndarray) and host.dtype == np.float32
    np.testing.assert_array_equal(host, to_model_input(tf.constant(x)).numpy())
    np.testing.assert_array_equal(to_uint8(host), x)
    back = to_uint8(to_model_input(tf.constant(x)))
    assert back.dtype == tf.uint8
    np.testing.assert_array_equal(back.numpy(), x)
    # Outside [-1, 1] (a generator's overshoot) clips to the ends of the range.
    np.testing.assert_array_equal(to_uint8(np.array([-3.0, -1.0, 0.0, 1.0, 2.5], np.float32)), [0, 0, 128, 255, 255])


def test_resize_to_a_side():
    import tensorflow as tf

    x = tf.random.stateless_uniform([2, 8, 8, 3], seed=[1, 2], minval=-1.0, maxval=1.0)
    assert resize_to(x, 8) is x  # already that size
    up = resize_to(x, 16)
    assert up.shape == (2, 16, 16, 3)
    np.testing.assert_allclose(up.numpy(), tf.image.resize(x, [16, 16], method="bilinear").numpy())
    down = resize_to(up, 4)  # antialiased: each output pixel averages its 4x4 block of a smooth image
    np.testing.assert_allclose(down.numpy(), tf.image.resize(up, [4, 4], antialias=True).numpy())
    assert not np.allclose(down.numpy(), tf.image.resize(up, [4, 4]).numpy())


def test_embed_in_batches_equals_one_call():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(11, 8, 8, 3)).astype(np.uint8)
    model = tf.keras.Sequential([tf.keras.layers.Flatten(), tf.keras.layers.Dropout(0.5), tf.keras.layers.Dense(5)])
    model.build((None, 8, 8, 3))
    want = model(to_model_input(images), training=False).numpy()  # dropout off: inference mode
    got = embed_in_batches(model, images, batch_size=4)  # 4 + 4 + 3 rows
    assert got.shape == (11, 5) and isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Selected rows in the given order; a dict of outputs; no rows.
    np.testing.assert_allclose(embed_in_batches(model, images, 2, items=[7, 1, 3]), want[[7, 1, 3]],
                               rtol=1e-5, atol=1e-6)
    both = embed_in_batches(lambda x: {"sum": tf.reduce_sum(x, [1, 2, 3]), "first": x[:, 0, 0, :]}, images, 5)
    np.testing.assert_allclose(both["sum"], to_model_input(images).sum(axis=(1, 2, 3)), rtol=1e-5, atol=1e-4)
    # (in a graph x / 127.5 may become x * (1 / 127.5): one float32 ulp apart)
    np.testing.assert_allclose(both["first"], to_model_input(images)[:, 0, 0, :], rtol=0, atol=2e-7)
    assert embed_in_batches(model, images, items=[]).shape == (0, 5)
    with pytest.raises(ValueError, match="expected images \\[N, H, W, C\\], got shape \\(8, 8, 3\\)"):
        embed_in_batches(model, images[0])
