"""Server-side batching (same answers as without) and a bounded soak at concurrency 32."""

import os
import re
import threading
import time
from concurrent import futures

import tfmodels  # noqa: F401

import numpy as np
import pytest

import serving_fixtures as testing
from serving.batching import Batcher
from serving.client import GrpcClient, RestClient
from serving.config import BatchingParameters


def _workload(i):
    rng = np.random.default_rng(i)
    n = int(rng.integers(1, 5))
    users = [f"u{u}" for u in rng.integers(0, 60, n)]  # some unknown (>= 50)
    items = [f"i{v}" for v in rng.integers(0, 220, n)]
    return users, items


def _run_all(target, n_requests, threads):
    c = GrpcClient(target, timeout=30)

    def one(i):
        users, items = _workload(i)
        if i % 7 == 0:
            return ("rec", c.recommend(users[:1], k=5, exclude_purchased=bool(i % 2)).item_ids)
        if i % 5 == 0:
            return ("img", c.score_images(users, [testing.png_bytes(i + j) for j in range(len(users))]).score)
        s = c.score(users, items)
        return ("score", s.score, s.known)

    with futures.ThreadPoolExecutor(threads) as pool:
        out = list(pool.map(one, range(n_requests)))
    c.close()
    return out


def _batch_count(metrics_text):
    m = re.findall(r'tfmodels_serving_batch_size_count\{model="recommender",signature="score"\} (\d+)', metrics_text)
    return int(m[0]) if m else 0


def test_batching_gives_the_same_results(tmp_path):
    cfg = testing.models_config(testing.fixture_models(), str(tmp_path / "models.config"))
    plain = testing.start_server("embedded", cfg, poll_seconds=0)
    params = BatchingParameters(max_batch_size=16, batch_timeout_micros=5000, num_batch_threads=2,
                                max_enqueued_batches=100)
    batched = testing.start_server("embedded", cfg, batching=params, poll_seconds=0)
    try:
        want = _run_all(plain.grpc_target, 300, 16)
        got = _run_all(batched.grpc_target, 300, 16)
        text = RestClient(batched.rest_url).prometheus_metrics()
    finally:
        plain.stop()
        batched.stop()
    for w, g in zip(want, got):
        assert w[0] == g[0]
        if w[0] == "rec":
            assert w[1] == g[1]
        else:
            np.testing.assert_allclose(w[1], g[1], rtol=1e-5, atol=1e-6)
    n_score = sum(1 for w in want if w[0] == "score")
    batches = _batch_count(text)
    assert 0 < batches < n_score, f"{batches} batches for {n_score} score requests: nothing was merged"


def test_batcher_splits_rows_back_in_order():
    """Unit check of the scheduler with a fake model: rows return to their callers."""
    import tensorflow as tf

    class Fake:
        name = "fake"
        input_specs = {"sig": {"x": tf.TensorSpec([None, 2], tf.float32)}}
        calls = []

        def run(self, key, inputs):
            self.calls.append(len(inputs["x"]))
            time.sleep(0.002)
            return {"y": inputs["x"].sum(-1), "z": inputs["x"] * 2}

    fake = Fake()
    b = Batcher(BatchingParameters(max_batch_size=8, batch_timeout_micros=20000, num_batch_threads=1,
                                   allowed_batch_sizes=[4, 8]))
    xs = [np.full((1 + i % 3, 2), i, np.float32) for i in range(40)]
    with futures.ThreadPoolExecutor(16) as pool:
        outs = list(pool.map(lambda x: b.run(fake, "sig", {"x": x}), xs))
    b.stop()
    for x, o in zip(xs, outs):
        np.testing.assert_array_equal(o["y"], x.sum(-1))
        np.testing.assert_array_equal(o["z"], x * 2)
    assert all(c in (4, 8) for c in fake.calls), fake.calls  # padded to allowed sizes
    assert len(fake.calls) < 40


@pytest.mark.slow
def test_soak_concurrency_32_zero_errors(tmp_path):
    seconds = float(os.environ.get("SERVING_SOAK_SECONDS", "20"))
    cfg = testing.models_config(testing.fixture_models(), str(tmp_path / "models.config"))
    server = testing.start_server("embedded", cfg, poll_seconds=0.5)
    grpc_client = GrpcClient(server.grpc_target, timeout=30, retries=0)
    rest_client = RestClient(server.rest_url, timeout=30, retries=0)
    errors, counts = [], [0] * 32
    stop = time.monotonic() + seconds

    def worker(w):
        c = rest_client if w % 4 == 3 else grpc_client
        i = w
        while time.monotonic() < stop:
            users, items = _workload(i)
            try:
                if i % 3 == 0:
                    r = c.recommend(users[:1], k=10)
                    assert len(r.item_ids[0]) == 10
                elif i % 11 == 0:
                    c.generate(("top", "trousers", "bag")[i % 3], 2, seed=i)
                else:
                    s = c.score(users, items)
                    assert s.score.shape == (len(users),)
            except Exception as e:  # any failure counts
                errors.append(f"{type(e).__name__}: {e}")
            counts[w] += 1
            i += 32

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(32)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    server.stop()
    total = sum(counts)
    print(f"soak: {total} requests in {elapsed:.1f}s at concurrency 32 = {total / elapsed:.0f} req/s, "
          f"{len(errors)} errors")
    assert errors == [], errors[:5]
    assert min(counts) > 0 and total > 200
