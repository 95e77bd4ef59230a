"""The embedded TensorFlow-Serving-compatible model server.

``ModelServer`` loads the models of a ``models.config`` and serves them over
gRPC (PredictionService, ModelService, grpc.health.v1.Health) and REST (with
Prometheus metrics), like ``tensorflow_model_server --model_config_file=...
--port=... --rest_api_port=...``. Used by ``tfmodels serve`` and by tests, which
start it in-process on free ports.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving.batching import Batcher
from serving.config import BatchingParameters
from serving.errors import ServingError
from serving.grpc_service import ModelServicer, PredictionServicer
from serving.manager import DEFAULT_LOAD_RETRY_SECONDS, DEFAULT_MAX_LOAD_RETRIES, ModelManager, State
from serving.metrics import Metrics
from serving.rest import RestServer
from serving.service import InferenceCore

log = logging.getLogger("serving")

# Limits (BUILD.md, "Limits and exposure", lists them with the reasons for each default).
DEFAULT_MAX_REQUEST_BYTES = 256 * 1024 * 1024  # gRPC message; also bounds each decoded tensor
DEFAULT_MAX_REST_BODY_BYTES = 16 * 1024 * 1024  # JSON costs ~10x its size as Python objects
DEFAULT_REQUEST_TIMEOUT = 30.0  # TF Serving's --rest_api_timeout_in_ms default
DEFAULT_REST_MAX_CONNECTIONS = 512
DEFAULT_REST_IDLE_TIMEOUT = 15.0  # headers must arrive, and keep-alive idles end, within this
DEFAULT_REST_BODY_TIMEOUT = 60.0
DEFAULT_REST_THREADS = 4 * (os.cpu_count() or 1)  # TF Serving's --rest_api_num_threads default
SERVICES = ("tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")


class ModelServer:
    """Serves the models of a ModelServerConfig over gRPC and REST.

    Args:
      config: a validated ``ModelServerConfig`` (serving.config.load_model_config).
      port: gRPC port (0 = a free port, see ``grpc_port`` after start).
      rest_port: REST port (0 = free port; None = no REST server).
      host: interface to bind; 127.0.0.1 unless you mean to expose the server.
      batching: BatchingParameters to batch concurrent Predict calls, or None.
      poll_seconds: how often base paths are polled for new versions (<= 0: never).
      max_request_bytes: largest gRPC message accepted (and bound on each decoded tensor).
      grpc_threads: gRPC worker threads (concurrent requests in flight).
      max_rest_body_bytes: largest REST body (413 above; the smaller of this and
        max_request_bytes applies).
      request_timeout: seconds a REST request, or a gRPC call without a deadline, may
        run before its TensorFlow call is cancelled (None = unbounded).
      rest_max_connections, rest_idle_timeout, rest_body_timeout, rest_threads: see
        serving.rest.RestServer.
      max_load_retries, load_retry_seconds: retries of a version that failed to load.
      allow_reload_config: serve ModelService.HandleReloadConfigRequest (unauthenticated,
        as in TF Serving); False answers it PERMISSION_DENIED.
      metrics: serve /monitoring/prometheus/metrics on the REST port.
      allow_labels_for_unavailable: start even when a version label points at a version
        that did not load (TF Serving's --allow_version_labels_for_unavailable_models).
    """

    def __init__(self, config, port: int = 8500, rest_port: int | None = 8501, host: str = "127.0.0.1",
                 batching: BatchingParameters | None = None, poll_seconds: float = 1.0,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, grpc_threads: int = 64,
                 max_rest_body_bytes: int = DEFAULT_MAX_REST_BODY_BYTES,
                 request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
                 rest_max_connections: int = DEFAULT_REST_MAX_CONNECTIONS,
                 rest_idle_timeout: float = DEFAULT_REST_IDLE_TIMEOUT,
                 rest_body_timeout: float = DEFAULT_REST_BODY_TIMEOUT, rest_threads: int = DEFAULT_REST_THREADS,
                 max_load_retries: int = DEFAULT_MAX_LOAD_RETRIES,
                 load_retry_seconds: float = DEFAULT_LOAD_RETRY_SECONDS, allow_reload_config: bool = True,
                 metrics: bool = True, allow_labels_for_unavailable: bool = False):
        self.metrics = Metrics()
        self.manager = ModelManager(config, on_change=self._on_change, max_load_retries=max_load_retries,
                                    load_retry_seconds=load_retry_seconds)
        self.batcher = None
        if batching is not None:
            self.batcher = Batcher(batching, on_batch=self.metrics.record_batch)
        self.core = InferenceCore(self.manager, self.batcher, self.metrics, max_request_bytes, request_timeout)
        self.host, self._port, self._rest_port = host, port, rest_port
        self.poll_seconds, self.grpc_threads = poll_seconds, grpc_threads
        self.max_request_bytes = max_request_bytes
        self._rest_args = dict(max_body_bytes=min(max_rest_body_bytes, max_request_bytes),
                               max_connections=rest_max_connections, idle_timeout=rest_idle_timeout,
                               body_timeout=rest_body_timeout, threads=rest_threads, metrics=metrics)
        self.allow_reload_config = allow_reload_config
        self.allow_labels_for_unavailable = allow_labels_for_unavailable
        self.grpc_port = self.rest_port = None
        self._grpc = self._rest = None
        self._health = health.HealthServicer()
        self._stopped = threading.Event()
        self._done = threading.Event()

    def _on_change(self, name, version, state):
        if state in (State.AVAILABLE, State.END):
            self.metrics.set_version(name, version, state == State.AVAILABLE)

    def start(self) -> "ModelServer":
        """Loads the initial versions (blocking, like TF Serving), then opens the ports.

        Logs what loaded and what did not (with the reason); raises ValueError when a
        version label points at a version that is not available (as TF Serving refuses
        to start), unless ``allow_labels_for_unavailable``.
        """
        self.manager.poll()
        for name, problem in self.manager.problems():
            log.warning("not serving from model %s: %s", name, problem)
        if not self.allow_labels_for_unavailable:
            try:
                self.manager.check_labels()
            except ServingError as e:
                raise ValueError(f"{e.message} (allow_labels_for_unavailable=True starts anyway)") from None
        opts = [("grpc.max_receive_message_length", self.max_request_bytes),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0)]
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=self.grpc_threads,
                                                            thread_name_prefix="grpc"), options=opts)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self.core), self._grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(self.core, self.allow_reload_config), self._grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._grpc)
        try:
            self.grpc_port = self._grpc.add_insecure_port(f"{self.host}:{self._port}")
        except RuntimeError:
            self.grpc_port = 0
        if self.grpc_port == 0:
            raise ValueError(f"cannot listen for gRPC on {self.host}:{self._port} (port in use?)")
        if self._rest_port is not None:
            self._rest = RestServer(self.core, self.host, self._rest_port, **self._rest_args)
            self.rest_port = self._rest.port
        self._grpc.start()
        if self._rest is not None:
            self._rest.start()
        for s in ("",) + SERVICES:
            self._health.set(s, health_pb2.HealthCheckResponse.SERVING)
        self.manager.start_polling(self.poll_seconds)
        log.info("serving %s on gRPC %s:%d, REST %s", self.manager.available(), self.host,
                 self.grpc_port, f"{self.host}:{self.rest_port}" if self._rest else "off")
        return self

    def stop(self, grace: float = 5.0) -> None:
        """Graceful stop: health NOT_SERVING, refuse new calls, finish in-flight ones."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._health.enter_graceful_shutdown()
        self.manager.stop()
        if self._grpc is not None:
            self._grpc.stop(grace).wait()
        if self._rest is not None:
            self._rest.stop(grace)
        if self.batcher is not None:
            self.batcher.stop()
        self.core.stop()
        self._done.set()

    def wait(self) -> None:
        """Blocks until stop(); SIGTERM / SIGINT call stop() (main thread only)."""
        def handler(signum, frame):
            log.info("signal %d: shutting down", signum)
            threading.Thread(target=self.stop, daemon=True).start()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)
            signal.signal(signal.SIGINT, handler)
        # stop() runs on its own thread; this returns once it has drained in-flight calls.
        while not self._done.wait(0.5):
            pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
