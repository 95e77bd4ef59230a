"""REST front end, as TensorFlow Serving documents its RESTful API.

* ``POST /v1/models/NAME[/versions/N|/labels/L]:predict`` with ``{"signature_name":
  ..., "instances": [...]}`` (row format; answer ``{"predictions": [...]}``) or
  ``{"inputs": ...}`` (columnar; answer ``{"outputs": ...}``); binary strings as
  ``{"b64": "..."}``.
* ``GET /v1/models/NAME[/versions/N|/labels/L]``: GetModelStatusResponse as JSON.
* ``GET /v1/models/NAME[/versions/N|/labels/L]/metadata``: GetModelMetadataResponse as JSON.
* ``GET /monitoring/prometheus/metrics``: Prometheus text format.
* Errors: ``{"error": "<message>"}`` with the HTTP status TF Serving uses: 400 for
  a malformed request (also for methods other than GET and POST, and for ``GET
  /v1/models`` without a name), 404 outside ``/v1/``, 413 for a body over the
  limit. Routes are case-insensitive, as TF Serving's. Chunked bodies are accepted.

Runs on Tornado (an asynchronous HTTP server made for many slow connections): one
event-loop thread holds every connection, with a header/idle timeout, a body
timeout and a cap on open connections, so slow or idle clients cost a socket, not a
thread, and are closed when their time is up. Request bodies are parsed and run on
a bounded thread pool, which also bounds how many JSON bodies are converted at once
(JSON costs about ten times its size in Python objects). A client that closes its
connection cancels its TensorFlow call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import re
import threading
import time

import grpc
import tensorflow as tf
import tornado.httpserver
import tornado.netutil
import tornado.web
from google.protobuf import json_format

from serving.errors import ServingError, invalid, not_found
from serving.grpc_service import signature_def_map, status_response
from serving.manager import parse_version
from serving.tensors import array_to_json, json_to_array

log = logging.getLogger("serving")

METRICS_PATH = "/monitoring/prometheus/metrics"
_ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<tail>/metadata|:predict|:classify|:regress)?/?$", re.IGNORECASE)
_NO_NAME = re.compile(r"^/v1/models/?$", re.IGNORECASE)


def _is_b64(v) -> bool:
    return isinstance(v, dict) and set(v) == {"b64"}


def parse_predict_body(body, served, key: str):
    """JSON request -> ({input: ndarray}, row_format: bool)."""
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object")
    unknown = set(body) - {"signature_name", "instances", "inputs"}
    if unknown:
        raise invalid(f"unknown fields in request body: {sorted(unknown)}")
    if ("instances" in body) == ("inputs" in body):
        raise invalid("request body must have exactly one of 'instances' (row format) or 'inputs' (columnar)")
    specs = served.input_specs[key]

    def convert(name, value, row_format):
        """JSON -> array, refused by the signature's shape before it is converted."""
        if name not in specs:
            raise invalid(f"input '{name}' is not in signature '{key}' (inputs: {sorted(specs)})")
        shape = specs[name].shape
        if row_format and shape.rank is not None:  # the rows add the batch dimension
            shape = tf.TensorShape([None]).concatenate(shape[1:]) if shape.rank else None
        return json_to_array(name, value, specs[name].dtype, shape)

    if "instances" in body:
        rows = body["instances"]
        if not isinstance(rows, list):
            raise invalid("'instances' must be a list")
        named = bool(rows) and all(isinstance(r, dict) and not _is_b64(r) for r in rows)
        if named:
            names = set(rows[0])
            if any(set(r) != names for r in rows):
                raise invalid("every object in 'instances' must name the same inputs")
            return {n: convert(n, [r[n] for r in rows], True) for n in names}, True
        if any(isinstance(r, dict) and not _is_b64(r) for r in rows):
            raise invalid("'instances' mixes objects and plain values")
        if len(specs) != 1:
            raise invalid(f"signature '{key}' has {len(specs)} inputs: each instance must be an "
                          f"object naming them ({sorted(specs)})")
        (name,) = specs
        return {name: convert(name, rows, True)}, True
    cols = body["inputs"]
    if isinstance(cols, dict) and not _is_b64(cols):
        return {n: convert(n, v, False) for n, v in cols.items()}, False
    if len(specs) != 1:
        raise invalid(f"signature '{key}' has {len(specs)} inputs: 'inputs' must be an object naming "
                      f"them ({sorted(specs)})")
    (name,) = specs
    return {name: convert(name, cols, False)}, False


def format_outputs(outputs: dict, row_format: bool) -> dict:
    if not row_format:
        if len(outputs) == 1:
            ((k, v),) = outputs.items()
            return {"outputs": array_to_json(k, v)}
        return {"outputs": {k: array_to_json(k, v) for k, v in outputs.items()}}
    sizes = {k: (v.shape[0] if v.ndim else None) for k, v in outputs.items()}
    if None in sizes.values() or len(set(sizes.values())) > 1:
        raise invalid(f"outputs have inconsistent batch sizes {sizes}: use the columnar 'inputs' "
                      "format for this signature")
    if len(outputs) == 1:
        ((k, v),) = outputs.items()
        return {"predictions": array_to_json(k, v)}
    cols = {k: array_to_json(k, v) for k, v in outputs.items()}
    n = next(iter(sizes.values()))
    return {"predictions": [{k: c[i] for k, c in cols.items()} for i in range(n)]}


def _route(method: str, path: str):
    """(name, version, label, tail) of a /v1/models path; errors as TF Serving answers them."""
    m = _ROUTE.match(path)
    if not m:
        if _NO_NAME.match(path):
            raise invalid("Missing model name in request.")
        if not path.lower().startswith("/v1/"):
            raise not_found(f"Not found: {method} {path}")
        raise invalid(f"Malformed request: {method} {path}")
    version = m.group("version")
    if version is not None:
        number = parse_version(version)
        if number is None:
            raise invalid(f"Malformed request: version '{version}' is not an integer in int64 range")
        version = number
    return m.group("name"), version, m.group("label") or "", (m.group("tail") or "").lower()


class RestFrontEnd:
    """What a REST request does once its body is in: parse, run, encode (on the pool threads).

    ``handle`` never raises: every outcome is (HTTP status, body bytes, content type).
    """

    def __init__(self, core, metrics_enabled: bool = True):
        self.core, self.metrics_enabled = core, metrics_enabled

    def handle(self, method: str, path: str, raw: bytes, call) -> tuple:
        try:
            if method == "GET" and path.lower() == METRICS_PATH and self.metrics_enabled:
                return 200, self.core.metrics.render().encode(), "text/plain; version=0.0.4"
            name, version, label, tail = _route(method, path)
            if method == "GET":
                return 200, self._get(name, version, label, tail, path), "application/json"
            return 200, self._post(name, version, label, tail, path, raw, call), "application/json"
        except ServingError as e:
            return e.http_status, _error_body(e.message), "application/json"
        except Exception as e:  # a bug of ours: one log line, not a traceback per request
            log.error("internal error on REST %s %s: %s: %s", method, path[:200], type(e).__name__, e)
            log.debug("traceback", exc_info=True)
            return 500, _error_body(f"internal error: {type(e).__name__}"), "application/json"

    def _get(self, name, version, label, tail, path) -> bytes:
        manager = self.core.manager
        if tail == "":
            resp = status_response(manager, name, version, label)
            return json.dumps(json_format.MessageToDict(
                resp, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)).encode()
        if tail == "/metadata":
            served = manager.resolve(name, version, label)
            return json.dumps({
                "model_spec": {"name": served.name, "signature_name": "", "version": str(served.version)},
                "metadata": {"signature_def": json_format.MessageToDict(
                    signature_def_map(served), preserving_proto_field_name=True)},
            }).encode()
        raise invalid(f"Malformed request: GET {path} (use POST for {tail})")

    def _post(self, name, version, label, tail, path, raw, call) -> bytes:
        if tail in (":classify", ":regress"):
            raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                               f"{tail[1:]} is not implemented by this server: use :predict")
        if tail != ":predict":
            raise invalid(f"Malformed request: POST {path}")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
            log.info("REST %s: JSON parse error: %s", path[:200], str(e)[:200])
            raise invalid(f"JSON Parse error: {str(e)[:200] or type(e).__name__}") from None
        sig = body.get("signature_name", "") if isinstance(body, dict) else ""
        if not isinstance(sig, str):
            raise invalid("'signature_name' must be a string")
        with self.core.track("rest", name, sig) as info:
            served, key = self.core.resolve(name, version, label, sig)
            info.update(model=served.name, signature=key)
            inputs, row_format = parse_predict_body(body, served, key)
            outputs = self.core.run(served, key, inputs, call=call)
            return json.dumps(format_outputs(outputs, row_format)).encode()


def _error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


@tornado.web.stream_request_body
class _Handler(tornado.web.RequestHandler):
    """Collects a request's body within the size limit, then hands it to the pool."""

    SUPPORTED_METHODS = ("GET", "POST")  # others: 405 from Tornado, answered 400 as TF Serving

    def initialize(self, server):
        self.server, self._chunks, self._size, self._call = server, [], 0, None
        self._message, self._holding, self._gone = "", False, False

    def set_default_headers(self):
        self.clear_header("Server")  # no version banner (see BUILD.md, limits and exposure)

    async def prepare(self):
        # Tornado has already refused a non-integer or negative Content-Length (400).
        declared = self.request.headers.get("Content-Length")
        if declared is not None and int(declared) > self.server.max_body_bytes:
            self._message = self._too_large(int(declared))
            raise tornado.web.HTTPError(413)
        if self.request.method == "POST":  # bodies held at once are bounded: wait before reading one
            await self.server.bodies.acquire()
            self._holding = True
            if self._gone:  # the client left while waiting: its place goes to the next one
                self._release()

    def _release(self):
        if self._holding:
            self._holding = False
            self.server.bodies.release()

    def on_finish(self):
        self._release()

    def data_received(self, chunk: bytes):
        self._size += len(chunk)
        if self._size > self.server.max_body_bytes:  # a chunked body: no length declared
            if not self._finished:
                self._message = self._too_large(self._size)
                self.send_error(413)
            return
        self._chunks.append(chunk)

    def _too_large(self, size: int) -> str:
        return f"request body of {size} bytes exceeds the limit of {self.server.max_body_bytes} bytes"

    async def get(self):
        await self._answer()

    async def post(self):
        await self._answer()

    async def _answer(self):
        if self._finished:  # answered 413 while the body was coming in
            return
        core = self.server.front.core
        self._call = core.call(core.request_timeout)
        raw, self._chunks = b"".join(self._chunks), []
        status, body, ctype = await asyncio.get_running_loop().run_in_executor(
            self.server.pool, self.server.front.handle, self.request.method, self.request.path, raw, self._call)
        if self.request.connection.stream.closed():
            return
        self.set_status(status)
        self.set_header("Content-Type", ctype)
        self.finish(body)

    def on_connection_close(self):
        self._gone = True
        if self._call is not None:
            self._call.cancel("the HTTP client closed its connection")
        self._release()

    def write_error(self, status_code: int, **kwargs):
        if status_code == 405:
            self.set_status(400)
            message = f"Unsupported method: {self.request.method} (use GET or POST)"
        else:
            message = self._message or self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(_error_body(message))

    def log_exception(self, typ, value, tb):  # HTTPErrors are answers, not news
        if not isinstance(value, tornado.web.HTTPError):
            log.error("internal error on REST %s %s: %s: %s", self.request.method, self.request.path[:200],
                      typ.__name__, value)

class _CappedHTTPServer(tornado.httpserver.HTTPServer):
    """Closes connections beyond ``max_connections`` at once (file descriptors are shared with gRPC)."""

    max_connections = 0
    _refused, _logged_at = 0, float("-inf")

    def handle_stream(self, stream, address):
        if len(self._connections) >= self.max_connections:  # Tornado's own set of open connections
            self._refused += 1
            now = time.monotonic()
            if now - self._logged_at >= 60:  # a flood of connections must not become a flood of log lines
                log.warning("REST: %d connections open (the limit); closed %d new ones since the last "
                            "report, the latest from %s", len(self._connections), self._refused, address[0])
                self._refused, self._logged_at = 0, now
            stream.close()
            return
        super().handle_stream(stream, address)


class RestServer:
    """The REST front end on its own event-loop thread; requests run on a bounded pool.

    Args:
      core: serving.service.InferenceCore.
      host, port: where to listen (port 0 = a free port, see ``port``).
      max_body_bytes: largest body accepted (413 above it, declared or chunked).
      max_connections: open connections at most; more are closed at once.
      idle_timeout: seconds a connection may take to send a request's headers, and may
        stay idle between keep-alive requests, before it is closed.
      body_timeout: seconds a request's body may take to arrive.
      threads: requests parsed and run at once (and JSON bodies held as Python objects);
        twice as many POST bodies may be held at once, further ones wait before being read.
      metrics: serve ``/monitoring/prometheus/metrics``.
    """

    def __init__(self, core, host: str, port: int, max_body_bytes: int, max_connections: int,
                 idle_timeout: float, body_timeout: float, threads: int, metrics: bool = True):
        self.front = RestFrontEnd(core, metrics)
        self.max_body_bytes = max_body_bytes
        self.pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="rest")
        try:
            self._sockets = tornado.netutil.bind_sockets(port, host, reuse_port=False)
        except OSError as e:
            raise ValueError(f"cannot listen for REST on {host}:{port}: {e}") from None
        self.port = self._sockets[0].getsockname()[1]
        self._opts = dict(idle_connection_timeout=idle_timeout, body_timeout=body_timeout,
                          max_body_size=2 * max_body_bytes, max_buffer_size=2 * max_body_bytes)
        self._max_connections = max_connections
        # Bodies read or waiting for a pool thread at once: enough to keep the pool busy,
        # few enough that max_body_bytes x this bounds the memory REST bodies take.
        self._max_bodies = 2 * threads
        self._loop = self._http = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="rest", daemon=True)

    def start(self) -> "RestServer":
        self._thread.start()
        self._ready.wait()
        return self

    def _serve(self):
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        app = tornado.web.Application([(r"/.*", _Handler, {"server": self})], log_function=lambda h: None)
        self.bodies = asyncio.Semaphore(self._max_bodies)
        self._http = _CappedHTTPServer(app, **self._opts)
        self._http.max_connections = self._max_connections
        self._http.add_sockets(self._sockets)
        self._loop.call_soon(self._ready.set)
        self._loop.run_forever()
        self._loop.close()

    def stop(self, grace: float) -> None:
        """No new connections; requests already running finish (up to ``grace`` seconds)."""
        if self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._http.stop)
        waiter = threading.Thread(target=self.pool.shutdown, kwargs={"wait": True}, daemon=True)
        waiter.start()
        waiter.join(grace)
        future = asyncio.run_coroutine_threadsafe(self._http.close_all_connections(), self._loop)
        try:
            future.result(timeout=max(grace, 1.0))
        except Exception:  # noqa: BLE001  (closing at shutdown: nothing left to answer)
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
