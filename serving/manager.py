"""Model manager: which SavedModel versions are loaded, and their lifecycle.

Mirrors TensorFlow Serving's file-system source and availability-preserving
policy: every ``poll`` lists the integer version folders under each model's
``base_path`` (folders without ``saved_model.pb`` and non-integer names such as an
exporter's temporary folder are ignored), picks the versions the version policy
wants, loads the missing ones, and only then retires versions no longer wanted.
A retired version is dropped from the routing table; requests already running
on it hold their own reference and finish normally.

Loading runs on the polling thread (or the caller's, for the first poll and
config reloads); requests run on the servers' threads. TensorFlow is imported.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_status_pb2, prediction_log_pb2

from serving.errors import ServingError, code_from_int, failed_precondition, invalid, not_found

log = logging.getLogger("serving")

State = get_model_status_pb2.ModelVersionStatus.State
INIT_OP = "__saved_model_init_op"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # as TensorFlow Serving


def _read_signature_defs(path: str) -> dict:
    """SignatureDefs of the 'serve' MetaGraph, read from saved_model.pb(txt)."""
    sm = saved_model_pb2.SavedModel()
    pb = os.path.join(path, "saved_model.pb")
    if os.path.exists(pb):
        with open(pb, "rb") as f:
            sm.ParseFromString(f.read())
    else:
        with open(os.path.join(path, "saved_model.pbtxt"), encoding="utf-8") as f:
            text_format.Parse(f.read(), sm)
    for mg in sm.meta_graphs:
        if "serve" in mg.meta_info_def.tags:
            return {k: v for k, v in mg.signature_def.items() if k != INIT_OP}
    raise ValueError(f"{path}: no MetaGraph tagged 'serve'")


class ServedVersion:
    """One loaded SavedModel version and its callable signatures."""

    def __init__(self, name: str, version: int, path: str):
        self.name, self.version, self.path = name, version, path
        self.signature_defs = _read_signature_defs(path)
        self.module = tf.saved_model.load(path, tags=["serve"])
        self.functions = {k: fn for k, fn in self.module.signatures.items() if k != INIT_OP}
        # key -> {input key: tf.TensorSpec}
        self.input_specs = {k: dict(fn.structured_input_signature[1]) for k, fn in self.functions.items()}
        self.output_keys = {k: sorted(fn.structured_outputs) for k, fn in self.functions.items()}

    def signature(self, signature_name: str) -> str:
        """Resolves '' to serving_default; FAILED_PRECONDITION for unknown names."""
        key = signature_name or "serving_default"
        if key not in self.functions:
            raise failed_precondition(
                f"Serving signature key \"{key}\" not found in model '{self.name}' version "
                f"{self.version} (has: {', '.join(sorted(self.functions))})")
        return key

    def check_inputs(self, key: str, inputs: dict) -> None:
        """INVALID_ARGUMENT naming the input for wrong names, dtypes or shapes."""
        specs = self.input_specs[key]
        missing, extra = sorted(set(specs) - set(inputs)), sorted(set(inputs) - set(specs))
        if missing or extra:
            raise invalid(f"signature '{key}' of model '{self.name}' expects inputs "
                          f"{sorted(specs)}; missing {missing}, unexpected {extra}")
        for name, arr in inputs.items():
            spec = specs[name]
            dtype = tf.string if arr.dtype == object or arr.dtype.kind == "S" else tf.as_dtype(arr.dtype)
            if dtype != spec.dtype:
                raise invalid(f"input '{name}' of signature '{key}' expects dtype {spec.dtype.name}, "
                              f"got {dtype.name}")
            if not spec.shape.is_compatible_with(arr.shape):
                raise invalid(f"input '{name}' of signature '{key}' expects shape {spec.shape}, "
                              f"got {list(arr.shape)}")

    def run(self, key: str, inputs: dict) -> dict:
        """Calls signature ``key`` on checked NumPy inputs; returns NumPy outputs.

        TensorFlow errors keep their status code (tf.errors codes are gRPC codes);
        anything else raised by the call is reported as INVALID_ARGUMENT, since the
        inputs already passed the signature checks and only their values remain.
        """
        fn = self.functions[key]
        try:
            out = fn(**{k: tf.constant(v) for k, v in inputs.items()})
        except tf.errors.OpError as e:
            raise ServingError(code_from_int(e.error_code),
                               f"signature '{key}' of model '{self.name}': {e.message}") from None
        except (TypeError, ValueError) as e:
            raise invalid(f"signature '{key}' of model '{self.name}': {e}") from None
        return {k: v.numpy() for k, v in out.items()}

    def warm_up(self) -> int:
        """Replays assets.extra/tf_serving_warmup_requests (Predict logs only)."""
        path = os.path.join(self.path, WARMUP_FILE)
        if not os.path.exists(path):
            return 0
        from serving.tensors import proto_to_array

        n = 0
        for record in tf.data.TFRecordDataset(path).take(MAX_WARMUP_RECORDS):
            entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if entry.WhichOneof("log_type") != "predict_log":
                continue
            req = entry.predict_log.request
            key = self.signature(req.model_spec.signature_name)
            inputs = {k: proto_to_array(k, v, 1 << 31) for k, v in req.inputs.items()}
            self.check_inputs(key, inputs)
            self.run(key, inputs)
            n += 1
        return n


def list_versions(base_path: str) -> dict:
    """{version: path} of complete version folders under base_path."""
    out = {}
    try:
        names = os.listdir(base_path)
    except OSError:
        return out
    for n in names:
        if n.isdigit():
            p = os.path.join(base_path, n)
            if os.path.isfile(os.path.join(p, "saved_model.pb")) or os.path.isfile(os.path.join(p, "saved_model.pbtxt")):
                out[int(n)] = p
    return out


def wanted_versions(model_config, on_disk: list) -> set:
    """Versions the model's version policy asks for, among those on disk."""
    policy = model_config.model_version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return set(on_disk)
    if which == "specific":
        return set(on_disk) & set(policy.specific.versions)
    n = policy.latest.num_versions if which == "latest" and policy.latest.num_versions else 1
    return set(sorted(on_disk)[-n:])


class _Model:
    def __init__(self, config):
        self.config = config
        self.available: dict[int, ServedVersion] = {}
        self.states: dict[int, tuple] = {}  # version -> (State, error message)
        self.failed: dict[int, float] = {}  # version -> mtime of the failed saved_model.pb


class ModelManager:
    """Loads, routes and retires the versions of the models in a ModelServerConfig.

    Args:
      config: a validated ``ModelServerConfig`` (see serving.config).
      on_change: optional callback(name, version, State) for metrics and logs.
    """

    def __init__(self, config, on_change=None):
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._models: dict[str, _Model] = {}
        self._on_change = on_change or (lambda *a: None)
        self._stop = threading.Event()
        self._thread = None
        self._set_config(config)

    # ------------------------------------------------------------ configuration
    def _set_config(self, config):
        with self._lock:
            wanted = {m.name: m for m in config.model_config_list.config}
            for name in list(self._models):
                if name not in wanted:
                    self._retire_all(self._models.pop(name))
            for name, mc in wanted.items():
                if name in self._models:
                    self._models[name].config = mc
                else:
                    self._models[name] = _Model(mc)

    def reload(self, config) -> None:
        """Applies a new config (HandleReloadConfigRequest) and loads what it asks for."""
        self._set_config(config)
        self.poll()
        for name, model in self._snapshot():
            for label, v in model.config.version_labels.items():
                if v not in model.available:
                    log.warning("model %s: label %s points to version %d, which is not loaded", name, label, v)

    def _snapshot(self):
        with self._lock:
            return list(self._models.items())

    def _retire_all(self, model: _Model):
        for v in list(model.available):
            model.available.pop(v)
            model.states[v] = (State.END, "")
            self._on_change(model.config.name, v, State.END)

    # ------------------------------------------------------------ polling
    def poll(self) -> None:
        """One pass over all base paths: load wanted versions, then retire unwanted ones."""
        with self._poll_lock:
            for name, model in self._snapshot():
                self._poll_model(name, model)

    def _poll_model(self, name: str, model: _Model):
        on_disk = list_versions(model.config.base_path)
        wanted = wanted_versions(model.config, list(on_disk))
        for v in sorted(wanted - set(model.available), reverse=True):
            path = on_disk[v]
            stamp = os.path.getmtime(path)
            if model.failed.get(v) == stamp:
                continue  # failed before and unchanged since: do not retry every poll
            model.states[v] = (State.LOADING, "")
            self._on_change(name, v, State.LOADING)
            t0 = time.perf_counter()
            try:
                served = ServedVersion(name, v, path)
                warm = served.warm_up()
            except Exception as e:  # a broken export must not take the server down
                log.error("model %s version %d failed to load: %s", name, v, e)
                model.failed[v] = stamp
                model.states[v] = (State.END, f"failed to load {path}: {type(e).__name__}: {e}")
                self._on_change(name, v, State.END)
                continue
            with self._lock:
                model.available[v] = served
                model.states[v] = (State.AVAILABLE, "")
            self._on_change(name, v, State.AVAILABLE)
            log.info("model %s version %d available (%.1fs, %d warm-up requests)", name, v,
                     time.perf_counter() - t0, warm)
        # Availability-preserving: retire only once something wanted is serving,
        # unless the folder itself is gone.
        have_wanted = any(v in model.available for v in wanted)
        for v in sorted(set(model.available) - wanted):
            if have_wanted or v not in on_disk:
                with self._lock:
                    model.available.pop(v, None)
                    model.states[v] = (State.END, "")
                self._on_change(name, v, State.END)
                log.info("model %s version %d retired", name, v)

    def start_polling(self, interval_seconds: float) -> None:
        """Polls every ``interval_seconds`` on a daemon thread (<= 0: never)."""
        if interval_seconds <= 0:
            return

        def loop():
            while not self._stop.wait(interval_seconds):
                try:
                    self.poll()
                except Exception:  # keep polling whatever happens on one pass
                    log.exception("poll failed")

        self._thread = threading.Thread(target=loop, name="model-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    # ------------------------------------------------------------ routing
    def resolve(self, name: str, version: int | None = None, label: str = "") -> ServedVersion:
        """The version serving a request: explicit version, label, else the newest."""
        with self._lock:
            model = self._models.get(name)
            if model is None:
                raise not_found(f"Servable not found for request: model '{name}' is not configured")
            version = _labelled(model, name, version, label)
            if version is None:
                if not model.available:
                    raise not_found(f"Servable not found for request: Latest({name}): no version "
                                    "is available yet")
                return model.available[max(model.available)]
            served = model.available.get(int(version))
            if served is None:
                raise not_found(f"Servable not found for request: Specific({name}, {version})")
            return served

    def status(self, name: str, version: int | None = None, label: str = "") -> list:
        """[(version, State, error message)] for one model, newest first."""
        with self._lock:
            model = self._models.get(name)
            if model is None:
                raise not_found(f"Could not find any versions of model {name}")
            version = _labelled(model, name, version, label)
            states = dict(model.states)
        if version is not None:
            if int(version) not in states:
                raise not_found(f"Could not find version {version} of model {name}")
            states = {int(version): states[int(version)]}
        if not states:
            raise not_found(f"Could not find any versions of model {name}")
        return [(v, s, msg) for v, (s, msg) in sorted(states.items(), reverse=True)]

    def model_names(self) -> list:
        with self._lock:
            return sorted(self._models)

    def available(self) -> list:
        """[(name, version)] of every version currently serving."""
        with self._lock:
            return [(n, v) for n, m in self._models.items() for v in sorted(m.available)]


def _labelled(model, name: str, version, label: str):
    """The version a label names (NOT_FOUND for an unknown label), else ``version`` unchanged."""
    if not label:
        return version
    if label not in model.config.version_labels:
        raise not_found(f"Unrecognized servable version label '{label}' for model '{name}'")
    return model.config.version_labels[label]
