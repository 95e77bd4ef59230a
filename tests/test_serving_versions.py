"""Odd version folders, failed loads, labels and misconfigured base paths (issue 17, items 4, 5, 9, 10)."""

import logging
import os
import shutil
import time

import tfmodels  # noqa: F401

import grpc
import pytest

from export import signatures as S
import serving_fixtures as testing
from serving.client import GrpcClient
from serving.config import parse_model_config
from serving.errors import ServingError
from serving.manager import ModelManager, State
from serving.server import ModelServer


def _config(root, extra=""):
    return parse_model_config(f'model_config_list {{ config {{ name: "recommender" base_path: "{root}" {extra} }} }}')


def _copy_v1(root, name):
    shutil.copytree(f"{testing.fixture_models()}/{S.RECOMMENDER}/1", os.path.join(root, name))


def _states(manager):
    return {v: s for v, s, _ in manager.status(S.RECOMMENDER)}


def test_only_ascii_int64_folder_names_are_versions(tmp_path, caplog):
    root = str(tmp_path / S.RECOMMENDER)
    for name in ("1", "99999999999999999999", "\u00b2", "\u0661", ".tmp-4-abc"):  # ², Arabic-Indic one
        _copy_v1(root, name)
    m = ModelManager(_config(root, "model_version_policy { all {} }"))
    with caplog.at_level(logging.WARNING, logger="serving"):
        m.poll()
        m.poll()  # skipped names are logged once, not on every poll
    assert _states(m) == {1: State.AVAILABLE} and m.resolve(S.RECOMMENDER).version == 1
    skipped = [r.getMessage() for r in caplog.records if "skipping folder" in r.getMessage()]
    assert len(skipped) == 4, skipped
    assert any("99999999999999999999" in s for s in skipped) and any("\u0661" in s for s in skipped)


def test_versions_gone_from_disk_are_forgotten(tmp_path):
    root = tmp_path / S.RECOMMENDER
    _copy_v1(str(root), "1")
    m = ModelManager(_config(root), max_load_retries=0)
    m.poll()
    (root / "7").mkdir()
    (root / "7" / "saved_model.pb").write_bytes(b"garbage")
    m.poll()
    assert _states(m) == {7: State.END, 1: State.AVAILABLE}  # 7 failed; 1 keeps serving
    shutil.rmtree(root / "7")
    m.poll()
    assert _states(m) == {1: State.AVAILABLE}


def test_failed_load_is_retried_with_bounded_backoff(tmp_path, caplog):
    root = tmp_path / S.RECOMMENDER
    _copy_v1(str(root), "1")
    m = ModelManager(_config(root), max_load_retries=2, load_retry_seconds=0.1)
    m.poll()
    (root / "2").mkdir()
    (root / "2" / "saved_model.pb").write_bytes(b"garbage")  # unchanged files: retried on the clock only
    with caplog.at_level(logging.ERROR, logger="serving"):
        deadline = time.monotonic() + 1.5  # tries at 0, 0.1, 0.3 s; none after
        while time.monotonic() < deadline:
            m.poll()
            time.sleep(0.02)
    attempts = [r.getMessage() for r in caplog.records if "version 2 failed to load" in r.getMessage()]
    assert len(attempts) == 3, attempts
    assert "2 retries left" in attempts[0] and "no retries left" in attempts[-1]
    assert m.resolve(S.RECOMMENDER).version == 1  # the previous version serves meanwhile


def test_non_atomic_copy_loads_once_complete_with_the_old_version_gone(tmp_path):
    """saved_model.pb lands before variables/ (rsync, bucket sync); the older version is deleted."""
    root = tmp_path / S.RECOMMENDER
    _copy_v1(str(root), "1")
    m = ModelManager(_config(root), load_retry_seconds=60)  # a retry on the clock would come too late
    m.poll()
    src = f"{testing.fixture_models()}/{S.RECOMMENDER}/1"
    (root / "2" / "variables").mkdir(parents=True)
    shutil.copy(f"{src}/saved_model.pb", root / "2")
    m.poll()
    assert _states(m)[2] == State.END and m.resolve(S.RECOMMENDER).version == 1
    shutil.rmtree(root / "1")  # the operator retires v1
    stamp = os.stat(root / "2").st_mtime_ns
    for f in os.listdir(f"{src}/variables"):  # the files arrive; the version folder itself is unchanged
        shutil.copy(f"{src}/variables/{f}", root / "2" / "variables")
    assert os.stat(root / "2").st_mtime_ns == stamp
    m.poll()  # its files changed: retried at once
    assert _states(m) == {2: State.AVAILABLE} and m.resolve(S.RECOMMENDER).version == 2


def test_labels_follow_tf_serving(tmp_path):
    root = tmp_path / S.RECOMMENDER
    _copy_v1(str(root), "1")
    bad = _config(root, 'version_labels { key: "canary" value: 5 }')
    with pytest.raises(ValueError, match="label 'canary' of model 'recommender' points to version 5"):
        ModelServer(bad, port=0, rest_port=None, poll_seconds=0).start()
    server = ModelServer(_config(root), port=0, rest_port=None, poll_seconds=0).start()
    c = GrpcClient(f"127.0.0.1:{server.grpc_port}", timeout=30, retries=0)
    try:
        with pytest.raises(ServingError) as e:
            c.reload_config(bad)
        assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION and "canary" in e.value.message
        with pytest.raises(ServingError) as e:
            c.score(["u1"], ["i1"], label="nope")
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "nope" in e.value.message
    finally:
        c.close()
        server.stop()
    started = ModelServer(bad, port=0, rest_port=None, poll_seconds=0, allow_labels_for_unavailable=True).start()
    started.stop()


def test_reload_config_can_be_disabled(tmp_path):
    server = ModelServer(_config(tmp_path), port=0, rest_port=None, poll_seconds=0,
                         allow_reload_config=False).start()
    c = GrpcClient(f"127.0.0.1:{server.grpc_port}", timeout=30, retries=0)
    try:
        with pytest.raises(ServingError) as e:
            c.reload_config(_config(tmp_path))
        assert e.value.code == grpc.StatusCode.PERMISSION_DENIED
    finally:
        c.close()
        server.stop()


def test_misconfigured_base_paths_are_logged_at_start(tmp_path, caplog):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    empty = tmp_path / "empty"
    empty.mkdir()
    paths = {"missing": (tmp_path / "nope", "does not exist"), "file": (a_file, "is not a folder"),
             "loop": (loop, "cannot list base path"), "empty": (empty, "no versions found")}
    text = "".join(f'config {{ name: "{n}" base_path: "{p}" }} ' for n, (p, _) in paths.items())
    with caplog.at_level(logging.WARNING, logger="serving"):
        server = ModelServer(parse_model_config(f"model_config_list {{ {text} }}"), port=0, rest_port=None,
                             poll_seconds=0).start()
        server.stop()
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("not serving from model")]
    for name, (path, words) in paths.items():
        assert any(f"model {name}:" in s and words in s and str(path) in s for s in said), (name, said)
