"""`tfmodels design` / `tfmodels modify` end to end on a tiny generic dataset the test writes."""

import tfmodels  # noqa: F401  (sets tf-keras before TensorFlow)
import json
import os

import numpy as np
import pytest
from PIL import Image

from tfmodels import config as config_lib
from tfmodels import workdir as workdir_lib
from tfmodels.cli import main

CATEGORIES = ["top", "shoe", "bag"]


def _write_generic(folder, n_items=24, n_users=10, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(folder, "img"), exist_ok=True)
    rows = []
    for i in range(n_items):
        c = i % 3
        img = np.full((32, 32, 3), 235, np.uint8)
        colour = rng.integers(0, 200, 3)
        y0, x0 = [(4, 4), (16, 2), (8, 12)][c]
        img[y0:y0 + 14, x0:x0 + 16] = colour
        path = f"img/{i}.png"
        Image.fromarray(img).save(os.path.join(folder, path))
        rows.append(f"item{i},{path},{CATEGORIES[c]}")
    with open(os.path.join(folder, "items.csv"), "w") as f:
        f.write("item_id,image_path,category\n" + "\n".join(rows) + "\n")
    lines = []
    for u in range(n_users):
        for t, i in enumerate(rng.choice(n_items, size=6, replace=False)):
            lines.append(f"user{u},item{i},{t}")
    with open(os.path.join(folder, "interactions.csv"), "w") as f:
        f.write("user_id,item_id,timestamp\n" + "\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
    from tfmodels.training.classifier import train_classifier
    from tfmodels.training.gan import train_gan
    from tfmodels.training.recommender import train_dvbpr

    root = tmp_path_factory.mktemp("design_cli")
    data_dir = str(root / "data")
    _write_generic(data_dir)
    cfg = config_lib.tiny()
    cfg.data.dataset, cfg.data.data_dir, cfg.data.cache_dir = "generic", data_dir, str(root / "cache")
    cfg.train.steps, cfg.train.eval_every, cfg.train.checkpoint_every = 4, 4, 4
    cfg.train.steps_per_loop, cfg.train.batch_size = 4, 8
    cfg.gan.resolution, cfg.gan.steps, cfg.gan.batch_size, cfg.gan.sample_every = 16, 2, 8, 2
    cfg.train.histogram_every = 0
    cfg.design.invert_steps = 7  # recorded by the GAN run, not the default: build_designer must pick it up
    rec, gan, clf = str(root / "rec"), str(root / "gan"), str(root / "clf")
    train_dvbpr(cfg, rec)
    train_gan(cfg, gan)
    cfg.classifier.steps = 4
    train_classifier(cfg, clf)
    return rec, gan, root, clf


@pytest.mark.slow
def test_design_writes_grid_and_prints_scores(workdirs, capsys):
    rec, gan, root, _ = workdirs
    out = str(root / "grid.png")
    code = main(["design", "--rec-workdir", rec, "--gan-workdir", gan, "--user", "user3", "--category", "Shoe",
                 "--starts", "3", "--steps", "2", "--out", out])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["category"] == "shoe" and len(report["scores"]) == 3
    assert report["catalogue"]["items"] == 8
    assert report["catalogue"]["max"] >= report["catalogue"]["p90"] >= report["catalogue"]["mean"] - 1e-6
    assert all(np.isfinite(report["scores"]))
    assert Image.open(out).size[0] > 3 * 16


@pytest.mark.slow
def test_modify_writes_before_after(workdirs, capsys):
    rec, gan, root, _ = workdirs
    out = str(root / "ba.png")
    code = main(["modify", "--rec-workdir", rec, "--gan-workdir", gan, "--user", "user1", "--item", "item4",
                 "--invert-steps", "3", "--steps", "2", "--starts", "2", "--out", out])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["category"] == "shoe"  # item4: 4 % 3 = 1
    for key in ("score_item", "score_before", "score_after", "l1_before", "l1_after"):
        assert np.isfinite(report[key])
    assert os.path.exists(out)


@pytest.mark.slow
@pytest.mark.parametrize("flag, value, message", [
    ("--user", "nobody", "unknown user 'nobody'"),
    ("--category", "hat", "unknown category 'hat'"),
    ("--steps", "0", "--steps must be"),
])
def test_bad_ids_are_clear_errors(workdirs, capsys, flag, value, message):
    rec, gan, root, _ = workdirs
    args = {"--user": "user1", "--category": "top", "--steps": "1"}
    args[flag] = value
    argv = ["design", "--rec-workdir", rec, "--gan-workdir", gan, "--out", str(root / "x.png")]
    for k, v in args.items():
        argv += [k, v]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_design_with_category_term_and_sphere(workdirs, capsys):
    rec, gan, root, clf = workdirs
    code = main(["design", "--rec-workdir", rec, "--gan-workdir", gan, "--user", "user2", "--category", "bag",
                 "--starts", "3", "--steps", "2", "--latent", "sphere", "--category-weight", "2",
                 "--classifier-workdir", clf, "--out", str(root / "cat.png")])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["latent"] == "sphere" and report["category_weight"] == 2.0
    assert len(report["off_category"]) == 3 and all(x > 0 for x in report["off_category"])
    np.testing.assert_allclose(report["objective"], np.array(report["scores"]) - np.array(report["realism"])
                               - 2.0 * np.array(report["off_category"]), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_design_with_trust_region_and_realism_floor(workdirs, capsys):
    rec, gan, root, _ = workdirs
    code = main(["design", "--rec-workdir", rec, "--gan-workdir", gan, "--user", "user2", "--category", "bag",
                 "--starts", "3", "--steps", "3", "--trust-radius", "0.2", "--realism-floor", "0.9",
                 "--floor-weight", "5", "--out", str(root / "guards.png")])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["trust_radius"] == 0.2 and report["realism_floor"] == 0.9
    np.testing.assert_allclose(report["objective"], np.array(report["scores"]) - np.array(report["realism"])
                               - 5.0 * np.array(report["over_floor"]), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("extra, message", [
    (["--category-weight", "2"], "needs a category classifier"),
    (["--category-weight", "2", "--classifier-workdir", "REC"], "not a classifier"),
])
def test_category_term_errors(workdirs, capsys, extra, message):
    rec, gan, root, _ = workdirs
    argv = ["design", "--rec-workdir", rec, "--gan-workdir", gan, "--user", "user1", "--category", "top",
            "--steps", "1", "--out", str(root / "z.png")] + [rec if x == "REC" else x for x in extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_modify_unknown_item(workdirs, capsys):
    rec, gan, root, _ = workdirs
    assert main(["modify", "--rec-workdir", rec, "--gan-workdir", gan, "--user", "user1", "--item", "nope",
                 "--out", str(root / "y.png")]) == 2
    assert "unknown item 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_build_designer_settings_and_the_cli_agree(workdirs, capsys):
    from tfmodels.config import DesignConfig
    from tfmodels.design import build_designer

    rec, gan, root, clf = workdirs
    # Defaults <- the GAN run's recorded design section.
    designer = build_designer(rec, gan)
    assert designer.config == workdir_lib.load_config(gan).design and designer.config.invert_steps == 7
    assert designer.classifier is None
    # A whole DesignConfig replaces the recorded one; classifier_workdir loads the classifier.
    explicit = build_designer(rec, gan, design=DesignConfig(starts=2, steps=3), classifier_workdir=clf)
    assert explicit.config.invert_steps == DesignConfig().invert_steps and explicit.config.classifier_from == clf
    assert explicit.classifier is not None
    r = explicit.design("user3", "shoe", category_weight=1.0)
    assert r.images.shape == (2, 16, 16, 3) and r.history.shape == (4, 2) and np.all(r.off_category > 0)
    # `tfmodels design` is Designer.design with the flags as per-call overrides.
    want = designer.design("user3", "Shoe", seed=1, starts=3, steps=2)
    assert main(["design", "--rec-workdir", rec, "--gan-workdir", gan, "--user", "user3", "--category", "Shoe",
                 "--starts", "3", "--steps", "2", "--seed", "1", "--out", str(root / "same.png")]) == 0
    report = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(report["scores"], want.scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(report["catalogue"]["max"], designer.item_scores("user3",
                               designer.items_of_category("shoe")).max(), rtol=1e-5, atol=1e-6)
