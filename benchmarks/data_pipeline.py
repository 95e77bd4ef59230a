"""Data pipeline benchmark: H&M images decoded once and cached, then reused; BPR triples per second.

Measures, in one run on this machine:

1. first pass: ``load_images`` on the H&M layout at --resolution with an empty
   cache (read + decode every JPEG, pad to square, Lanczos resize, write the
   .npy cache atomically);
2. cached pass: ``load_images`` again (maps the .npy) and reading every pixel
   of it, plus random batches of 128 rows (the training access pattern); the
   ratio first / cached is printed. The cache file was just written, so it is
   likely in the OS page cache: this is the warm-cache figure an epoch sees;
3. triples/s of the ``tf.data`` BPR sampler on the H&M leave-one-out split,
   consumed by Python iteration and inside a ``tf.function`` (no Python per batch).

Usage::

    nice python benchmarks/data_pipeline.py --hm-dir ../shared/data/hm --resolution 128
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

import tfmodels  # noqa: E402,F401  (before TensorFlow)
from _machine import describe  # noqa: E402


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hm-dir", required=True, help="folder with the H&M Kaggle layout (e.g. ../shared/data/hm)")
    p.add_argument("--resolution", type=int, default=128, help="square image side in pixels (default 128)")
    p.add_argument("--cache-dir", default="",
                   help="cache folder; default a fresh temporary folder removed afterwards. If the cache for this "
                        "dataset and resolution already exists there, it is deleted first so the first pass decodes")
    p.add_argument("--keep-cache", action="store_true", help="keep the cache files afterwards")
    p.add_argument("--workers", type=int, default=0, help="decode threads (default: number of CPUs)")
    p.add_argument("--batches", type=int, default=300, help="sampler batches of 128 to time (default 300)")
    args = p.parse_args(argv)

    from tfmodels.data import images as images_lib
    from tfmodels.data.hm import read_hm
    from tfmodels.data.splits import leave_one_out

    print(f"machine: {describe()}")
    t0 = time.perf_counter()
    dataset = read_hm(args.hm_dir)
    split = leave_one_out(dataset)
    t_read = time.perf_counter() - t0
    print(f"read H&M layout + split: {dataset.num_items} items, {dataset.num_users} users, "
          f"{dataset.num_interactions} transactions in {t_read:.2f} s")

    tmp = None
    cache_dir = args.cache_dir
    if not cache_dir:
        tmp = cache_dir = tempfile.mkdtemp(prefix="tfmodels-bench-")
    path = images_lib.cache_path(dataset, args.resolution, cache_dir)
    for f in (path, path[: -len(".npy")] + ".json"):
        if os.path.exists(f):
            os.remove(f)
    if args.workers:
        os.environ["TFMODELS_DECODE_WORKERS"] = str(args.workers)
    R = args.resolution
    try:
        t0, c0 = time.perf_counter(), cpu_seconds()
        first = images_lib.load_images(dataset, R, cache_dir)
        t_first, c_first = time.perf_counter() - t0, cpu_seconds() - c0
        size_mb = os.path.getsize(path) / 2**20
        print(f"first pass (decode + pad + resize to {R}px + write cache): {t_first:.2f} s "
              f"= {dataset.num_items / t_first:.0f} images/s, cache {size_mb:.0f} MB; "
              f"CPU time {c_first:.1f} s = {1000 * c_first / dataset.num_items:.2f} ms per image "
              f"(wall > CPU / cores means the cores were shared)")
        del first

        t0, c0 = time.perf_counter(), cpu_seconds()
        cached = images_lib.load_images(dataset, R, cache_dir)
        checksum = int(np.asarray(cached, dtype=np.uint8).sum(dtype=np.uint64))  # touch every pixel
        t_cached, c_cached = time.perf_counter() - t0, cpu_seconds() - c0
        print(f"cached pass (map .npy + read every pixel): {t_cached:.3f} s "
              f"= {dataset.num_items / t_cached:.0f} images/s, CPU time {c_cached:.2f} s (checksum {checksum})")
        print(f"ratio first / cached: {t_first / t_cached:.0f}x wall-clock, {c_first / max(c_cached, 1e-9):.0f}x CPU time")

        rng = np.random.default_rng(0)
        n_batches = 200
        t0 = time.perf_counter()
        for _ in range(n_batches):
            rows = np.sort(rng.integers(0, dataset.num_items, 128))
            _ = np.asarray(cached[rows])
        t_gather = time.perf_counter() - t0
        print(f"random batches of 128 rows from the cache: {n_batches * 128 / t_gather:.0f} images/s "
              f"({1000 * t_gather / n_batches:.2f} ms per batch)")
        del cached
    finally:
        if tmp and not args.keep_cache:
            shutil.rmtree(tmp, ignore_errors=True)

    import tensorflow as tf

    from tfmodels.data.sampler import bpr_triples

    ds = bpr_triples(split, 128, seed=0)
    it = iter(ds)
    for _ in range(20):  # warm-up: tracing, autotune
        next(it)
    t0 = time.perf_counter()
    for _ in range(args.batches):
        next(it)
    t_py = time.perf_counter() - t0
    print(f"BPR sampler, Python iteration: {args.batches * 128 / t_py:,.0f} triples/s "
          f"({args.batches} batches of 128 after 20 warm-up)")

    @tf.function
    def consume(d):
        total = tf.constant(0, tf.int64)
        for b in d:
            total += tf.reduce_sum(tf.cast(b["neg"], tf.int64))
        return total

    consume(ds.take(20))
    t0 = time.perf_counter()
    consume(ds.take(args.batches * 10))
    t_graph = time.perf_counter() - t0
    print(f"BPR sampler, consumed inside tf.function: {args.batches * 10 * 128 / t_graph:,.0f} triples/s "
          f"({args.batches * 10} batches of 128)")
    print("how measured: wall-clock time.perf_counter around each pass, one run, other processes may share "
          "the cores (see load average above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
