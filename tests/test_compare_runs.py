"""benchmarks/compare_runs.py: two recommender-benchmark runs paired user by user."""

import importlib.util
import os

import numpy as np
import pytest

_PATH = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "compare_runs.py")
_spec = importlib.util.spec_from_file_location("compare_runs", _PATH)
compare_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_runs)


def _run(root, users, auc, items=None):
    os.makedirs(root / "garments")
    np.savez(root / "garments" / "per_user_test.npz",
             **{"vbpr/user": users, "vbpr/item": users if items is None else items, "vbpr/auc_all": auc})
    return str(root)


def test_pairs_the_same_users_and_refuses_another_split(tmp_path, capsys):
    users = np.arange(200)
    auc = np.random.default_rng(0).uniform(0.4, 0.8, 200)
    a = _run(tmp_path / "a", users, auc)
    b = _run(tmp_path / "b", users, auc + 0.05)
    assert compare_runs.main([a, b, "--dataset", "garments", "--metrics", "auc_all"]) == 0
    line = [s for s in capsys.readouterr().out.splitlines() if s.startswith("| vbpr")][0]
    assert "+0.0500 [+0.0500, +0.0500]" in line and line.endswith("| 200 |")
    other = _run(tmp_path / "c", users[::-1].copy(), auc)
    with pytest.raises(SystemExit, match="different users"):
        compare_runs.main([a, other, "--dataset", "garments", "--metrics", "auc_all"])
    moved = _run(tmp_path / "d", users, auc, items=users + 1)
    with pytest.raises(SystemExit, match="different items"):
        compare_runs.main([a, moved, "--dataset", "garments", "--metrics", "auc_all"])
