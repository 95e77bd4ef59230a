"""What the gRPC and REST front ends share: resolve, check, run, record.

Runs on the front ends' request threads.
"""

from __future__ import annotations

import contextlib
import time

import grpc

from serving.errors import ServingError, invalid


class InferenceCore:
    """Predict / metadata / status over a ModelManager, with optional batching and metrics.

    Args:
      manager: serving.manager.ModelManager.
      batcher: serving.batching.Batcher or None (batching off).
      metrics: serving.metrics.Metrics.
      max_request_bytes: largest request accepted (also bounds each decoded tensor).
    """

    def __init__(self, manager, batcher, metrics, max_request_bytes: int):
        self.manager, self.batcher, self.metrics = manager, batcher, metrics
        self.max_request_bytes = max_request_bytes

    def resolve(self, name: str, version, label: str, signature_name: str):
        """(ServedVersion, signature key); NOT_FOUND / FAILED_PRECONDITION otherwise."""
        served = self.manager.resolve(name, version, label)
        return served, served.signature(signature_name)

    def run(self, served, key: str, inputs: dict, output_filter=()) -> dict:
        """Checks inputs and output_filter, runs (batched when on), filters outputs."""
        served.check_inputs(key, inputs)
        keys = served.output_keys[key]
        for k in output_filter:
            if k not in keys:
                raise invalid(f"output_filter: '{k}' is not an output of signature '{key}' "
                              f"(outputs: {keys})")
        if len(set(output_filter)) != len(output_filter):
            raise invalid("output_filter names an output twice")
        out = self.batcher.run(served, key, inputs) if self.batcher else served.run(key, inputs)
        if output_filter:
            out = {k: out[k] for k in output_filter}
        return out

    @contextlib.contextmanager
    def track(self, protocol: str, model: str, signature: str):
        """Records one request's status and latency; yields a dict to fill in names.

        Unknown model or signature names are recorded as "<unknown>" so that
        malformed traffic cannot grow the metric label sets without bound.
        """
        info = {"model": "<unknown>", "signature": "<unknown>"}
        t0 = time.perf_counter()
        code = "OK"
        try:
            yield info
        except ServingError as e:
            code = e.code.name
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL.name
            raise
        finally:
            self.metrics.record_request(info["model"], info["signature"], protocol, code,
                                        time.perf_counter() - t0)
