"""gan_metrics agrees with NumPy references on small arrays."""

import tfmodels  # noqa: F401  (sets tf-keras before TensorFlow)
import numpy as np
import pytest

from tfmodels import gan_metrics


def _reference_frechet(a, b):
    """FID via the eigenvalues of the (non-symmetric) product S_a S_b: a different route."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eig = np.linalg.eigvals(s_a @ s_b)
    tr_sqrt = np.sum(np.sqrt(np.clip(eig.real, 0, None)))
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2 * tr_sqrt)


def test_frechet_matches_reference_on_random_features():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 5)) @ rng.normal(size=(5, 5))
    b = rng.normal(size=(30, 5)) * 2.0 + 1.0
    assert gan_metrics.frechet_distance(a, b) == pytest.approx(_reference_frechet(a, b), rel=1e-6)


def test_frechet_closed_form_for_diagonal_gaussians():
    # Diagonal covariances: FD = |mu_a - mu_b|^2 + sum (sqrt(var_a) - sqrt(var_b))^2.
    mu_a, mu_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, -1.0])
    var_a, var_b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    got = gan_metrics.frechet_distance_from_stats(mu_a, np.diag(var_a), mu_b, np.diag(var_b))
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_of_a_set_with_itself_is_zero_and_shift_adds_squared_norm():
    x = np.random.default_rng(1).normal(size=(50, 4))
    assert gan_metrics.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert gan_metrics.frechet_distance(x, x + 2.0) == pytest.approx(16.0, rel=1e-6)


def test_conditional_accuracy():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0], [0.0, 5.0, 1.0], [1.0, 0.0, 0.0]])
    assert gan_metrics.conditional_accuracy(logits, np.array([0, 2, 0, 0])) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        gan_metrics.conditional_accuracy(logits, np.array([0, 1]))


def test_nearest_distances_match_brute_force():
    rng = np.random.default_rng(3)
    refs = rng.integers(0, 256, size=(23, 6, 6, 3), dtype=np.uint8)
    queries = np.concatenate([refs[[4, 17]], rng.integers(0, 256, size=(5, 6, 6, 3), dtype=np.uint8)])
    dist, idx = gan_metrics.nearest_distances(queries, refs, chunk=7)
    q = queries.reshape(len(queries), -1).astype(np.float64) / 255
    r = refs.reshape(len(refs), -1).astype(np.float64) / 255
    full = np.sqrt(((q[:, None, :] - r[None]) ** 2).mean(-1))
    np.testing.assert_allclose(dist, full.min(1), atol=1e-5)
    np.testing.assert_array_equal(idx, full.argmin(1))
    assert dist[0] == pytest.approx(0.0, abs=1e-3) and idx[0] == 4 and idx[1] == 17


def test_judge_learns_categories_it_can_see():
    # Two categories told apart only by *where* the bright part sits (top or bottom half), at the
    # same mean brightness; the judge trains a few steps and classifies held-out images.
    rng = np.random.default_rng(0)
    n, res = 256, 16
    cats = rng.integers(0, 2, size=n)
    images = rng.integers(0, 60, size=(n, res, res, 3)).astype(np.uint8)
    for i, c in enumerate(cats):
        rows = slice(0, res // 2) if c == 0 else slice(res // 2, res)
        images[i, rows] += 150
    judge = gan_metrics.train_judge(images[:192], cats[:192], 2, steps=60, batch_size=32, width=8, log_every=0)
    logits, features = gan_metrics.judge_outputs(judge, images[192:])
    assert logits.shape == (64, 2) and features.shape == (64, 128)
    assert gan_metrics.conditional_accuracy(logits, cats[192:]) >= 0.9
    with pytest.raises(ValueError, match="no image has a known category"):
        gan_metrics.train_judge(images[:4], np.full(4, -1), 2, steps=1)
