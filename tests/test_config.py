"""Config presets, --set overrides and the tf-keras guard."""

import json
import os
import subprocess
import sys

import pytest

from tfmodels import config, workdir


def test_presets_differ_and_paper_matches_published_setting():
    paper, cpu, tiny = config.paper(), config.cpu(), config.tiny()
    assert paper.data.resolution == 224 and paper.model.embedding_dim == 100
    assert paper.train.batch_size == 128 and paper.train.learning_rate == 1e-4
    assert paper.gan.noise_dim == 256 and paper.gan.resolution == 64
    assert tiny.data.resolution < cpu.data.resolution < paper.data.resolution


def test_overrides_convert_types():
    cfg = config.apply_overrides(config.tiny(), ["train.steps=7", "train.learning_rate=0.5",
                                                 "data.skip_bad_images=true", "data.dataset=hm"])
    assert cfg.train.steps == 7 and isinstance(cfg.train.steps, int)
    assert cfg.train.learning_rate == 0.5
    assert cfg.data.skip_bad_images is True
    assert cfg.data.dataset == "hm"


@pytest.mark.parametrize("bad, message", [
    ("train.stepz=3", "unknown key 'stepz'"),
    ("trian.steps=3", "unknown key 'trian'"),
    ("train.steps=many", "expected int"),
    ("data.skip_bad_images=maybe", "expected a boolean"),
    ("steps", "expected section.field=value"),
    ("train=3", "expected section.field=value"),
])
def test_bad_overrides_are_rejected(bad, message):
    with pytest.raises(ValueError, match=message):
        config.apply_overrides(config.tiny(), [bad])


def test_save_and_load_round_trip(tmp_path):
    cfg = config.apply_overrides(config.cpu(), ["model.width=0.25"])
    path = workdir.save_config(cfg, str(tmp_path))
    assert json.load(open(path))["model"]["width"] == 0.25
    assert workdir.load_config(str(tmp_path)) == cfg


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset"):
        config.preset("huge")


def test_keras3_already_imported_is_a_clear_error():
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    code = "import tensorflow\nimport tfmodels\n"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "TF_USE_LEGACY_KERAS=1" in out.stderr and "Import tfmodels before tensorflow" in out.stderr


def test_tf_keras_is_keras2():
    import tensorflow as tf
    assert tf.keras.__name__.startswith("tf_keras") or tf.keras.__name__.startswith("keras.api._v2")


def test_renamed_keys_of_earlier_versions_still_work():
    cfg = config.apply_overrides(config.tiny(), ["baseline.classifier_steps=7", "classifier.l2=0.5"])
    assert cfg.classifier.steps == 7 and cfg.classifier.l2 == 0.5
    old = config.to_dict(config.tiny())
    old["baseline"]["classifier_learning_rate"] = 0.02  # as an earlier config.json had it
    del old["classifier"]
    assert config.from_dict(old).classifier.learning_rate == 0.02
    with pytest.raises(ValueError, match="unknown key baseline.classifier_speed"):
        config.from_dict({"baseline": {"classifier_speed": 1}})


def test_a_saved_config_from_before_a_default_changed_keeps_its_behaviour():
    assert config.Config().gan.ema > 0 and config.paper().gan.ema == 0.0
    old = config.to_dict(config.cpu())
    del old["gan"]["ema"]  # a GAN work directory written before gan.ema existed: no averaged generator
    assert config.from_dict(old).gan.ema == 0.0
    assert config.Config().gan.upsample == "transpose4"
    del old["gan"]["upsample"]  # written before gan.upsample existed: 5x5 transposed convolutions
    assert config.from_dict(old).gan.upsample == "transpose" == config.paper().gan.upsample
    assert config.from_dict(config.to_dict(config.cpu())).gan.ema == config.cpu().gan.ema
    assert config.Config().gan.reuse_fakes and not config.paper().gan.reuse_fakes
    del old["gan"]["reuse_fakes"]  # written before gan.reuse_fakes existed: a fresh batch for each G update
    assert config.from_dict(old).gan.reuse_fakes is False
