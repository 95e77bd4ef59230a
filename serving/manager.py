"""Model manager: which SavedModel versions are loaded, and their lifecycle.

Mirrors TensorFlow Serving's file-system source and availability-preserving
policy: every ``poll`` lists the version folders under each model's ``base_path``
(names of ASCII decimal digits within int64; other names, such as an exporter's
temporary folder, are skipped with one log line, and folders without
``saved_model.pb`` are not versions yet), picks the versions the version policy
wants, loads the missing ones, and only then retires versions no longer wanted.
A retired version is dropped from the routing table; requests already running
on it hold their own reference and finish normally. A version that fails to
load is retried (``max_load_retries`` times, waiting ``load_retry_seconds``
doubled at each attempt, or at once when its files change), as TF Serving's
``--max_num_load_retries`` / ``--load_retry_interval_micros``: a version copied
non-atomically (rsync, a bucket sync) loads once its files are complete, and the
previous version serves until then. Versions gone from disk are forgotten. A
base path that is missing, not a folder or holds no versions is logged, once per
change of that state. Each model is polled on its own: one model's trouble
never stops the others.

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
from tensorflow.python.eager import cancellation
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_status_pb2, prediction_log_pb2

from serving.errors import ServingError, code_from_int, failed_precondition, invalid, not_found

log = logging.getLogger("serving")

State = get_model_status_pb2.ModelVersionStatus.State
INIT_OP = "__saved_model_init_op"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # as TensorFlow Serving
MAX_VERSION = 2**63 - 1  # versions are int64 in every proto that carries them
DEFAULT_MAX_LOAD_RETRIES = 5
DEFAULT_LOAD_RETRY_SECONDS = 5.0


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


# TensorFlow takes the cancellation manager of a function call from one module-global
# (set by cancellation.CancellationManagerContext), so concurrent request threads would
# pick up each other's managers. Each thread names its own instead; TensorFlow reads it
# through cancellation.context() when the call starts (eager/context.py call_function).
_thread_call = threading.local()
cancellation.context = lambda: getattr(_thread_call, "manager", None)


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

    def run(self, key: str, inputs: dict, call=None) -> dict:
        """Calls signature ``key`` on checked NumPy inputs; returns NumPy outputs.

        TensorFlow errors keep their status code (tf.errors codes are gRPC codes);
        anything else raised by the call is reported as INVALID_ARGUMENT, since the
        inputs already passed the signature checks and only their values remain.
        A ``serving.service.Call`` cancels the run at its deadline or when its client
        has gone (DEADLINE_EXCEEDED / CANCELLED).
        """
        fn = self.functions[key]
        _thread_call.manager = call.manager if call is not None else None
        try:
            out = fn(**{k: tf.constant(v) for k, v in inputs.items()})
        except tf.errors.CancelledError:
            if call is None:
                raise
            raise call.error() from None
        except tf.errors.OpError as e:
            raise ServingError(code_from_int(e.error_code),
                               f"signature '{key}' of model '{self.name}': {e.message}") from None
        except (TypeError, ValueError) as e:
            raise invalid(f"signature '{key}' of model '{self.name}': {e}") from None
        finally:
            _thread_call.manager = None
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


def parse_version(name: str) -> int | None:
    """The version a folder name stands for: ASCII decimal digits within int64, else None.

    ``str.isdigit`` alone accepts "²" and "١" (which ``int`` reads as 1).
    """
    if name.isascii() and name.isdigit() and int(name) <= MAX_VERSION:
        return int(name)
    return None


def list_versions(base_path: str) -> tuple:
    """({version: path} of complete version folders, [skipped names], problem or "") for base_path.

    ``problem`` says why nothing could be listed (the path is missing, not a folder,
    unreadable, a symlink loop).
    """
    try:
        names = os.listdir(base_path)
    except OSError as e:
        if not os.path.lexists(base_path):
            return {}, [], f"base path {base_path} does not exist"
        if os.path.exists(base_path) and not os.path.isdir(base_path):
            return {}, [], f"base path {base_path} is not a folder"
        return {}, [], f"cannot list base path {base_path}: {e.strerror or e}"
    out, skipped = {}, []
    for n in sorted(names):
        v = parse_version(n)
        p = os.path.join(base_path, n)
        if v is None or v in out:  # "007" beside "7" is the same version: the first name wins
            if os.path.isdir(p):
                skipped.append(n)
            continue
        if os.path.isfile(os.path.join(p, "saved_model.pb")) or os.path.isfile(os.path.join(p, "saved_model.pbtxt")):
            out[v] = p
    return out, skipped, ""


def _stamp(path: str) -> tuple:
    """Modification times of what a copy writes last, so a changed folder is retried at once."""
    stamps = []
    for p in (path, os.path.join(path, "saved_model.pb"), os.path.join(path, "variables"),
              os.path.join(path, "variables", "variables.index")):
        try:
            stamps.append(os.stat(p).st_mtime_ns)
        except OSError:
            stamps.append(None)
    return tuple(stamps)


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


class _Failure:
    """A version that failed to load: how often, when to try next, what its files looked like."""

    def __init__(self, stamp: tuple):
        self.stamp, self.attempts, self.next_try = stamp, 0, 0.0


class _Model:
    def __init__(self, config):
        self.config = config
        self.available: dict[int, ServedVersion] = {}
        self.states: dict[int, tuple] = {}  # version -> (State, error message)
        self.failed: dict[int, _Failure] = {}
        self.logged: set = set()  # skipped folder names already logged
        self.problem = ""  # what is wrong with the base path, as last logged


class ModelManager:
    """Loads, routes and retires the versions of the models in a ModelServerConfig.

    Args:
      config: a validated ``ModelServerConfig`` (see serving.config).
      on_change: optional callback(name, version, State) for metrics and logs.
      max_load_retries: retries of a version that failed to load (0 = never retry).
      load_retry_seconds: wait before the first retry; doubled at each further one.
    """

    def __init__(self, config, on_change=None, max_load_retries: int = DEFAULT_MAX_LOAD_RETRIES,
                 load_retry_seconds: float = DEFAULT_LOAD_RETRY_SECONDS):
        self.max_load_retries, self.load_retry_seconds = max_load_retries, load_retry_seconds
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
        """Applies a new config (HandleReloadConfigRequest) and loads what it asks for.

        Raises FAILED_PRECONDITION when a version label points at a version that is not
        available, as TF Serving does (the models are loaded all the same).
        """
        self._set_config(config)
        self.poll()
        self.check_labels()

    def check_labels(self) -> None:
        """FAILED_PRECONDITION naming every label that points at a version not available."""
        bad = [f"label '{label}' of model '{name}' points to version {v}, which is not available"
               for name, model in self._snapshot() for label, v in sorted(model.config.version_labels.items())
               if v not in model.available]
        if bad:
            raise failed_precondition("; ".join(bad))

    def problems(self) -> list:
        """[(model, message)]: base paths that cannot be read and versions that failed to load."""
        out = []
        for name, model in self._snapshot():
            if model.problem:
                out.append((name, model.problem))
            out += [(name, msg) for v, (s, msg) in sorted(model.states.items()) if s == State.END and msg]
        return out

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
                try:
                    self._poll_model(name, model)
                except Exception as e:  # one model's trouble must not stop the others
                    log.error("model %s: poll failed: %s: %s", name, type(e).__name__, e)

    def _poll_model(self, name: str, model: _Model):
        on_disk, skipped, problem = list_versions(model.config.base_path)
        if not problem and not on_disk:
            problem = f"no versions found under base path {model.config.base_path}"
        if problem != model.problem:  # logged when it changes, not on every poll
            if problem:
                log.warning("model %s: %s", name, problem)
            elif model.problem:
                log.info("model %s: base path %s readable again", name, model.config.base_path)
            model.problem = problem
        for n in skipped:
            if n not in model.logged:
                model.logged.add(n)
                log.warning("model %s: skipping folder %r under %s: not a version number (ASCII decimal "
                            "digits, at most %d)", name, n, model.config.base_path, MAX_VERSION)
        wanted = wanted_versions(model.config, list(on_disk))
        for v in sorted(wanted - set(model.available), reverse=True):
            self._load(name, model, v, on_disk[v])
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
        with self._lock:  # versions that left the disk are forgotten (unless still serving)
            for v in [v for v in model.states if v not in on_disk and v not in model.available]:
                model.states.pop(v)
                model.failed.pop(v, None)

    def _load(self, name: str, model: _Model, v: int, path: str) -> None:
        """Loads one version, unless it failed before and its retry is not due (or used up)."""
        stamp = _stamp(path)
        failure = model.failed.get(v)
        if failure is not None and failure.stamp == stamp:
            if failure.attempts > self.max_load_retries or time.monotonic() < failure.next_try:
                return
        elif failure is not None:  # its files changed since: a fresh start
            failure = None
        model.states[v] = (State.LOADING, "")
        self._on_change(name, v, State.LOADING)
        t0 = time.perf_counter()
        try:
            served = ServedVersion(name, v, path)
            warm = served.warm_up()
        except Exception as e:  # a broken export must not take the server down
            failure = failure or _Failure(stamp)
            failure.attempts += 1
            failure.next_try = time.monotonic() + self.load_retry_seconds * 2 ** (failure.attempts - 1)
            left = self.max_load_retries - failure.attempts + 1
            retry = (f"retrying in {self.load_retry_seconds * 2 ** (failure.attempts - 1):g}s ({left} retries left)"
                     if left > 0 else "no retries left; retried when its files change")
            log.error("model %s version %d failed to load (%s): %s: %s", name, v, retry, type(e).__name__, e)
            model.failed[v] = failure
            model.states[v] = (State.END, f"failed to load {path}: {type(e).__name__}: {e}")
            self._on_change(name, v, State.END)
            return
        model.failed.pop(v, None)
        with self._lock:
            model.available[v] = served
            model.states[v] = (State.AVAILABLE, "")
        self._on_change(name, v, State.AVAILABLE)
        log.info("model %s version %d available (%.1fs, %d warm-up requests)", name, v,
                 time.perf_counter() - t0, warm)

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
    """The version a label names (INVALID_ARGUMENT for an unknown label, as TF Serving), else ``version``."""
    if not label:
        return version
    if label not in model.config.version_labels:
        raise invalid(f"Unrecognized servable version label '{label}' for model '{name}'")
    return model.config.version_labels[label]
