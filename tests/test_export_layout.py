"""Version folders: next version, never overwrite, atomic rename (killed exports leave no version), CLI."""

import tfmodels  # noqa: F401  (tf-keras before TensorFlow)

import hashlib
import json
import os
import shutil
import signal
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from export import layout
from export import signatures as S
from test_export_support import PYTHON, REPO, exported


class _Tiny(tf.Module):
    def __init__(self, value=2.0):
        super().__init__()
        self.w = tf.Variable(value)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def f(self, x):
        return {"y": self.w * x}


def _save(base, **kw):
    m = _Tiny()
    return layout.save_version(m, base, "tiny", {"serving_default": m.f.get_concrete_function()}, **kw)


def _tree_digest(folder: str) -> str:
    h = hashlib.sha1()
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            path = os.path.join(root, name)
            h.update(os.path.relpath(path, folder).encode())
            h.update(open(path, "rb").read())
    return h.hexdigest()


def test_versions_count_up_and_are_never_overwritten(tmp_path):
    base = str(tmp_path)
    assert _save(base).endswith(os.path.join("tiny", "1"))
    digest = _tree_digest(os.path.join(base, "tiny", "1"))
    assert _save(base).endswith(os.path.join("tiny", "2"))
    assert _save(base, version=7).endswith(os.path.join("tiny", "7"))
    assert _save(base).endswith(os.path.join("tiny", "8"))
    with pytest.raises(ValueError, match="exists already"):
        _save(base, version=2)
    with pytest.raises(ValueError, match="positive integer"):
        _save(base, version=0)
    assert layout.existing_versions(os.path.join(base, "tiny")) == [1, 2, 7, 8]
    assert _tree_digest(os.path.join(base, "tiny", "1")) == digest
    assert not [n for n in os.listdir(os.path.join(base, "tiny")) if not n.isdigit()]
    loaded = tf.saved_model.load(os.path.join(base, "tiny", "8"))
    assert loaded.signatures["serving_default"](x=tf.constant([3.0]))["y"].numpy().tolist() == [6.0]


def test_an_export_failing_before_the_rename_leaves_nothing(tmp_path, monkeypatch):
    base = str(tmp_path)
    _save(base)
    seen = []

    def boom(tmp_dir):
        seen.append(os.path.exists(os.path.join(tmp_dir, "saved_model.pb")))
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(layout, "_before_commit", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _save(base, extra_files={"model_card.json": {"a": 1}})
    assert seen == [True]  # the SavedModel was complete in its temporary folder
    assert sorted(os.listdir(os.path.join(base, "tiny"))) == ["1"]


_KILLED_SCRIPT = r"""
import sys, time
sys.path.insert(0, sys.argv[2])
import tfmodels
import tensorflow as tf
from export import layout

class M(tf.Module):
    def __init__(self):
        super().__init__()
        self.w = tf.Variable(1.0)
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def f(self, x):
        return {"y": self.w * x}

def hang(tmp_dir):
    print("WRITTEN", tmp_dir, flush=True)
    time.sleep(600)

layout._before_commit = hang
m = M()
layout.save_version(m, sys.argv[1], "tiny", {"serving_default": m.f.get_concrete_function()})
"""


def test_a_killed_export_leaves_no_version_and_is_cleaned_up_next_time(tmp_path):
    base = str(tmp_path)
    _save(base)
    proc = subprocess.Popen([PYTHON, "-c", _KILLED_SCRIPT, base, REPO], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        line = proc.stdout.readline()
        assert line.startswith("WRITTEN"), line
        tmp_dir = line.split()[1]
        assert os.path.exists(os.path.join(tmp_dir, "saved_model.pb"))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    names = os.listdir(os.path.join(base, "tiny"))
    assert [n for n in names if n.isdigit()] == ["1"]  # no version folder from the killed export
    assert os.path.basename(tmp_dir) in names  # only its hidden temporary folder, which servers ignore
    assert _save(base).endswith(os.path.join("tiny", "2"))
    assert sorted(os.listdir(os.path.join(base, "tiny"))) == ["1", "2"]  # the stale folder was removed


def test_models_config_lists_models_with_versions(tmp_path):
    from serving.config import parse_model_config

    base = str(tmp_path)
    _save(base)
    os.makedirs(os.path.join(base, "empty"))
    path = layout.write_models_config(base)
    cfg = parse_model_config(open(path).read())
    assert [(m.name, m.base_path, m.model_platform) for m in cfg.model_config_list.config] == \
        [("tiny", os.path.join(os.path.abspath(base), "tiny"), "tensorflow")]
    layout.write_models_config(base, ["tiny"], path=str(tmp_path / "docker.config"), base_path_prefix="/models")
    cfg = parse_model_config(open(tmp_path / "docker.config").read())
    assert cfg.model_config_list.config[0].base_path == "/models/tiny"


@pytest.mark.slow
def test_cli_second_export_is_the_next_version_and_the_first_stays_intact(capsys, tmp_path):
    from tfmodels.cli import main

    ex = exported()
    base = str(tmp_path / "export")
    shutil.copytree(ex["base"], base)  # the shared export stays at version 1 for the other tests
    before = {m: _tree_digest(os.path.join(base, m, "1")) for m in S.MODEL_NAMES}
    # Without --gan-workdir only the recommender and the item encoder are exported.
    assert main(["export", "--rec-workdir", ex["rec"], "--export-base", base]) == 0
    out = capsys.readouterr().out
    written = json.loads(out[out.rindex("\n{") + 1 if "\n{" in out else 0:])  # the JSON object printed last
    assert written[S.RECOMMENDER] == os.path.join(base, S.RECOMMENDER, "2")
    assert written[S.ITEM_ENCODER] == os.path.join(base, S.ITEM_ENCODER, "2")
    assert S.DESIGNER not in written
    assert {m: _tree_digest(os.path.join(base, m, "1")) for m in S.MODEL_NAMES} == before
    assert layout.existing_versions(os.path.join(base, S.DESIGNER)) == [1]
    text = open(os.path.join(base, "models.config")).read()
    assert all(f'name: "{m}"' in text for m in S.MODEL_NAMES)
    # Version 2 serves the same model as version 1.
    v1 = tf.saved_model.load(os.path.join(base, S.RECOMMENDER, "1")).signatures[S.SCORE]
    v2 = tf.saved_model.load(os.path.join(base, S.RECOMMENDER, "2")).signatures[S.SCORE]
    args = dict(user_id=tf.constant(["user0", "user1"]), item_id=tf.constant(["item3", "item4"]))
    np.testing.assert_allclose(v1(**args)[S.OUT_SCORE].numpy(), v2(**args)[S.OUT_SCORE].numpy(), rtol=1e-6)
    # An explicit version that exists is a clean CLI error, and nothing changes.
    assert main(["export", "--rec-workdir", ex["rec"], "--export-base", base, "--version", "2"]) == 2
    assert "exists already" in capsys.readouterr().err
    assert layout.existing_versions(os.path.join(base, S.RECOMMENDER)) == [1, 2]
    # A missing work directory is a clean error too.
    assert main(["export", "--rec-workdir", os.path.join(base, "nope"), "--export-base", base]) == 2
    assert "does not exist" in capsys.readouterr().err
