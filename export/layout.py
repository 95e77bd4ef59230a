"""TensorFlow Serving's folder layout: version folders, warm-up requests, model cards, models.config.

Layout written under an export base E::

    E/models.config                                   model_config_list for every model in E
    E/<model>/<N>/saved_model.pb, variables/          one integer folder per version
    E/<model>/<N>/assets.extra/tf_serving_warmup_requests
    E/<model>/<N>/assets.extra/model_card.json

A version is written into a temporary folder ``E/<model>/.tmp-v<N>-<pid>-<rand>``
(TensorFlow Serving only looks at integer folder names) and renamed to
``E/<model>/<N>`` only once complete, so a server polling E never sees half a
model, and an export that dies midway leaves no version folder behind (its
temporary folder is removed on error, or by the next export if the process
was killed). The next version is ``max(existing) + 1`` (1 for the first);
an explicit version that already exists is an error, never an overwrite.

Warm-up file: a TFRecord of ``tensorflow.serving.PredictionLog`` records, one
``PredictRequest`` per signature, which TensorFlow Serving replays when it loads
the version so that the first real request does not pay for graph initialisation.
Host-side Python; nothing here runs in the served graph.
"""

from __future__ import annotations

import tfmodels  # noqa: F401  (tf-keras before TensorFlow)

import datetime
import json
import os
import re
import shutil
import uuid

import numpy as np
import tensorflow as tf

from tfmodels import files
from tfmodels.workdir import read_json, read_metrics

WARMUP_FILE = "tf_serving_warmup_requests"
MODEL_CARD_FILE = "model_card.json"
ASSETS_EXTRA = "assets.extra"
_TMP_PREFIX = ".tmp-v"
_TMP_RE = re.compile(r"^\.tmp-v(\d+)-(\d+)-[0-9a-f]+$")


def existing_versions(model_dir: str) -> list[int]:
    """Sorted integer version folders in ``model_dir`` (empty if it does not exist)."""
    if not os.path.isdir(model_dir):
        return []
    return sorted(int(n) for n in os.listdir(model_dir)
                  if n.isdigit() and os.path.isdir(os.path.join(model_dir, n)))


def next_version(model_dir: str) -> int:
    """max(existing versions) + 1, or 1."""
    versions = existing_versions(model_dir)
    return versions[-1] + 1 if versions else 1


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(model_dir: str) -> list[str]:
    """Removes temporary folders left by exports whose process no longer runs; returns them."""
    removed = []
    if not os.path.isdir(model_dir):
        return removed
    for name in os.listdir(model_dir):
        m = _TMP_RE.match(name)
        if m and not _pid_alive(int(m.group(2))):
            shutil.rmtree(os.path.join(model_dir, name), ignore_errors=True)
            removed.append(name)
    return removed


def _before_commit(tmp_dir: str) -> None:
    """Called when a version is complete in its temporary folder, just before the rename.

    A seam for tests that simulate an export dying at the last moment.
    """


def save_version(obj, export_base: str, model_name: str, signatures: dict, version: int | None = None,
                 extra_files: dict | None = None, warmup: list | None = None) -> str:
    """Saves ``obj`` as ``<export_base>/<model_name>/<version>/`` atomically; returns that path.

    Args:
      obj: the trackable to save (a ``tf.Module``).
      export_base: E.
      model_name: the model folder (``export.signatures.MODEL_NAMES``).
      signatures: signature name -> concrete function.
      version: the integer version; None = next free one.
      extra_files: file name -> bytes or JSON-able object, written to ``assets.extra/``.
      warmup: [(signature, {input key: value})] written as the warm-up file.

    Raises:
      ValueError: the version exists already or is not a positive integer.
    """
    model_dir = os.path.join(export_base, model_name)
    os.makedirs(model_dir, exist_ok=True)
    remove_stale_temporaries(model_dir)
    if version is None:
        version = next_version(model_dir)
    if int(version) < 1:
        raise ValueError(f"--version must be a positive integer, got {version}")
    version = int(version)
    final = os.path.join(model_dir, str(version))
    if os.path.exists(final):
        raise ValueError(f"{final} exists already: versions are never overwritten "
                         f"(existing: {existing_versions(model_dir)}; omit --version to use the next one)")
    tmp = os.path.join(model_dir, f"{_TMP_PREFIX}{version}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tf.saved_model.save(obj, tmp, signatures=signatures)
        extra = os.path.join(tmp, ASSETS_EXTRA)
        os.makedirs(extra, exist_ok=True)
        if warmup:
            write_warmup_requests(os.path.join(extra, WARMUP_FILE), model_name, warmup)
        for name, content in (extra_files or {}).items():
            data = content if isinstance(content, bytes) else (json.dumps(content, indent=2, sort_keys=True,
                                                                          default=_json_default) + "\n").encode()
            with open(os.path.join(extra, name), "wb") as f:
                f.write(data)
        _before_commit(tmp)
        # rename() of a folder onto an existing non-empty folder fails: a concurrent
        # export that took the same number first wins and this one errors out.
        try:
            os.rename(tmp, final)
        except OSError as e:
            raise ValueError(f"cannot create {final}: {e.strerror} (another export took version {version}?)") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _json_default(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def predict_request(model_name: str, signature: str, inputs: dict):
    """A ``tensorflow.serving.PredictRequest`` with tensors made from NumPy values."""
    from tensorflow_serving.apis import predict_pb2

    req = predict_pb2.PredictRequest()
    req.model_spec.name = model_name
    req.model_spec.signature_name = signature
    for key, value in inputs.items():
        req.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return req


def write_warmup_requests(path: str, model_name: str, requests: list) -> None:
    """Writes [(signature, inputs)] as a TFRecord of PredictionLog (TensorFlow Serving's warm-up format)."""
    from tensorflow_serving.apis import prediction_log_pb2

    with tf.io.TFRecordWriter(path) as writer:
        for signature, inputs in requests:
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=predict_request(model_name, signature, inputs)))
            writer.write(log.SerializeToString())


def read_warmup_requests(path: str) -> list:
    """The PredictRequests of a warm-up file, in order."""
    from tensorflow_serving.apis import prediction_log_pb2

    out = []
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        out.append(prediction_log_pb2.PredictionLog.FromString(record).predict_log.request)
    return out


def model_card(model_name: str, workdirs: dict, signatures: dict, settings: dict | None = None) -> dict:
    """The model card: what was exported, from which runs, trained how long, how good.

    Args:
      model_name: the served model name.
      workdirs: role ("recommender", "gan") -> work directory; each contributes its
        config.json, model.json (kind, training step, data set), and metrics.jsonl
        (the last record and the best by ``auc_all`` when present).
      signatures: signature name -> concrete function (inputs/outputs are listed).
      settings: extra fixed settings of the export (limits, design settings).
    """
    card = {"model": model_name, "export_time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "tensorflow_version": tf.__version__, "settings": settings or {}, "sources": {}, "signatures": {}}
    for role, workdir in workdirs.items():
        src = {"workdir": os.path.abspath(workdir)}
        for name in ("config.json", "model.json"):
            found = read_json(os.path.join(workdir, name))
            if found is not None:
                src[name[:-5]] = found
        info = src.get("model", {})
        src["kind"] = info.get("kind")
        src["training_steps"] = info.get("step")
        src["dataset"] = info.get("dataset") or src.get("config", {}).get("data", {}).get("dataset")
        records = read_metrics(workdir)
        src["metrics_last"] = records[-1] if records else None
        scored = [r for r in records if isinstance(r.get("auc_all"), (int, float))]
        src["metrics_best"] = max(scored, key=lambda r: r["auc_all"]) if scored else None
        card["sources"][role] = src
    for name, fn in signatures.items():
        args = fn.structured_input_signature[1]
        outputs = fn.structured_outputs
        card["signatures"][name] = {
            "inputs": {k: {"dtype": v.dtype.name, "shape": v.shape.as_list() if v.shape.rank is not None else None}
                       for k, v in sorted(args.items())},
            "outputs": {k: {"dtype": v.dtype.name, "shape": v.shape.as_list() if v.shape.rank is not None else None}
                        for k, v in sorted(outputs.items())},
        }
    return card


def write_models_config(export_base: str, model_names=None, path: str | None = None,
                        base_path_prefix: str | None = None) -> str:
    """Writes ``models.config`` (a ModelServerConfig text proto with a model_config_list); returns its path.

    Args:
      export_base: E; its model folders are listed.
      model_names: which models (default: every folder of E holding an integer version).
      path: where to write (default ``E/models.config``), atomically.
      base_path_prefix: the folder E as the server sees it (e.g. ``/models`` inside
        the tensorflow/serving container); default the absolute path of E.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    if model_names is None:
        model_names = sorted(n for n in os.listdir(export_base) if existing_versions(os.path.join(export_base, n)))
    prefix = base_path_prefix or os.path.abspath(export_base)
    config = model_server_config_pb2.ModelServerConfig()
    for name in model_names:
        entry = config.model_config_list.config.add()
        entry.name = name
        entry.base_path = prefix.rstrip("/") + "/" + name
        entry.model_platform = "tensorflow"
    path = path or os.path.join(export_base, "models.config")
    return files.write_text(path, text_format.MessageToString(config))
