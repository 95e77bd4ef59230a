"""Typed clients for the TensorFlow Serving API, over gRPC and over REST.

Both work against the embedded server and against ``tensorflow_model_server``.
``GrpcClient`` and ``RestClient`` share the typed calls (``score``,
``score_images``, ``item_embedding``, ``user_embedding``, ``recommend``,
``generate``, ``design``, ``modify``) and differ only in transport
(``predict``, ``metadata``, ``status``).

* Deadlines: every call has a total deadline (``timeout`` seconds) covering retries.
* Retries: UNAVAILABLE (server starting, restarting, queue full, connection
  refused) is retried with exponential backoff and jitter, up to ``retries`` times.
* Message size: gRPC send/receive limits are raised to ``max_message_bytes``
  (default 256 MiB) since image payloads easily pass gRPC's default 4 MB.
* Dtypes: inputs are converted to the dtype and rank that the served signature
  declares (read once per model and signature from GetModelMetadata), so callers
  pass plain Python lists, strings and numbers.

Failures raise ``serving.errors.ServingError`` with a gRPC status code.
Runs in the caller's thread; a client may be shared across threads.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import random
import threading
import time
import urllib.parse

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from export import signatures as S
from serving.errors import HTTP_STATUS, ServingError
from serving.tensors import array_to_proto, decode, json_to_output

DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024
_STATE_NAMES = dict(get_model_status_pb2.ModelVersionStatus.State.items())
_CODE_BY_HTTP = {v: k for k, v in reversed(list(HTTP_STATUS.items()))}
_CODE_BY_HTTP[500] = grpc.StatusCode.INTERNAL


@dataclasses.dataclass
class Scores:
    """score float32 [B]; known bool [B] (None if the model has no 'known' output)."""

    score: np.ndarray
    known: np.ndarray | None = None


@dataclasses.dataclass
class Recommendations:
    """item_ids [B][k] (str); score float32 [B, k]; known bool [B] or None."""

    item_ids: list
    score: np.ndarray
    known: np.ndarray | None = None


@dataclasses.dataclass
class Images:
    """image uint8 [n, H, W, 3]; png: list of PNG bytes; scores where the signature has them."""

    image: np.ndarray
    png: list
    score: np.ndarray | None = None
    score_before: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class TensorSig:
    """Dtype name (float32, string, ...) and shape (None = any) of a signature tensor."""

    dtype: str
    shape: tuple | None


def _to_str_list(arr) -> list:
    return [b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b) for b in np.asarray(arr).reshape(-1)]


def _coerce(key: str, value, sig: TensorSig | None, batch: int | None) -> np.ndarray:
    """Python value -> ndarray of the declared dtype; scalars broadcast to [batch] when rank 1."""
    if sig is None:
        arr = np.asarray(value)
        if arr.dtype.kind == "U":
            arr = np.char.encode(arr, "utf-8").astype(object)
        return arr
    if sig.dtype == "string":
        def enc(v):
            if isinstance(v, bytes):
                return v
            return (v if isinstance(v, str) else str(v)).encode("utf-8")

        arr = np.asarray(value, dtype=object)
        flat = np.empty(arr.size, dtype=object)
        flat[:] = [enc(v) for v in arr.reshape(-1)]
        arr = flat.reshape(arr.shape)
    else:
        arr = np.asarray(value).astype(tf.dtypes.as_dtype(sig.dtype).as_numpy_dtype)
    if sig.shape is not None and len(sig.shape) == 1 and arr.ndim == 0 and batch is not None:
        arr = np.full([batch], arr.item(), dtype=arr.dtype) if arr.dtype != object else \
            np.array([arr.item()] * batch, dtype=object)
    if sig.shape is not None and len(sig.shape) == 0 and arr.ndim == 1 and arr.size == 1:
        arr = arr.reshape(())
    return arr


class _Base:
    """Typed calls on top of predict(); subclasses supply the transport."""

    def __init__(self, timeout: float, retries: int, backoff: float):
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self._sig_cache: dict = {}
        self._lock = threading.Lock()

    # -- transport, implemented by subclasses
    def predict(self, model: str, inputs: dict, signature: str = "", version: int | None = None,
                label: str = "", output_filter=None, timeout: float | None = None) -> dict:
        raise NotImplementedError

    def metadata(self, model: str, version: int | None = None, label: str = "") -> dict:
        raise NotImplementedError

    # -- retries
    def _with_retries(self, call, timeout: float | None):
        deadline = time.monotonic() + (timeout or self.timeout)
        attempt = 0
        while True:
            try:
                return call(max(deadline - time.monotonic(), 0.001))
            except ServingError as e:
                if e.code != grpc.StatusCode.UNAVAILABLE or attempt >= self.retries:
                    raise
                pause = self.backoff * (2 ** attempt) * (0.5 + random.random())
                if time.monotonic() + pause >= deadline:
                    raise
                time.sleep(pause)
                attempt += 1

    # -- signature-aware input conversion
    def signature_info(self, model: str, signature: str, version: int | None = None) -> dict:
        """{"inputs": {key: TensorSig}, "outputs": {...}} of a served signature.

        Read from the server once (cached); while the server cannot answer, the
        contract in export/signatures.py is used and nothing is cached.
        """
        key = (model, signature or S.SERVING_DEFAULT, version)
        with self._lock:
            if key in self._sig_cache:
                return self._sig_cache[key]
        try:
            found = self.metadata(model, version).get(signature or S.SERVING_DEFAULT)
        except ServingError:
            found = None
        if found is None:
            spec = S.SIGNATURES.get(model, {}).get(signature or S.SERVING_DEFAULT)
            if spec is None:
                return {"inputs": {}, "outputs": {}}
            return {"inputs": {k: TensorSig(t.dtype, t.shape) for k, t in spec.inputs.items()},
                    "outputs": {k: TensorSig(t.dtype, t.shape) for k, t in spec.outputs.items()}}
        with self._lock:
            self._sig_cache[key] = found
        return found

    def signature_inputs(self, model: str, signature: str, version: int | None = None) -> dict:
        """{input key: TensorSig} of a served signature (see signature_info)."""
        return self.signature_info(model, signature, version)["inputs"]

    def call(self, model: str, signature: str, values: dict, version: int | None = None,
             label: str = "", timeout: float | None = None) -> dict:
        """predict() after converting plain values to the signature's dtypes and ranks."""
        sigs = self.signature_inputs(model, signature, version)
        batch = None
        for k, v in values.items():
            if sigs.get(k) is not None and sigs[k].shape and len(sigs[k].shape) >= 1 and np.ndim(v) >= 1:
                batch = len(v)
                break
        inputs = {k: _coerce(k, v, sigs.get(k), batch) for k, v in values.items()}
        return self.predict(model, inputs, signature, version, label, timeout=timeout)

    # -- typed calls
    def score(self, user_ids, item_ids, model: str = S.RECOMMENDER, signature: str = S.SCORE, **kw) -> Scores:
        """Preference scores x_ui for aligned lists of user and item ids."""
        out = self.call(model, signature, {S.USER_ID: list(user_ids), S.ITEM_ID: list(item_ids)}, **kw)
        return Scores(out[S.OUT_SCORE], out.get(S.OUT_KNOWN))

    def score_images(self, user_ids, images: list, model: str = S.RECOMMENDER, **kw) -> Scores:
        """Scores of new items from their encoded JPEG/PNG bytes (cold start)."""
        out = self.call(model, S.SCORE_IMAGES, {S.USER_ID: list(user_ids), S.IMAGE_BYTES: list(images)}, **kw)
        return Scores(out[S.OUT_SCORE], out.get(S.OUT_KNOWN))

    def item_embedding(self, images: list, model: str = S.RECOMMENDER, **kw) -> np.ndarray:
        """float32 [B, K] item-tower embeddings of encoded images."""
        return self.call(model, S.ITEM_EMBEDDING, {S.IMAGE_BYTES: list(images)}, **kw)[S.OUT_EMBEDDING]

    def user_embedding(self, user_ids, model: str = S.RECOMMENDER, **kw) -> np.ndarray:
        """float32 [B, K] user vectors theta_u."""
        return self.call(model, S.USER_EMBEDDING, {S.USER_ID: list(user_ids)}, **kw)[S.OUT_EMBEDDING]

    def recommend(self, user_ids, k: int = 10, exclude_purchased: bool = True,
                  model: str = S.RECOMMENDER, **kw) -> Recommendations:
        """Top-k catalogue items per user."""
        values = {S.USER_ID: list(user_ids), S.K: k}
        if S.EXCLUDE_PURCHASED in self.signature_inputs(model, S.RECOMMEND, kw.get("version")):
            values[S.EXCLUDE_PURCHASED] = exclude_purchased
        out = self.call(model, S.RECOMMEND, values, **kw)
        ids = np.asarray(out[S.OUT_ITEM_ID])
        return Recommendations([_to_str_list(row) for row in ids], out[S.OUT_SCORE], out.get(S.OUT_KNOWN))

    def generate(self, category: str, n: int = 1, seed: int = 0, model: str = S.DESIGNER, **kw) -> Images:
        """n generated images of a category (by name)."""
        out = self.call(model, S.GENERATE, {S.CATEGORY: category, S.N: n, S.SEED: seed}, **kw)
        return Images(out[S.OUT_IMAGE], list(np.asarray(out[S.OUT_PNG]).reshape(-1)))

    def design(self, user_id: str, category: str, starts: int = 4, steps: int = 20, eta: float = 1.0,
               seed: int = 0, model: str = S.DESIGNER, **kw) -> Images:
        """Designs maximising a user's preference (best first)."""
        values = {S.USER_ID: user_id, S.CATEGORY: category, S.STARTS: starts, S.STEPS: steps,
                  S.ETA: eta, S.SEED: seed}
        out = self.call(model, S.DESIGN, values, **kw)
        return Images(out[S.OUT_IMAGE], list(np.asarray(out[S.OUT_PNG]).reshape(-1)), out.get(S.OUT_SCORE))

    def modify(self, user_ids, images: list, categories, steps: int = 20, eta: float = 1.0,
               model: str = S.DESIGNER, **kw) -> Images:
        """Existing items (encoded images) changed the way each user would like them."""
        values = {S.USER_ID: list(user_ids), S.IMAGE_BYTES: list(images), S.CATEGORY: categories,
                  S.STEPS: steps, S.ETA: eta}
        out = self.call(model, S.MODIFY, values, **kw)
        return Images(out[S.OUT_IMAGE], list(np.asarray(out[S.OUT_PNG]).reshape(-1)),
                      out.get(S.OUT_SCORE), out.get(S.OUT_SCORE_BEFORE))


def _signature_map_to_dict(sig_map) -> dict:
    out = {}
    for name, sd in sig_map.signature_def.items():
        def conv(infos):
            d = {}
            for k, info in infos.items():
                shape = None if info.tensor_shape.unknown_rank else tuple(
                    None if dim.size < 0 else dim.size for dim in info.tensor_shape.dim)
                d[k] = TensorSig(tf.dtypes.as_dtype(info.dtype).name, shape)
            return d

        out[name] = {"inputs": conv(sd.inputs), "outputs": conv(sd.outputs), "method_name": sd.method_name}
    return out


class GrpcClient(_Base):
    """Client for the gRPC PredictionService / ModelService.

    Args:
      target: "host:port" of the gRPC endpoint.
      timeout: default total deadline per call in seconds (retries included).
      retries: retries on UNAVAILABLE; backoff: first pause in seconds (doubles).
      max_message_bytes: gRPC send/receive limit.
    """

    def __init__(self, target: str = "127.0.0.1:8500", timeout: float = 30.0, retries: int = 3,
                 backoff: float = 0.1, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES):
        super().__init__(timeout, retries, backoff)
        self.target = target
        self.channel = grpc.insecure_channel(target, options=[
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes)])
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _rpc(self, method, request, timeout):
        def attempt(remaining):
            try:
                return method(request, timeout=remaining)
            except grpc.RpcError as e:
                raise ServingError(e.code(), e.details() or "") from None

        return self._with_retries(attempt, timeout)

    @staticmethod
    def _spec(spec, model, version, label, signature=""):
        spec.name = model
        if version is not None:
            spec.version.value = int(version)
        elif label:
            spec.version_label = label
        if signature:
            spec.signature_name = signature

    def predict_request(self, model: str, inputs: dict, signature: str = "", version: int | None = None,
                        label: str = "", output_filter=None) -> predict_pb2.PredictRequest:
        """The PredictRequest predict() sends (for callers that want the raw proto)."""
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, model, version, label, signature)
        for k, v in inputs.items():
            request.inputs[k].CopyFrom(v if isinstance(v, type(request.inputs[k])) else array_to_proto(v))
        request.output_filter.extend(output_filter or [])
        return request

    def predict(self, model, inputs, signature="", version=None, label="", output_filter=None, timeout=None):
        """Predict: {key: array-like or TensorProto} -> {output key: np.ndarray}."""
        request = self.predict_request(model, inputs, signature, version, label, output_filter)
        response = self._rpc(self.prediction.Predict, request, timeout)
        return {k: decode(v) for k, v in response.outputs.items()}

    def metadata(self, model, version=None, label=""):
        """{signature: {"inputs": {key: TensorSig}, "outputs": {...}, "method_name": str}}."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, model, version, label)
        response = self._rpc(self.prediction.GetModelMetadata, request, None)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(sig_map)
        return _signature_map_to_dict(sig_map)

    def status(self, model, version=None, label=""):
        """[{"version": int, "state": "AVAILABLE"|..., "error_code": int, "error_message": str}]."""
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, model, version, label)
        response = self._rpc(self.models.GetModelStatus, request, None)
        names = {v: k for k, v in _STATE_NAMES.items()}
        return [{"version": s.version, "state": names.get(s.state, str(s.state)),
                 "error_code": s.status.error_code, "error_message": s.status.error_message}
                for s in response.model_version_status]

    def reload_config(self, config, timeout: float | None = None) -> None:
        """HandleReloadConfigRequest with a ModelServerConfig; raises on a non-OK status."""
        request = model_management_pb2.ReloadConfigRequest(config=config)
        response = self._rpc(self.models.HandleReloadConfigRequest, request, timeout)
        if response.status.error_code:
            from serving.errors import code_from_int

            raise ServingError(code_from_int(response.status.error_code), response.status.error_message)

    def health(self, service: str = "", timeout: float = 5.0) -> bool:
        """True when grpc.health.v1 reports SERVING."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self.channel)
        try:
            r = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return False
        return r.status == health_pb2.HealthCheckResponse.SERVING


def _json_value(key: str, arr: np.ndarray):
    if arr.dtype == object or arr.dtype.kind == "S":
        def enc(b):
            if isinstance(b, str):
                return b
            if not key.endswith("_bytes") and key != S.IMAGE_BYTES:
                try:
                    return b.decode("utf-8")
                except UnicodeDecodeError:
                    pass
            return {"b64": base64.b64encode(b).decode("ascii")}

        if arr.ndim == 0:
            return enc(arr.item())
        flat = np.empty(arr.size, dtype=object)
        flat[:] = [enc(b) for b in arr.reshape(-1)]
        return flat.reshape(arr.shape).tolist()
    return arr.tolist()


class RestClient(_Base):
    """Client for TensorFlow Serving's REST API (stdlib http.client, keep-alive per thread).

    Args:
      base_url: e.g. "http://127.0.0.1:8501".
      timeout, retries, backoff: as GrpcClient.
    """

    def __init__(self, base_url: str = "http://127.0.0.1:8501", timeout: float = 30.0, retries: int = 3,
                 backoff: float = 0.1):
        super().__init__(timeout, retries, backoff)
        u = urllib.parse.urlsplit(base_url)
        if u.scheme not in ("http", "https"):
            raise ValueError(f"base_url must be http(s)://host:port, got {base_url!r}")
        self.scheme, self.netloc = u.scheme, u.netloc
        self._local = threading.local()

    def close(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def _path(model, version, label):
        p = f"/v1/models/{urllib.parse.quote(model, safe='')}"
        if version is not None:
            p += f"/versions/{int(version)}"
        elif label:
            p += f"/labels/{urllib.parse.quote(label, safe='')}"
        return p

    def request(self, method: str, path: str, body: bytes | None = None, timeout: float | None = None):
        """One HTTP exchange with retries; returns the decoded JSON body."""
        def attempt(remaining):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
                conn = self._local.conn = cls(self.netloc, timeout=remaining)
            else:  # keep the connection alive; only the deadline changes
                conn.timeout = remaining
                if conn.sock is not None:
                    conn.sock.settimeout(remaining)
            headers = {"Content-Type": "application/json"} if body is not None else {}
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (ConnectionError, http.client.HTTPException, OSError) as e:
                conn.close()
                self._local.conn = None
                if isinstance(e, TimeoutError):
                    raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, f"{method} {path}: timed out") from None
                raise ServingError(grpc.StatusCode.UNAVAILABLE, f"{method} {path}: {e}") from None
            if resp.getheader("Connection", "").lower() == "close":
                conn.close()
                self._local.conn = None
            try:
                payload = json.loads(data) if data else {}
            except ValueError:
                payload = {"error": data[:200].decode("utf-8", "replace")}
            if resp.status != 200:
                msg = payload.get("error", "") if isinstance(payload, dict) else str(payload)
                raise ServingError(_CODE_BY_HTTP.get(resp.status, grpc.StatusCode.UNKNOWN), msg)
            return payload

        return self._with_retries(attempt, timeout)

    def predict(self, model, inputs, signature="", version=None, label="", output_filter=None, timeout=None,
                row_format: bool = False):
        """POST :predict (columnar "inputs" unless row_format) -> {output key: np.ndarray}."""
        arrays = {k: (v if isinstance(v, np.ndarray) else np.asarray(v)) for k, v in inputs.items()}
        if row_format:
            n = {a.shape[0] for a in arrays.values()}
            if len(n) != 1:
                raise ValueError("row format needs every input to have the same first dimension")
            n = n.pop()
            cols = {k: _json_value(k, a) for k, a in arrays.items()}
            body = {"instances": [{k: c[i] for k, c in cols.items()} for i in range(n)]}
        else:
            body = {"inputs": {k: _json_value(k, a) for k, a in arrays.items()}}
        if signature:
            body["signature_name"] = signature
        payload = self.request("POST", self._path(model, version, label) + ":predict",
                               json.dumps(body).encode("utf-8"), timeout or self.timeout)
        if "outputs" in payload:
            outs = payload["outputs"]
        elif "predictions" in payload:
            preds = payload["predictions"]
            outs = ({k: [p[k] for p in preds] for k in preds[0]}
                    if preds and isinstance(preds[0], dict) and set(preds[0]) != {"b64"} else preds)
        else:
            raise ServingError(grpc.StatusCode.INTERNAL, f"unexpected response keys {sorted(payload)}")
        out_sigs = self.signature_info(model, signature, version)["outputs"]
        if not isinstance(outs, dict):
            # A single output is returned bare: name it from the signature.
            outs = {next(iter(out_sigs)): outs}
        result = {}
        for k, v in outs.items():
            arr = json_to_output(v)
            if k in out_sigs and out_sigs[k].dtype != "string":  # JSON has no float32/int32
                arr = arr.astype(tf.dtypes.as_dtype(out_sigs[k].dtype).as_numpy_dtype)
            result[k] = arr
        if output_filter:
            result = {k: result[k] for k in output_filter}
        return result

    def metadata(self, model, version=None, label=""):
        """As GrpcClient.metadata, from GET /v1/models/NAME/metadata."""
        payload = self.request("GET", self._path(model, version, label) + "/metadata", None, self.timeout)
        sig_defs = payload.get("metadata", {}).get("signature_def", {}).get("signature_def", {})
        out = {}
        for name, sd in sig_defs.items():
            def conv(infos):
                d = {}
                for k, info in infos.items():
                    ts = info.get("tensor_shape", {})
                    shape = None if ts.get("unknown_rank") else tuple(
                        None if int(dim.get("size", -1)) < 0 else int(dim["size"]) for dim in ts.get("dim", []))
                    d[k] = TensorSig(tf.dtypes.as_dtype(types_pb2.DataType.Value(info["dtype"])).name, shape)
                return d

            out[name] = {"inputs": conv(sd.get("inputs", {})), "outputs": conv(sd.get("outputs", {})),
                         "method_name": sd.get("method_name", "")}
        return out

    def status(self, model, version=None, label=""):
        """As GrpcClient.status, from GET /v1/models/NAME."""
        payload = self.request("GET", self._path(model, version, label), None, self.timeout)
        out = []
        for s in payload.get("model_version_status", []):
            st = s.get("status", {})
            code = st.get("error_code", "OK")
            out.append({"version": int(s["version"]), "state": s.get("state", "UNKNOWN"),
                        "error_code": 0 if code in ("OK", 0) else code,
                        "error_message": st.get("error_message", "")})
        return out

    def prometheus_metrics(self) -> str:
        """GET /monitoring/prometheus/metrics (text)."""
        conn_cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(self.netloc, timeout=self.timeout)
        try:
            conn.request("GET", "/monitoring/prometheus/metrics")
            return conn.getresponse().read().decode("utf-8")
        finally:
            conn.close()
