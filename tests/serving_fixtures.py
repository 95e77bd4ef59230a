"""Test scaffolding: synthetic exports and servers on free ports (tests and benchmarks).

``fixture_models()`` exports the synthetic recommender and designer once per
process; ``start_server(kind, ...)`` runs either the embedded server in-process
or ``tensorflow_model_server`` as a subprocess (when it is on PATH) and returns
its endpoints.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import os
import shutil
import socket
import subprocess
import tempfile
import time

from export import signatures as S

KINDS = ("embedded", "tensorflow_model_server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@functools.lru_cache(maxsize=None)
def fixture_models() -> str:
    """Export base with recommender/1 and designer/1 (synthetic), made once per process."""
    import serving_synthetic as synthetic

    base = tempfile.mkdtemp(prefix="tfmodels-serving-")
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    synthetic.export_recommender(base, 1)
    synthetic.export_designer(base, 1)
    return base


def copy_models(dst: str) -> str:
    """A private copy of fixture_models() under dst (for tests that add versions)."""
    shutil.copytree(fixture_models(), dst)
    return dst


def models_config(base: str, path: str | None = None, **kw) -> str:
    import serving_synthetic as synthetic

    path = path or os.path.join(base, "models.config")
    names = [n for n in (S.RECOMMENDER, S.DESIGNER, S.ITEM_ENCODER) if os.path.isdir(os.path.join(base, n))]
    return synthetic.write_models_config(path, {n: os.path.join(base, n) for n in names}, **kw)


@dataclasses.dataclass
class RunningServer:
    kind: str
    grpc_target: str
    rest_url: str
    stop: object  # callable
    server: object = None  # the ModelServer for kind == "embedded"


def start_server(kind: str, config_path: str, batching=None, poll_seconds: float = 0.5,
                 max_request_bytes: int | None = None) -> RunningServer:
    """Starts a server of ``kind`` on free 127.0.0.1 ports; ``.stop()`` ends it."""
    if kind == "embedded":
        from serving.config import load_model_config
        from serving.server import DEFAULT_MAX_REQUEST_BYTES, ModelServer

        srv = ModelServer(load_model_config(config_path), port=0, rest_port=0, batching=batching,
                          poll_seconds=poll_seconds,
                          max_request_bytes=max_request_bytes or DEFAULT_MAX_REQUEST_BYTES).start()
        return RunningServer(kind, f"127.0.0.1:{srv.grpc_port}", f"http://127.0.0.1:{srv.rest_port}",
                             srv.stop, srv)
    if kind == "tensorflow_model_server":
        binary = shutil.which("tensorflow_model_server")
        if binary is None:
            raise FileNotFoundError("tensorflow_model_server is not on PATH")
        port, rest = free_port(), free_port()
        cmd = [binary, f"--port={port}", f"--rest_api_port={rest}", f"--model_config_file={config_path}",
               f"--file_system_poll_wait_seconds={max(1, int(poll_seconds))}", "--rest_api_timeout_in_ms=60000"]
        if batching is not None:
            f = os.path.join(os.path.dirname(config_path), "batching.config")
            with open(f, "w") as fh:
                fh.write(f"max_batch_size {{ value: {batching.max_batch_size} }}\n"
                         f"batch_timeout_micros {{ value: {batching.batch_timeout_micros} }}\n"
                         f"num_batch_threads {{ value: {batching.num_batch_threads} }}\n"
                         f"max_enqueued_batches {{ value: {batching.max_enqueued_batches} }}\n")
            cmd += ["--enable_batching", f"--batching_parameters_file={f}"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from serving.client import GrpcClient

        client = GrpcClient(f"127.0.0.1:{port}", timeout=5, retries=0)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if all(s["state"] == "AVAILABLE" for s in client.status(S.RECOMMENDER)):
                    break
            except Exception:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"tensorflow_model_server exited with {proc.returncode}")
            time.sleep(0.3)
        client.close()

        def stop():
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()

        return RunningServer(kind, f"127.0.0.1:{port}", f"http://127.0.0.1:{rest}", stop)
    raise ValueError(f"unknown server kind {kind!r} (choose from {KINDS})")


def png_bytes(seed: int = 0, size: int = 12) -> bytes:
    """A small random PNG."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    return tf.io.encode_png(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).numpy()


def png_claiming(height: int, width: int) -> bytes:
    """A PNG signature + IHDR claiming height x width, then a truncated IDAT: a few dozen bytes
    (a decompression bomb's header without the bomb)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\x00\x00\x10\x00IDAT" + b"\x78\x9c" + b"\x00" * 16
