"""REST front end, as TensorFlow Serving documents its RESTful API.

* ``POST /v1/models/NAME[/versions/N|/labels/L]:predict`` with ``{"signature_name":
  ..., "instances": [...]}`` (row format; answer ``{"predictions": [...]}``) or
  ``{"inputs": ...}`` (columnar; answer ``{"outputs": ...}``); binary strings as
  ``{"b64": "..."}``.
* ``GET /v1/models/NAME[/versions/N|/labels/L]``: GetModelStatusResponse as JSON.
* ``GET /v1/models/NAME[/versions/N|/labels/L]/metadata``: GetModelMetadataResponse as JSON.
* ``GET /monitoring/prometheus/metrics``: Prometheus text format.
* Errors: ``{"error": "<message>"}`` with the HTTP status TF Serving uses.

Runs on one thread per connection (HTTP/1.1 keep-alive).
"""

from __future__ import annotations

import http.server
import json
import logging
import re
import socketserver
import threading

import grpc
from google.protobuf import json_format

from serving.errors import ServingError, invalid, not_found, too_large
from serving.grpc_service import signature_def_map, status_response
from serving.tensors import array_to_json, json_to_array

log = logging.getLogger("serving")

_ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<tail>/metadata|:predict|:classify|:regress)?/?$")


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

    def dtype_of(name):
        if name not in specs:
            raise invalid(f"input '{name}' is not in signature '{key}' (inputs: {sorted(specs)})")
        return specs[name].dtype

    if "instances" in body:
        rows = body["instances"]
        if not isinstance(rows, list):
            raise invalid("'instances' must be a list")
        named = bool(rows) and all(isinstance(r, dict) and not _is_b64(r) for r in rows)
        if named:
            names = set(rows[0])
            if any(set(r) != names for r in rows):
                raise invalid("every object in 'instances' must name the same inputs")
            return {n: json_to_array(n, [r[n] for r in rows], dtype_of(n)) for n in names}, True
        if any(isinstance(r, dict) and not _is_b64(r) for r in rows):
            raise invalid("'instances' mixes objects and plain values")
        if len(specs) != 1:
            raise invalid(f"signature '{key}' has {len(specs)} inputs: each instance must be an "
                          f"object naming them ({sorted(specs)})")
        (name,) = specs
        return {name: json_to_array(name, rows, dtype_of(name))}, True
    cols = body["inputs"]
    if isinstance(cols, dict) and not _is_b64(cols):
        return {n: json_to_array(n, v, dtype_of(n)) for n, v in cols.items()}, False
    if len(specs) != 1:
        raise invalid(f"signature '{key}' has {len(specs)} inputs: 'inputs' must be an object naming "
                      f"them ({sorted(specs)})")
    (name,) = specs
    return {name: json_to_array(name, cols, dtype_of(name))}, False


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


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tfmodels-serving"
    # Headers and body go out in separate writes; with Nagle on, a keep-alive
    # client's delayed ACK stalls each response by ~40 ms.
    disable_nagle_algorithm = True
    core = None  # set by make_rest_server

    def log_message(self, fmt, *args):  # access logs off, like TF Serving
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, obj, status: int = 200):
        self._send(status, json.dumps(obj).encode("utf-8"))

    def _error(self, e: Exception):
        if not isinstance(e, ServingError):
            log.exception("internal error")
            e = ServingError(grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}: {e}")
        self._send_json({"error": e.message}, e.http_status)

    def _route(self):
        m = _ROUTE.match(self.path.split("?", 1)[0])
        if not m:
            raise not_found(f"Malformed request: {self.command} {self.path}")
        version = m.group("version")
        if version is not None:
            if not version.isdigit():
                raise invalid(f"Malformed request: version '{version}' is not an integer")
            version = int(version)
        return m.group("name"), version, m.group("label") or "", m.group("tail") or ""

    def do_GET(self):
        try:
            if self.path.split("?", 1)[0] == "/monitoring/prometheus/metrics":
                self._send(200, self.core.metrics.render().encode(), "text/plain; version=0.0.4")
                return
            name, version, label, tail = self._route()
            manager = self.core.manager
            if tail == "":
                resp = status_response(manager, name, version, label)
                self._send_json(json_format.MessageToDict(
                    resp, preserving_proto_field_name=True, always_print_fields_with_no_presence=True))
            elif tail == "/metadata":
                served = manager.resolve(name, version, label)
                self._send_json({
                    "model_spec": {"name": served.name, "signature_name": "", "version": str(served.version)},
                    "metadata": {"signature_def": json_format.MessageToDict(
                        signature_def_map(served), preserving_proto_field_name=True)},
                })
            else:
                raise invalid(f"Malformed request: GET {self.path} (use POST for {tail})")
        except Exception as e:
            self._error(e)

    def do_POST(self):
        with self.server.active_lock:
            self.server.active += 1
        try:
            self._post()
        finally:
            with self.server.active_lock:
                self.server.active -= 1

    def _post(self):
        try:
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self.close_connection = True
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Content-Length header required") from None
            if length < 0 or length > self.core.max_request_bytes:
                self.close_connection = True  # the body is not read
                raise too_large(f"request body of {length} bytes exceeds the limit of "
                                f"{self.core.max_request_bytes} bytes")
            raw = self.rfile.read(length)
            name, version, label, tail = self._route()
            if tail in (":classify", ":regress"):
                raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                                   f"{tail[1:]} is not implemented by this server: use :predict")
            if tail != ":predict":
                raise invalid(f"Malformed request: POST {self.path}")
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as e:
                raise invalid(f"JSON Parse error: {e}") from None
            sig = body.get("signature_name", "") if isinstance(body, dict) else ""
            if not isinstance(sig, str):
                raise invalid("'signature_name' must be a string")
            with self.core.track("rest", name, sig) as info:
                served, key = self.core.resolve(name, version, label, sig)
                info.update(model=served.name, signature=key)
                inputs, row_format = parse_predict_body(body, served, key)
                outputs = self.core.run(served, key, inputs)
                self._send_json(format_outputs(outputs, row_format))
        except Exception as e:
            self._error(e)


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.active = 0  # POSTs being handled, so shutdown can let them finish
        self.active_lock = threading.Lock()


def make_rest_server(core, host: str, port: int) -> http.server.HTTPServer:
    """An HTTP server bound to (host, port) (port 0 = pick a free one); not started."""
    handler = type("Handler", (_Handler,), {"core": core})
    return _Server((host, port), handler)
