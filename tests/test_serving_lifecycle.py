"""Versions appearing while serving, config reloads, graceful shutdown on SIGTERM."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import tfmodels  # noqa: F401

import grpc
import pytest

from export import signatures as S
import serving_fixtures as testing
import serving_synthetic as synthetic
from serving.client import GrpcClient, RestClient
from serving.config import parse_model_config
from serving.errors import ServingError


def _score_request(client):
    return client.predict_request(S.RECOMMENDER, {"user_id": ["u1", "u2"], "item_id": ["i1", "i2"]},
                                  signature=S.SCORE)


@pytest.mark.parametrize("kind", testing.KINDS)
def test_new_version_is_picked_up_without_failed_requests(tmp_path, kind):
    if kind == "tensorflow_model_server" and shutil.which(kind) is None:
        pytest.skip("tensorflow_model_server is not on PATH (cannot be installed here)")
    base = testing.copy_models(str(tmp_path / "models"))
    server = testing.start_server(kind, testing.models_config(base), poll_seconds=0.2)
    grpc_client = GrpcClient(server.grpc_target, timeout=30)
    rest_client = RestClient(server.rest_url, timeout=30)
    versions, errors, calls = [], [], [0]
    stop = threading.Event()

    def grpc_loop(seen):
        request = _score_request(grpc_client)
        while not stop.is_set():
            try:
                r = grpc_client.prediction.Predict(request, timeout=30)
                seen.append(r.model_spec.version.value)
                versions.append(seen[-1])
            except grpc.RpcError as e:
                errors.append(f"grpc {e.code()}: {e.details()}")
            calls[0] += 1

    def rest_loop():
        while not stop.is_set():
            try:
                rest_client.score(["u3"], ["i3"])
            except ServingError as e:
                errors.append(f"rest {e}")
            calls[0] += 1

    per_thread = [[] for _ in range(3)]
    threads = [threading.Thread(target=grpc_loop, args=(seen,)) for seen in per_thread]
    threads.append(threading.Thread(target=rest_loop))
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)
        synthetic.export_recommender(base, 2, seed=7)  # atomic: temp folder renamed into place
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not versions or versions[-1] != 2):
            time.sleep(0.1)
        time.sleep(1.0)  # keep calling after the switch (v1 retired)
    finally:
        stop.set()
        for t in threads:
            t.join()
    status = grpc_client.status(S.RECOMMENDER)
    server.stop()
    assert errors == []
    assert calls[0] > 50
    assert versions[0] == 1 and versions[-1] == 2
    for seen in per_thread:  # each caller sees v1 then v2, never v1 again
        assert seen == sorted(seen) and seen[-1] == 2
    assert {s["version"]: s["state"] for s in status} == {2: "AVAILABLE", 1: "END"}


def test_reload_config_adds_and_removes_models(tmp_path):
    base = testing.fixture_models()
    only_rec = testing.models_config(base, str(tmp_path / "rec.config"))
    with open(only_rec) as f:
        text = f.read()
    server = testing.start_server("embedded", only_rec, poll_seconds=0)
    c = GrpcClient(server.grpc_target, timeout=30)
    try:
        assert c.generate("top", 1).image.shape[0] == 1  # both models at first
        designer_only = parse_model_config(
            f'model_config_list {{ config {{ name: "designer" base_path: "{base}/designer" }} }}')
        c.reload_config(designer_only)
        with pytest.raises(ServingError) as e:
            c.score(["u1"], ["i1"])
        assert e.value.code == grpc.StatusCode.NOT_FOUND
        c.reload_config(parse_model_config(text))
        assert c.score(["u1"], ["i1"]).known.tolist() == [True]
        from tensorflow_serving.config import model_server_config_pb2

        bad = model_server_config_pb2.ModelServerConfig()
        bad.model_config_list.config.add(name="x")  # no base_path
        with pytest.raises(ServingError, match="base_path"):
            c.reload_config(bad)
    finally:
        c.close()
        server.stop()


def test_client_retries_while_server_starts(tmp_path):
    """UNAVAILABLE (nothing listening yet) is retried until the deadline."""
    port = testing.free_port()
    c = GrpcClient(f"127.0.0.1:{port}", timeout=0.5, retries=2, backoff=0.05)
    t0 = time.monotonic()
    with pytest.raises(ServingError) as e:
        c.status(S.RECOMMENDER)
    assert e.value.code == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - t0 < 3
    c.close()


@pytest.mark.slow
def test_cli_serve_stops_gracefully_on_sigterm(tmp_path):
    cfg = testing.models_config(testing.fixture_models(), str(tmp_path / "models.config"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfmodels", "serve", "--model-config", cfg, "--port", "0", "--rest-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = ""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not line.startswith("serving gRPC"):
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "server exited early"
        parts = line.split()
        grpc_target, rest = parts[2], parts[4]
        assert grpc_target.startswith("127.0.0.1:")
        c = GrpcClient(grpc_target)
        assert c.score(["u1"], ["i1"]).known.tolist() == [True]
        assert RestClient(f"http://{rest}").status(S.RECOMMENDER)[0]["state"] == "AVAILABLE"
        result = {}
        slow = threading.Thread(target=lambda: result.setdefault(
            "d", c.design("u1", "top", starts=64, steps=300, seed=0)))
        slow.start()
        time.sleep(0.3)  # the design call is in flight
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        slow.join(timeout=30)
        assert proc.stdout.read().strip().endswith("stopped")
        # An in-flight call either completed or (if it had not reached the server) failed cleanly.
        assert "d" not in result or result["d"].image.shape[0] == 64
    finally:
        if proc.poll() is None:
            proc.kill()
