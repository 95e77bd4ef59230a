"""models.config and batching-parameters files, in TensorFlow Serving's text formats.

``models.config`` is a text-format ``tensorflow.serving.ModelServerConfig`` with a
``model_config_list``; each entry has ``name``, ``base_path``, ``model_platform``
("tensorflow"), an optional ``model_version_policy`` (``latest { num_versions: N }``
(default N=1), ``all {}``, ``specific { versions: ... }``) and optional
``version_labels`` (label -> version). A relative ``base_path`` is taken relative
to the config file's folder (the real server needs absolute paths).

The batching file is a text-format ``BatchingParameters`` message as passed to
``tensorflow_model_server --batching_parameters_file``.
"""

from __future__ import annotations

import dataclasses
import os
import re

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2


def parse_model_config(text: str, base_dir: str = "", source: str = "models.config"):
    """Parses and validates a ModelServerConfig text proto.

    Returns a ``ModelServerConfig`` whose base paths are absolute. Raises
    ValueError naming ``source`` and the offending model or field.
    """
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        raise ValueError(f"{source}: not a ModelServerConfig text proto: {e}") from None
    return validate_model_config(config, base_dir, source)


def validate_model_config(config, base_dir: str = "", source: str = "config"):
    """Checks a ModelServerConfig (from a file or a ReloadConfigRequest)."""
    if config.WhichOneof("config") != "model_config_list":
        raise ValueError(f"{source}: only model_config_list is supported")
    seen = set()
    for m in config.model_config_list.config:
        if not m.name:
            raise ValueError(f"{source}: a model has no name")
        if m.name in seen:
            raise ValueError(f"{source}: model name '{m.name}' appears twice")
        seen.add(m.name)
        if not m.base_path:
            raise ValueError(f"{source}: model '{m.name}' has no base_path")
        if m.model_platform not in ("", "tensorflow"):
            raise ValueError(f"{source}: model '{m.name}': model_platform '{m.model_platform}' "
                             "is not supported (only 'tensorflow')")
        if base_dir and not os.path.isabs(m.base_path):
            m.base_path = os.path.normpath(os.path.join(base_dir, m.base_path))
        policy = m.model_version_policy
        if policy.WhichOneof("policy_choice") == "latest" and policy.latest.num_versions < 0:
            raise ValueError(f"{source}: model '{m.name}': latest.num_versions must be >= 1")
        if policy.WhichOneof("policy_choice") == "specific" and not policy.specific.versions:
            raise ValueError(f"{source}: model '{m.name}': specific policy lists no versions")
        for label, version in m.version_labels.items():
            if version < 0:
                raise ValueError(f"{source}: model '{m.name}': label '{label}' -> bad version {version}")
    return config


def load_model_config(path: str):
    """Reads ``path`` (a models.config file); see parse_model_config."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return parse_model_config(text, os.path.dirname(os.path.abspath(path)), path)


def single_model_config(name: str, base_path: str):
    """The config ``tensorflow_model_server --model_name N --model_base_path P`` implies."""
    config = model_server_config_pb2.ModelServerConfig()
    m = config.model_config_list.config.add()
    m.name, m.base_path, m.model_platform = name, os.path.abspath(base_path), "tensorflow"
    return config


@dataclasses.dataclass
class BatchingParameters:
    """Server-side batching, with TensorFlow Serving's parameter names and defaults.

    Concurrent Predict calls on the same model version and signature are merged
    along dimension 0 into batches of at most ``max_batch_size`` rows; a batch is
    run when full or ``batch_timeout_micros`` after its first request arrived, by
    one of ``num_batch_threads`` threads. At most ``max_enqueued_batches`` batches
    wait per signature; beyond that requests fail with UNAVAILABLE.
    ``allowed_batch_sizes`` (ascending, last = max_batch_size) pads a batch up to
    the next allowed size by repeating its last row.
    """

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    allowed_batch_sizes: list = dataclasses.field(default_factory=list)
    pad_variable_length_inputs: bool = False

    def validate(self, source: str = "batching parameters"):
        for f in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, f) < 1:
                raise ValueError(f"{source}: {f} must be >= 1, got {getattr(self, f)}")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"{source}: batch_timeout_micros must be >= 0")
        sizes = self.allowed_batch_sizes
        if sizes and (sorted(sizes) != sizes or sizes[-1] != self.max_batch_size or sizes[0] < 1):
            raise ValueError(f"{source}: allowed_batch_sizes must ascend and end at max_batch_size")
        return self


# BatchingParameters fields TF Serving knows but this server ignores.
_IGNORED = {"thread_pool_name", "enable_large_batch_splitting", "max_execution_batch_size",
            "batch_padding_policy", "mixed_priority_batching_policy",
            "enable_priority_aware_batch_scheduler", "low_priority_max_batch_size",
            "low_priority_batch_timeout_micros", "low_priority_allowed_batch_sizes",
            "low_priority_max_enqueued_batches"}


def parse_batching_parameters(text: str, source: str = "batching parameters") -> BatchingParameters:
    """Parses the text-format BatchingParameters (``name { value: X }`` / ``name: X``)."""
    params = BatchingParameters()
    text = re.sub(r"#[^\n]*", "", text)
    pos = 0
    token = re.compile(r"\s*(\w+)\s*(?:\{\s*value\s*:\s*([^\s}]+)\s*\}|:\s*([^\s{}]+))\s*")
    while pos < len(text.strip()) and pos < len(text):
        m = token.match(text, pos)
        if not m:
            if text[pos:].strip():
                raise ValueError(f"{source}: cannot parse near '{text[pos:pos + 40].strip()}'")
            break
        pos = m.end()
        key, raw = m.group(1), m.group(2) if m.group(2) is not None else m.group(3)
        raw = raw.strip('"')
        if key in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"):
            setattr(params, key, int(raw))
        elif key == "allowed_batch_sizes":
            params.allowed_batch_sizes.append(int(raw))
        elif key == "pad_variable_length_inputs":
            params.pad_variable_length_inputs = raw.lower() == "true"
        elif key not in _IGNORED:
            raise ValueError(f"{source}: unknown field '{key}'")
    return params.validate(source)


def load_batching_parameters(path: str) -> BatchingParameters:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"batching parameters file not found: {path}")
    with open(path, encoding="utf-8") as f:
        return parse_batching_parameters(f.read(), path)
