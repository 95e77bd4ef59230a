"""Procedural garments: determinism, distinct silhouettes, any resolution, ImageSource."""

import numpy as np
import pytest

from tfmodels.data import garments


def _mask(img: np.ndarray) -> np.ndarray:
    """Pixels clearly different from the light background (the silhouette)."""
    bg = img[:2, :2].reshape(-1, 3).mean(0)
    return np.abs(img.astype(np.float32) - bg).sum(-1) > 40


def test_same_seed_same_pixels_other_seed_other_pixels():
    a = garments.sample_garments(24, seed=3)
    b = garments.sample_garments(24, seed=3)
    c = garments.sample_garments(24, seed=4)
    for k in garments.PARAM_NAMES:
        np.testing.assert_array_equal(a[k], b[k])
    ia, ib = garments.render_garments(a, None, 32), garments.render_garments(b, None, 32)
    np.testing.assert_array_equal(ia, ib)
    assert not np.array_equal(ia, garments.render_garments(c, None, 32))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_category_has_its_own_silhouette(seed):
    # One garment per category with identical other parameters, plain fabric.
    n = len(garments.CATEGORIES)
    p = garments.sample_garments(n, seed=seed)
    for k in garments.PARAM_NAMES:
        p[k] = np.repeat(p[k][:1], n)
    p["category"] = np.arange(n, dtype=np.int32)
    p["pattern"] = np.zeros(n, np.int32)
    p["value"] = np.full(n, 0.3, np.float32)
    masks = [_mask(img) for img in garments.render_garments(p, None, 32)]
    for i in range(n):
        assert 0.12 < masks[i].mean() < 0.8, garments.CATEGORIES[i]
        for j in range(i):
            iou = (masks[i] & masks[j]).sum() / (masks[i] | masks[j]).sum()
            assert iou < 0.87, (garments.CATEGORIES[i], garments.CATEGORIES[j], iou)


def test_product_photo_look_light_background_centred_garment():
    p = garments.sample_garments(40, seed=1)
    imgs = garments.render_garments(p, None, 32)
    corners = imgs[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert corners.min() > 200  # light, off-white background
    for img in imgs:
        rows = np.flatnonzero(_mask(img).any(1))
        cols = np.flatnonzero(_mask(img).any(0))
        assert rows[-1] - rows[0] > 0.4 * 32 or cols[-1] - cols[0] > 0.6 * 32  # fills most of the frame
        assert abs((rows[0] + rows[-1]) / 2 - 15.5) < 5  # roughly centred


def test_any_resolution_and_subsets_match_full_render():
    p = garments.sample_garments(10, seed=2)
    for r in (20, 48):
        assert garments.render_garments(p, None, r).shape == (10, r, r, 3)
    full = garments.render_garments(p, None, 24)
    np.testing.assert_array_equal(garments.render_garments(p, [7, 2], 24), full[[7, 2]])


def test_patterns_and_lengths_vary():
    p = garments.sample_garments(400, seed=0)
    assert set(np.unique(p["pattern"])) == set(range(len(garments.PATTERNS)))
    assert set(np.unique(p["category"])) == set(range(len(garments.CATEGORIES)))
    # A long dress covers more rows than a short one.
    q = garments.sample_garments(2, seed=0)
    for k in garments.PARAM_NAMES:
        q[k] = np.repeat(q[k][:1], 2)
    q["category"][:] = garments.CATEGORIES.index("dress")
    q["pattern"][:] = 0
    q["length"] = np.array([0.0, 1.0], np.float32)
    short, long_ = (_mask(im).any(1).sum() for im in garments.render_garments(q, None, 64))
    assert long_ > short


def test_garment_images_source():
    p = garments.sample_garments(5, seed=0)
    src = garments.GarmentImages(p)
    assert len(src) == 5
    assert src.load(1).shape == (garments.DEFAULT_RESOLUTION, garments.DEFAULT_RESOLUTION, 3)
    assert src.render(np.array([0, 4]), 16).shape == (2, 16, 16, 3)
    assert src.fingerprint == garments.GarmentImages(garments.sample_garments(5, seed=0)).fingerprint
    assert src.fingerprint != garments.GarmentImages(garments.sample_garments(5, seed=1)).fingerprint
    assert garments.CATEGORIES[int(p["category"][2])] in src.describe(2)


def test_bad_inputs_are_named():
    p = garments.sample_garments(3, seed=0)
    with pytest.raises(ValueError, match="indices out of range"):
        garments.render_garments(p, [3], 32)
    bad = dict(p)
    del bad["hue"]
    with pytest.raises(ValueError, match="hue"):
        garments.render_garments(bad, None, 32)
    with pytest.raises(ValueError, match="resolution"):
        garments.render_garments(p, None, 4)
