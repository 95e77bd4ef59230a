"""Slow, idle and vanishing clients against the embedded server (issue 17, items 3, 6, 8).

Bounded: timeouts are lowered to a second or two, the long-running calls are
synthetic design calls with an absurd step count (minutes of work if nobody
stopped them), and everything talks to 127.0.0.1.
"""

import json
import os
import shutil
import socket
import threading
import time
from concurrent import futures

import tfmodels  # noqa: F401

import grpc
import numpy as np
import pytest

from export import signatures as S
import serving_fixtures as testing
import serving_synthetic as synthetic
from serving.client import GrpcClient
from serving.errors import ServingError
from serving.config import load_model_config
from serving.server import ModelServer

IDLE = 4.0  # REST header / keep-alive idle timeout of the test server (longer than the p99 measurements)
REQUEST_TIMEOUT = 2.0
ENDLESS_STEPS = 10**8  # a design call that would run for minutes


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("hostile") / "models")
    testing.copy_models(base)
    shutil.rmtree(os.path.join(base, S.DESIGNER))  # replaced by one that accepts endless steps
    synthetic.export_designer(base, 1, max_steps=ENDLESS_STEPS)
    srv = ModelServer(load_model_config(testing.models_config(base)), port=0, rest_port=0, poll_seconds=0,
                      rest_idle_timeout=IDLE, rest_body_timeout=IDLE, request_timeout=REQUEST_TIMEOUT,
                      rest_max_connections=64).start()
    yield srv
    srv.stop()


def _connect(srv):
    return socket.create_connection(("127.0.0.1", srv.rest_port), timeout=10)


def _closed_by_server(sock, within: float) -> bool:
    """True when the server closes ``sock`` within ``within`` seconds (EOF or reset)."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def _design_body(steps=ENDLESS_STEPS):
    return json.dumps({"signature_name": S.DESIGN, "inputs": {"user_id": "u1", "category": "top", "starts": 64,
                                                            "steps": steps, "eta": 1.0, "seed": 0}}).encode()


def _post_bytes(path: str, body: bytes) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


def _cpu_over(seconds: float) -> float:
    c0 = time.process_time()  # the whole process: the server runs in it
    time.sleep(seconds)
    return time.process_time() - c0


def test_slow_headers_idle_keepalive_and_tls_hello_are_closed(server):
    hello = _connect(server)  # a TLS ClientHello on the plain-HTTP port
    hello.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(32))
    keep = _connect(server)  # a keep-alive connection left idle after one request
    keep.sendall(b"GET /v1/models/recommender HTTP/1.1\r\nHost: x\r\n\r\n")
    assert keep.recv(65536).startswith(b"HTTP/1.1 200")
    dribbler = _connect(server)  # headers that never finish: one byte every 0.1 s
    t0 = time.monotonic()
    request = b"GET /v1/models/recommender HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 1000
    for b in request:
        try:
            dribbler.sendall(bytes([b]))
        except OSError:
            break
        if time.monotonic() - t0 > IDLE + 1.5:
            break
        time.sleep(0.1)
    for s in (dribbler, hello, keep):
        assert _closed_by_server(s, 0.5)
        s.close()
    assert time.monotonic() - t0 < IDLE + 2.5


def test_connections_beyond_the_cap_are_closed(tmp_path):
    cfg = testing.models_config(testing.fixture_models(), str(tmp_path / "models.config"))
    srv = ModelServer(load_model_config(cfg), port=0, rest_port=0, poll_seconds=0, rest_max_connections=4,
                      rest_idle_timeout=IDLE).start()
    try:
        held = [_connect(srv) for _ in range(4)]
        time.sleep(0.2)
        extra = _connect(srv)
        assert _closed_by_server(extra, 1.0)  # at once, while the four idle ones are still open
        assert not _closed_by_server(held[0], 0.1)
        time.sleep(IDLE + 0.5)  # the idle ones time out; then there is room again
        again = _connect(srv)
        again.sendall(b"GET /v1/models/recommender HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert again.recv(65536).startswith(b"HTTP/1.1 200")
        for s in held + [extra, again]:
            s.close()
    finally:
        srv.stop()


def test_no_server_banner(server):
    s = _connect(server)
    s.sendall(b"GET /v1/models/recommender HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head = s.recv(65536).split(b"\r\n\r\n")[0].lower()
    s.close()
    assert b"\r\nserver:" not in head and b"python" not in head


def test_deadlines_and_disconnects_stop_the_computation(server):
    c = GrpcClient(f"127.0.0.1:{server.grpc_port}", timeout=0.5, retries=0)
    t0 = time.monotonic()
    with pytest.raises(ServingError) as e:
        c.design("u1", "top", starts=64, steps=ENDLESS_STEPS)
    assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED and time.monotonic() - t0 < 2
    assert _cpu_over(1.0) < 0.3, "the server kept computing after the gRPC deadline"
    # REST: the client sends a design call and goes away.
    s = _connect(server)
    s.sendall(_post_bytes(f"/v1/models/{S.DESIGNER}:predict", _design_body()))
    time.sleep(0.5)
    assert _cpu_over(0.5) > 0.2, "the REST design call was not running"
    s.close()
    time.sleep(0.3)
    assert _cpu_over(1.0) < 0.3, "the server kept computing after the REST client left"
    # REST: a call longer than the request timeout is answered 504 when its time is up.
    s = _connect(server)
    t0 = time.monotonic()
    s.sendall(_post_bytes(f"/v1/models/{S.DESIGNER}:predict", _design_body()))
    s.settimeout(REQUEST_TIMEOUT + 5)
    assert s.recv(65536).startswith(b"HTTP/1.1 504")
    assert time.monotonic() - t0 < REQUEST_TIMEOUT + 2
    s.close()
    c.close()


def _p99_score(client, n=200, rounds=3) -> float:
    """p99 latency of ``score`` calls, the best of ``rounds``: the machine is shared, and a
    burst of someone else's work must not read as ours (calls left running would slow
    every round: they run for minutes)."""
    best = float("inf")
    for _ in range(rounds):
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            client.score([f"u{i % 50}"], [f"i{i % 200}"])
            times.append(time.perf_counter() - t0)
        best = min(best, float(np.percentile(times, 99)))
    return best


def test_slow_clients_and_abandoned_calls_leave_score_latency_and_go_idle(server):
    score = GrpcClient(f"127.0.0.1:{server.grpc_port}", timeout=30, retries=0)
    _p99_score(score, 50, 1)  # warm
    idle_p99 = _p99_score(score)
    threads_idle = threading.active_count()

    # 50 sockets sending their headers one byte at a time, driven by one client thread.
    slow = [_connect(server) for _ in range(50)]
    t_slow = time.monotonic()
    stop = threading.Event()
    request = b"GET /v1/models/recommender HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 1000

    def dribble():
        for i in range(len(request)):
            for s in slow:
                try:
                    s.send(request[i:i + 1])
                except OSError:
                    pass
            if stop.wait(0.05):
                return

    dribbler = threading.Thread(target=dribble)
    dribbler.start()

    # 8 design calls abandoned by their clients: 4 past a gRPC deadline, 4 REST clients gone.
    def grpc_abandon(_):
        c = GrpcClient(f"127.0.0.1:{server.grpc_port}", timeout=0.3, retries=0)
        try:
            c.design("u1", "top", starts=64, steps=ENDLESS_STEPS)
        except ServingError as e:
            return e.code
        finally:
            c.close()

    def rest_abandon(_):
        s = _connect(server)
        s.sendall(_post_bytes(f"/v1/models/{S.DESIGNER}:predict", _design_body()))
        time.sleep(0.3)
        s.close()
        return "gone"

    with futures.ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda i: (grpc_abandon if i < 4 else rest_abandon)(i), range(8)))
    assert outcomes[:4] == [grpc.StatusCode.DEADLINE_EXCEEDED] * 4
    threads_attack = threading.active_count()
    busy_p99 = _p99_score(score)
    assert time.monotonic() - t_slow < IDLE, "measured after the slow sockets were closed: raise IDLE"
    # 3x, with the idle figure floored at 2 ms: on two shared cores a 1 ms p99 is scheduling noise.
    assert busy_p99 <= 3 * max(idle_p99, 0.002), (busy_p99, idle_p99)
    # No thread per slow connection (the dribbler is this test's own).
    assert threads_attack <= threads_idle + 1 + 8, (threads_idle, threads_attack)

    # Within the idle timeout the server has closed every slow socket, and nothing runs.
    deadline = time.monotonic() + IDLE + 2
    open_ones = list(slow)
    while open_ones and time.monotonic() < deadline:
        open_ones = [s for s in open_ones if not _closed_by_server(s, 0.05)]
    stop.set()
    dribbler.join()
    assert open_ones == [], f"{len(open_ones)} slow sockets still open after the idle timeout"
    assert _cpu_over(1.0) < 0.2
    # Pool threads started for the 8 calls may stay (idle) in their pools; nothing else is left.
    assert threading.active_count() <= threads_idle + 8, (threads_idle, threading.active_count())
    for s in slow:
        s.close()
    score.close()
    print(f"score p99 idle {idle_p99 * 1e3:.2f} ms, with 50 slow sockets and 8 abandoned designs "
          f"{busy_p99 * 1e3:.2f} ms; threads {threads_idle} -> {threads_attack}")


def test_rest_bodies_held_at_once_are_bounded(tmp_path):
    """With one pool thread, two bodies may be held; a third POST waits before its body is read."""
    cfg = testing.models_config(testing.fixture_models(), str(tmp_path / "models.config"))
    srv = ModelServer(load_model_config(cfg), port=0, rest_port=0, poll_seconds=0, rest_threads=1).start()
    body = json.dumps({"inputs": {"user_id": ["u1"], "item_id": ["i1"]}}).encode()
    path = f"/v1/models/{S.RECOMMENDER}:predict"
    try:
        holders = [_connect(srv) for _ in range(2)]
        for s in holders:  # headers and half a body: each holds its place
            s.sendall(_post_bytes(path, body)[: -len(body) // 2])
        time.sleep(0.3)
        third = _connect(srv)
        third.sendall(_post_bytes(path, body))
        third.settimeout(0.5)
        with pytest.raises(socket.timeout):
            third.recv(65536)
        holders[0].sendall(_post_bytes(path, body)[-len(body) // 2:])  # one body completes
        assert holders[0].recv(65536).startswith(b"HTTP/1.1 200")
        third.settimeout(10)
        assert third.recv(65536).startswith(b"HTTP/1.1 200")
        for s in holders + [third]:
            s.close()
    finally:
        srv.stop()
