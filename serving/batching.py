"""Server-side batching of concurrent Predict calls (TensorFlow Serving's scheme).

Requests for the same model version, signature and per-row input shapes wait
in one queue; ``num_batch_threads`` threads take a queue's waiting requests as a
batch when they add up to ``max_batch_size`` rows or when the oldest has waited
``batch_timeout_micros``, concatenate each input along dimension 0, run the
signature once and split every output back along dimension 0.

A signature is batched only when every input has a leading batch dimension of
the same size (as TF Serving requires); others, and requests larger than
``max_batch_size`` on their own, run directly on the request thread. Runs on the
batch threads; callers block on an Event.
"""

from __future__ import annotations

import collections
import threading
import time

import grpc
import numpy as np

from serving.config import BatchingParameters
from serving.errors import ServingError


class _Task:
    __slots__ = ("inputs", "size", "call", "event", "result", "error", "enqueued")

    def __init__(self, inputs: dict, size: int, call=None):
        self.inputs, self.size, self.call = inputs, size, call
        self.event = threading.Event()
        self.result = self.error = None
        self.enqueued = time.monotonic()


class _Queue:
    def __init__(self, served, key: str):
        self.served, self.key = served, key
        self.tasks: collections.deque = collections.deque()
        self.rows = 0


def batch_size_of(served, key: str, inputs: dict) -> int | None:
    """Rows of a batchable request, or None when the signature cannot be batched."""
    specs = served.input_specs[key]
    sizes = set()
    for name, spec in specs.items():
        if spec.shape.rank is None or spec.shape.rank == 0 or spec.shape[0] is not None:
            return None
        sizes.add(inputs[name].shape[0])
    return sizes.pop() if len(sizes) == 1 else None


class Batcher:
    """Merges concurrent calls of the same signature into batches."""

    def __init__(self, params: BatchingParameters, on_batch=None):
        self.params = params.validate()
        self._on_batch = on_batch or (lambda name, key, rows: None)
        self._cond = threading.Condition()
        self._queues: dict = {}
        self._stopped = False
        self._threads = [threading.Thread(target=self._work, name=f"batch-{i}", daemon=True)
                         for i in range(params.num_batch_threads)]
        for t in self._threads:
            t.start()

    def run(self, served, key: str, inputs: dict, call=None) -> dict:
        """Same contract as ServedVersion.run, batched with other concurrent calls.

        A batched request whose ``call`` is over (deadline passed, client gone) by the
        time its batch is taken is answered with that status and not run; a merged batch
        itself runs to completion (batched signatures are the short ones).
        """
        size = batch_size_of(served, key, inputs)
        p = self.params
        if size is None or size == 0 or size > p.max_batch_size:
            return served.run(key, inputs, call)
        # Rows must agree in per-row shape (and dtype) to be concatenated.
        qkey = (id(served), key, tuple((n, a.dtype.str, a.shape[1:]) for n, a in sorted(inputs.items())))
        task = _Task(inputs, size, call)
        with self._cond:
            if self._stopped:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "server is shutting down")
            q = self._queues.get(qkey)
            if q is None:
                q = self._queues[qkey] = _Queue(served, key)
            if q.rows + size > p.max_enqueued_batches * p.max_batch_size:
                raise ServingError(grpc.StatusCode.UNAVAILABLE,
                                   "The batch scheduling queue to which this task was submitted is full")
            q.tasks.append(task)
            q.rows += size
            self._cond.notify()
        task.event.wait()
        if task.error is not None:
            raise task.error
        return task.result

    def _take_batch(self):
        """Under the lock: (queue, tasks) ready to run, else seconds to wait."""
        now = time.monotonic()
        timeout = self.params.batch_timeout_micros / 1e6
        wait = None
        for qkey, q in list(self._queues.items()):
            if not q.tasks:
                del self._queues[qkey]
                continue
            due = q.tasks[0].enqueued + timeout
            if q.rows >= self.params.max_batch_size or due <= now or self._stopped:
                tasks, rows = [], 0
                while q.tasks and rows + q.tasks[0].size <= self.params.max_batch_size:
                    t = q.tasks.popleft()
                    tasks.append(t)
                    rows += t.size
                q.rows -= rows
                return q, tasks
            wait = due - now if wait is None else min(wait, due - now)
        return None, wait

    def _work(self):
        while True:
            with self._cond:
                while True:
                    if self._stopped and not self._queues:
                        return
                    q, tasks = self._take_batch()
                    if q is not None:
                        break
                    self._cond.wait(timeout=tasks)
            self._run_batch(q, tasks)

    def _run_batch(self, q: _Queue, tasks: list):
        live = []
        for t in tasks:
            try:
                if t.call is not None:
                    t.call.check()
                live.append(t)
            except ServingError as e:
                t.error = e
                t.event.set()
        if live:
            self._run_live(q, live)

    def _run_live(self, q: _Queue, tasks: list):
        try:
            rows = sum(t.size for t in tasks)
            names = list(tasks[0].inputs)
            merged = {n: np.concatenate([t.inputs[n] for t in tasks]) for n in names}
            padded = self._padded_size(rows)
            if padded > rows:  # repeat the last row up to an allowed batch size
                merged = {n: np.concatenate([a, np.repeat(a[-1:], padded - rows, axis=0)])
                          for n, a in merged.items()}
            self._on_batch(q.served.name, q.key, padded)
            out = q.served.run(q.key, merged)
            for k, v in out.items():
                if v.ndim == 0 or v.shape[0] != padded:
                    raise ServingError(grpc.StatusCode.INTERNAL,
                                       f"batched output '{k}' has shape {list(v.shape)}, "
                                       f"cannot split {padded} rows")
            start = 0
            for t in tasks:
                t.result = {k: v[start:start + t.size] for k, v in out.items()}
                start += t.size
        except ServingError as e:
            # One bad request poisons its batch-mates only if run together; rerun
            # each alone so every caller gets its own answer.
            if len(tasks) > 1:
                for t in tasks:
                    try:
                        t.result = q.served.run(q.key, t.inputs)
                    except ServingError as e1:
                        t.error = e1
            else:
                tasks[0].error = e
        except Exception as e:  # never leave a caller waiting
            for t in tasks:
                t.error = ServingError(grpc.StatusCode.INTERNAL, f"batch failed: {type(e).__name__}: {e}")
        finally:
            for t in tasks:
                t.event.set()

    def _padded_size(self, rows: int) -> int:
        for s in self.params.allowed_batch_sizes:
            if s >= rows:
                return s
        return rows

    def stop(self) -> None:
        """Runs what is queued, then ends the batch threads."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=30)
