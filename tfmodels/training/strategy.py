"""Choosing a ``tf.distribute`` strategy by name.

- ``default``: the default strategy (one device, no replicas). Fastest on a CPU.
- ``mirrored``: ``MirroredStrategy`` over all GPUs; without GPUs, over all logical
  CPU devices (split one CPU into several with ``split_cpu(n)`` *before*
  TensorFlow initialises its devices; tests use 2 to exercise cross-replica code).
- ``multi_worker``: ``MultiWorkerMirroredStrategy`` over the cluster in the
  ``TF_CONFIG`` environment variable (JSON: {"cluster": {"worker": ["host:port",
  ...]}, "task": {"type": "worker", "index": i}}); every worker runs the same
  program. The first worker (or the "chief") writes summaries and checkpoints;
  see ``is_chief``.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")


def split_cpu(num_devices: int) -> None:
    """Splits the physical CPU into ``num_devices`` logical devices.

    Must run before TensorFlow initialises its devices (before any op or
    strategy is created); raises RuntimeError otherwise.
    """
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)])


_BUILT: dict = {}


def build_strategy(name: str) -> tf.distribute.Strategy:
    """Returns the strategy called ``name`` (default, mirrored, multi_worker), one per process.

    Two MirroredStrategy objects in one process hand out the same collective
    instance keys, so a second training run (e.g. VBPR after its classifier)
    would hit the first one's cached all-reduce shapes ("Shape mismatch in the
    collective instance 100"); every run in a process therefore shares one.
    """
    if name not in _BUILT:
        _BUILT[name] = _new_strategy(name)
    return _BUILT[name]


def _new_strategy(name: str) -> tf.distribute.Strategy:
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if tf.config.list_logical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=cpus)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy multi_worker needs the TF_CONFIG environment variable "
                             "(cluster and task of this worker); see BUILD.md")
        try:
            json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as e:
            raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from None
        # RING all-reduce works on CPUs and GPUs alike; NCCL only on GPUs.
        impl = (tf.distribute.experimental.CommunicationImplementation.NCCL
                if tf.config.list_physical_devices("GPU")
                else tf.distribute.experimental.CommunicationImplementation.RING)
        return tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(implementation=impl))
    raise ValueError(f"train.strategy: unknown strategy {name!r}; choose one of {list(STRATEGIES)}")


def worker_info(strategy: tf.distribute.Strategy) -> tuple[str | None, int]:
    """(task_type, task_id) of this process; (None, 0) outside multi-worker training."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return None, 0
    return resolver.task_type, int(resolver.task_id or 0)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True for the process that writes summaries, metrics and the real checkpoints.

    That is the "chief" task if the cluster has one, else worker 0, else (single
    process) always.
    """
    task_type, task_id = worker_info(strategy)
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and "chief" not in cluster
