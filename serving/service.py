"""What the gRPC and REST front ends share: resolve, check, run, record, and each
request's deadline.

Runs on the front ends' request threads, plus one watchdog thread that cancels
the TensorFlow call of a request whose deadline has passed.
"""

from __future__ import annotations

import contextlib
import heapq
import threading
import time

import grpc
from tensorflow.python.eager import cancellation

from serving.errors import ServingError, invalid


class Call:
    """One request's deadline and cancellation, shared by the front end and the TensorFlow call.

    ``manager`` is handed to the signature call (``ServedVersion.run``): ``cancel()``
    stops it between ops (a ``tf.while_loop`` stops at its next iteration), as TF
    Serving's session-run timeout does. Front ends cancel when the client has gone
    (gRPC: RPC terminated; REST: connection closed); the core's watchdog cancels at
    the deadline.
    """

    def __init__(self, timeout: float | None):
        self.manager = cancellation.CancellationManager()
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.reason = ""

    def cancel(self, reason: str = "the client went away") -> None:
        if not self.reason:
            self.reason = reason
        self.manager.start_cancel()

    def error(self) -> ServingError:
        """The status for a call that was cancelled (DEADLINE_EXCEEDED or CANCELLED)."""
        if self.reason.startswith("deadline"):
            return ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, self.reason)
        return ServingError(grpc.StatusCode.CANCELLED, f"cancelled: {self.reason}")

    def check(self) -> None:
        """Raises the cancellation status if the call is already over (before any work)."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.cancel("deadline exceeded before running")
        if self.manager.is_cancelled:
            raise self.error()


class _Watchdog:
    """One thread that cancels calls at their deadlines (a heap, not a timer thread per call)."""

    def __init__(self):
        self._heap, self._cond, self._seq = [], threading.Condition(), 0
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="deadlines", daemon=True)
        self._thread.start()

    def watch(self, call: Call) -> None:
        if call.deadline is None:
            return
        with self._cond:
            self._seq += 1
            wake = not self._heap or call.deadline < self._heap[0][0]
            heapq.heappush(self._heap, (call.deadline, self._seq, call))
            if wake:  # only a new earliest deadline changes the wait: no thread switch per request
                self._cond.notify()

    def _loop(self):
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    _, _, call = heapq.heappop(self._heap)
                    call.cancel("deadline exceeded while running")
                self._cond.wait(self._heap[0][0] - now if self._heap else None)

    def stop(self):
        with self._cond:
            self._stopped = True
            self._cond.notify()


class InferenceCore:
    """Predict / metadata / status over a ModelManager, with optional batching and metrics.

    Args:
      manager: serving.manager.ModelManager.
      batcher: serving.batching.Batcher or None (batching off).
      metrics: serving.metrics.Metrics.
      max_request_bytes: largest request accepted (also bounds each decoded tensor).
      request_timeout: seconds a request may run when its client set no deadline (REST
        always; gRPC without a deadline); None = unbounded.
    """

    def __init__(self, manager, batcher, metrics, max_request_bytes: int, request_timeout: float | None = None):
        self.manager, self.batcher, self.metrics = manager, batcher, metrics
        self.max_request_bytes, self.request_timeout = max_request_bytes, request_timeout
        self._watchdog = _Watchdog()

    def call(self, timeout: float | None) -> Call:
        """A Call whose TensorFlow work is cancelled ``timeout`` seconds from now (None: never)."""
        c = Call(timeout)
        self._watchdog.watch(c)
        return c

    def stop(self) -> None:
        self._watchdog.stop()

    def resolve(self, name: str, version, label: str, signature_name: str):
        """(ServedVersion, signature key); NOT_FOUND / FAILED_PRECONDITION otherwise."""
        served = self.manager.resolve(name, version, label)
        return served, served.signature(signature_name)

    def run(self, served, key: str, inputs: dict, output_filter=(), call: Call | None = None) -> dict:
        """Checks inputs and output_filter, runs (batched when on) within ``call``'s deadline,
        filters outputs."""
        served.check_inputs(key, inputs)
        keys = served.output_keys[key]
        for k in output_filter:
            if k not in keys:
                raise invalid(f"output_filter: '{k}' is not an output of signature '{key}' "
                              f"(outputs: {keys})")
        if len(set(output_filter)) != len(output_filter):
            raise invalid("output_filter names an output twice")
        if call is not None:
            call.check()
        out = self.batcher.run(served, key, inputs, call) if self.batcher else served.run(key, inputs, call)
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
