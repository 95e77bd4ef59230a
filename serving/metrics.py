"""Prometheus metrics in the text exposition format (no client library needed).

Served at ``/monitoring/prometheus/metrics`` on the REST port, as TensorFlow
Serving does when monitoring is enabled. Metrics:

* ``tfmodels_serving_requests_total{model,signature,protocol,code}``: counter.
* ``tfmodels_serving_request_latency_seconds{model,signature,protocol}``: histogram
  of server-side time from request decoded to response encoded.
* ``tfmodels_serving_batch_size{model,signature}``: histogram of executed batch sizes
  (only with batching on).
* ``tfmodels_serving_model_version_available{model,version}``: 1 while serving.
"""

from __future__ import annotations

import bisect
import threading

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def _labels(names, values) -> str:
    def esc(v):
        return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return ",".join(f'{n}="{esc(v)}"' for n, v in zip(names, values))


class _Histogram:
    def __init__(self, buckets):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.n = 0

    def observe(self, value: float):
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.n += 1


class Metrics:
    """Thread-safe counters and histograms; ``render()`` gives the exposition text."""

    def __init__(self):
        self._lock = threading.Lock()
        self._requests: dict = {}
        self._latency: dict = {}
        self._batches: dict = {}
        self._versions: dict = {}

    def record_request(self, model: str, signature: str, protocol: str, code: str, seconds: float):
        with self._lock:
            k = (model, signature, protocol, code)
            self._requests[k] = self._requests.get(k, 0) + 1
            h = self._latency.setdefault((model, signature, protocol), _Histogram(LATENCY_BUCKETS))
            h.observe(seconds)

    def record_batch(self, model: str, signature: str, size: int):
        with self._lock:
            self._batches.setdefault((model, signature), _Histogram(BATCH_BUCKETS)).observe(size)

    def set_version(self, model: str, version: int, available: bool):
        with self._lock:
            self._versions[(model, str(version))] = 1 if available else 0

    def request_count(self, model: str = None, code: str = None) -> int:
        with self._lock:
            return sum(n for (m, _, _, c), n in self._requests.items()
                       if (model is None or m == model) and (code is None or c == code))

    def render(self) -> str:
        out = []
        with self._lock:
            out += ["# HELP tfmodels_serving_requests_total Requests by model, signature, protocol and status.",
                    "# TYPE tfmodels_serving_requests_total counter"]
            for k, n in sorted(self._requests.items()):
                out.append(f"tfmodels_serving_requests_total{{{_labels(('model', 'signature', 'protocol', 'code'), k)}}} {n}")
            self._render_hist(out, "tfmodels_serving_request_latency_seconds",
                              "Server-side request latency in seconds.", ("model", "signature", "protocol"),
                              self._latency)
            self._render_hist(out, "tfmodels_serving_batch_size", "Rows per executed batch.",
                              ("model", "signature"), self._batches)
            out += ["# HELP tfmodels_serving_model_version_available 1 while a model version serves.",
                    "# TYPE tfmodels_serving_model_version_available gauge"]
            for k, v in sorted(self._versions.items()):
                out.append(f"tfmodels_serving_model_version_available{{{_labels(('model', 'version'), k)}}} {v}")
        return "\n".join(out) + "\n"

    @staticmethod
    def _render_hist(out, name, help_text, label_names, hists):
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        for k, h in sorted(hists.items()):
            base = _labels(label_names, k)
            cum = 0
            for le, c in zip(list(h.buckets) + ["+Inf"], h.counts):
                cum += c
                out.append(f'{name}_bucket{{{base},le="{le}"}} {cum}')
            out.append(f"{name}_sum{{{base}}} {h.sum}")
            out.append(f"{name}_count{{{base}}} {h.n}")
