"""Serving latency and throughput: gRPC and REST beside in-process calls, one run.

For each workload and concurrency (1, 8, 32) it reports p50 / p99 latency and
requests/s for three ways of calling the same SavedModel signature:

* in-process: ``tf.saved_model.load(...).signatures[...]`` called from threads
  of this process with the same NumPy inputs, outputs read back as NumPy (what
  the clients return): no serialisation, no network;
* in-process tensors: the same signature called on pre-built tensors, outputs
  left as tensors (the bare TensorFlow call, an upper bound);
* gRPC: ``serving.client.GrpcClient.predict`` against the embedded server;
* REST: ``serving.client.RestClient.predict`` (columnar JSON) against the same server;
* gRPC + batching: a second server with server-side batching on (``score`` only:
  the other signatures have scalar inputs and are never batched);
* gRPC floor: a bare Python gRPC server (``--floor-server``, a separate process)
  whose Predict answers every request with a canned copy of the real response,
  called through the same client. It runs no model and no checks: its CPU per
  request is the least any Python gRPC server and client spend on the wire work,
  which bounds what a Python server can reach on this machine (see the goals).

The server runs as a separate process (``tfmodels serve``), as in production.
Besides latency and requests/s, every cell reports CPU time per request of this
process (the client threads; for in-process cells, the calls themselves) and of
the server process, which shows where the time goes when both share one machine.

Workloads: ``score`` (one user, 100 candidate items), ``recommend`` top-100 over
the catalogue (``--catalogue`` items; 17k is the H&M sample's size) and over a
1M-item catalogue (``recommend_1m``), and ``design`` (designer model).

Without ``--export-base`` the models are synthetic (tests/serving_synthetic.py): random
user/item vectors of ``--dim`` dimensions, recommend = matmul + tf.math.top_k. With
``--export-base E`` (folders written by ``tfmodels export``) the real
recommender/designer are measured, with the ids of their warm-up requests unless
``--users``/``--items`` are given.

    nice .venv/bin/python benchmarks/serving.py                  # synthetic, ~3 min
    nice .venv/bin/python benchmarks/serving.py --export-base E [--users ID1 --items A,B,C]

The goals section states, per workload, the most requests/s a Python server
could serve at concurrency 8 if it added nothing to the floor and kept both cores
busy: 2 cores / (floor client + floor server CPU + in-process CPU per call).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, _ROOT)
# The synthetic models are test scaffolding: they live with the tests, not in the library.
sys.path.insert(0, os.path.join(_ROOT, "tests"))
import tfmodels  # noqa: E402,F401  (tf-keras guard before TensorFlow)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from export import signatures as S  # noqa: E402
import serving_synthetic as synthetic  # noqa: E402
from serving.client import GrpcClient, RestClient  # noqa: E402

RECOMMENDER_1M = "recommender_1m"
CORES = len(os.sched_getaffinity(0))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--export-base", help="folder with <model>/<version>/ exports (default: synthetic models)")
    p.add_argument("--catalogue", type=int, default=17_000, help="synthetic catalogue size for 'recommend'")
    p.add_argument("--big-catalogue", type=int, default=1_000_000, help="catalogue size for 'recommend_1m'")
    p.add_argument("--dim", type=int, default=100, help="synthetic embedding size K")
    p.add_argument("--users", default="", help="comma-separated user ids (real exports)")
    p.add_argument("--items", default="", help="comma-separated item ids for 'score' (real exports)")
    p.add_argument("--candidates", type=int, default=100, help="items per score request")
    p.add_argument("--k", type=int, default=100, help="top-k for recommend")
    p.add_argument("--starts", type=int, default=4, help="design: random starts")
    p.add_argument("--steps", type=int, default=20, help="design: optimisation steps")
    p.add_argument("--seconds", type=float, default=2.0, help="measuring time per cell")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--workloads", default="score,recommend,recommend_1m,design")
    p.add_argument("--transports", default="inprocess,inprocess_tensors,grpc,rest,grpc_batching,grpc_floor")
    p.add_argument("--out", help="write all numbers as JSON here")
    p.add_argument("--floor-server", metavar="RESPONSES", help=argparse.SUPPRESS)  # internal: see floor_server
    return p.parse_args(argv)


def build_synthetic(base: str, args) -> None:
    t0 = time.perf_counter()
    synthetic.export_recommender(base, 1, num_users=1000, num_items=args.catalogue, dim=args.dim)
    if "recommend_1m" in args.workloads:
        synthetic.export_recommender(base, 1, num_users=1000, num_items=args.big_catalogue, dim=args.dim,
                                     name=RECOMMENDER_1M)
    synthetic.export_designer(base, 1, num_users=1000)
    print(f"exported synthetic models to {base} in {time.perf_counter() - t0:.1f}s", flush=True)


BATCHING = """max_batch_size { value: 1024 }
batch_timeout_micros { value: 1000 }
num_batch_threads { value: 2 }
max_enqueued_batches { value: 1000 }
"""


def spawn(cmd: list, ready: str, timeout: float = 300) -> tuple:
    """Starts ``cmd`` and waits for the stdout line starting with ``ready``; (process, its words)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(ready):
            return proc, line.split()
        if not line and proc.poll() is not None:
            raise RuntimeError(f"{' '.join(cmd[:4])}... exited with {proc.returncode}")
    proc.kill()
    raise RuntimeError(f"{' '.join(cmd[:4])}... did not start in time")


def start_server(config_path: str, batching: bool = False):
    cmd = [sys.executable, "-m", "tfmodels", "serve", "--model-config", config_path, "--port", "0",
           "--rest-port", "0", "--poll-seconds", "0"]
    if batching:
        path = os.path.join(os.path.dirname(config_path), "batching.txt")
        with open(path, "w") as f:
            f.write(BATCHING)
        cmd += ["--batching-parameters-file", path]
    proc, words = spawn(cmd, "serving gRPC")
    return proc, words[2], "http://" + words[4]


def floor_server(responses_path: str) -> int:
    """Child process: a bare Python gRPC PredictionService answering canned responses.

    ``responses_path`` holds a pickled list of (model, signature, serialized
    PredictResponse) written by the parent; requests are matched on model and
    signature name only. Prints the port, then serves until killed.
    """
    import pickle
    from concurrent import futures

    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    with open(responses_path, "rb") as f:
        canned = {(m, sig): predict_pb2.PredictResponse.FromString(b) for m, sig, b in pickle.load(f)}

    class Floor(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            return canned[(request.model_spec.name, request.model_spec.signature_name)]

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Floor(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"floor 127.0.0.1:{port}", flush=True)
    server.wait_for_termination()
    return 0


def start_floor_server(canned: list):
    """Starts floor_server() on [(model, signature, PredictResponse)]; (process, target)."""
    import pickle

    path = os.path.join(tempfile.mkdtemp(), "responses.pkl")
    with open(path, "wb") as f:
        pickle.dump([(m, sig, r.SerializeToString()) for m, sig, r in canned], f)
    proc, words = spawn([sys.executable, os.path.abspath(__file__), "--floor-server", path], "floor ")
    return proc, words[1]


def warmup_inputs(path: str) -> dict:
    """{signature: inputs} from a version's assets.extra/tf_serving_warmup_requests."""
    from tensorflow_serving.apis import prediction_log_pb2

    f = os.path.join(path, "assets.extra", "tf_serving_warmup_requests")
    out = {}
    if os.path.exists(f):
        for rec in tf.data.TFRecordDataset(f):
            req = prediction_log_pb2.PredictionLog.FromString(rec.numpy()).predict_log.request
            out[req.model_spec.signature_name or S.SERVING_DEFAULT] = {
                k: tf.make_ndarray(v) for k, v in req.inputs.items()}
    return out


def workloads(args, base: str):
    """[(name, model, signature, inputs as NumPy)].

    Ids: --users / --items, else those of the exports' warm-up requests, else the
    synthetic models' "u0.." / "i0..".
    """
    warm = warmup_inputs(latest_version(base, S.RECOMMENDER)) if args.export_base else {}
    warm_user = warm.get(S.SCORE, {}).get(S.USER_ID, np.array([b"u0"], dtype=object))[0]
    warm_item = warm.get(S.SCORE, {}).get(S.ITEM_ID, np.array([b"i0"], dtype=object))[0]
    users = [u.encode() for u in args.users.split(",") if u] or [warm_user]
    if args.items:
        items = [i.encode() for i in args.items.split(",") if i]
    elif args.export_base:
        items = [warm_item]
    else:
        items = [f"i{i}".encode() for i in range(args.catalogue)]
    rng = np.random.default_rng(0)
    cand = np.array([items[i] for i in rng.integers(0, len(items), args.candidates)], dtype=object)
    user = users[0]
    out = []
    wanted = args.workloads.split(",")
    if "score" in wanted:
        out.append(("score", S.RECOMMENDER, S.SCORE,
                    {S.USER_ID: np.array([user] * args.candidates, dtype=object), S.ITEM_ID: cand}))
    rec_inputs = {S.USER_ID: np.array([user], dtype=object), S.K: np.array(args.k, np.int32),
                  S.EXCLUDE_PURCHASED: np.array(False)}
    if "recommend" in wanted:
        out.append(("recommend", S.RECOMMENDER, S.RECOMMEND, rec_inputs))
    if "recommend_1m" in wanted and os.path.isdir(os.path.join(base, RECOMMENDER_1M)):
        out.append(("recommend_1m", RECOMMENDER_1M, S.RECOMMEND, rec_inputs))
    if "design" in wanted and os.path.isdir(os.path.join(base, S.DESIGNER)):
        dwarm = warmup_inputs(latest_version(base, S.DESIGNER)).get(S.DESIGN, {}) if args.export_base else {}
        category = dwarm.get(S.CATEGORY, np.array(synthetic.CATEGORY_NAMES[0].encode(), dtype=object))
        out.append(("design", S.DESIGNER, S.DESIGN,
                    {S.USER_ID: np.array(dwarm.get(S.USER_ID, user), dtype=object), S.CATEGORY: category,
                     S.STARTS: np.array(args.starts, np.int32), S.STEPS: np.array(args.steps, np.int32),
                     S.ETA: np.array(1.0, np.float32), S.SEED: np.array(0, np.int32)}))
    return out


def latest_version(base: str, model: str) -> str:
    versions = [int(v) for v in os.listdir(os.path.join(base, model)) if v.isdigit()]
    return os.path.join(base, model, str(max(versions)))


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of this process (pid None) or of another (Linux /proc)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(call, concurrency: int, seconds: float, server_pid: int | None = None) -> dict:
    """Closed loop: `concurrency` threads call back-to-back for `seconds`."""
    for _ in range(3):
        call()  # warm-up (first calls trace / connect)
    lat, errors = [[] for _ in range(concurrency)], [0]
    cpu0 = cpu_seconds()
    srv0 = cpu_seconds(server_pid) if server_pid else 0.0
    start = time.perf_counter()
    stop = start + seconds

    def worker(i):
        while time.perf_counter() < stop:
            t = time.perf_counter()
            try:
                call()
            except Exception:
                errors[0] += 1
                continue
            lat[i].append(time.perf_counter() - t)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds() - cpu0
    srv = cpu_seconds(server_pid) - srv0 if server_pid else 0.0
    all_lat = np.array([x for xs in lat for x in xs])
    if all_lat.size == 0:
        return {"n": 0, "errors": errors[0], "p50_ms": float("nan"), "p99_ms": float("nan"), "rps": 0.0,
                "client_cpu_us": float("nan"), "server_cpu_us": float("nan")}
    n = all_lat.size
    return {"n": int(n), "errors": errors[0], "p50_ms": float(np.percentile(all_lat, 50) * 1e3),
            "p99_ms": float(np.percentile(all_lat, 99) * 1e3), "rps": float(n / elapsed),
            "client_cpu_us": cpu / n * 1e6, "server_cpu_us": srv / n * 1e6}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.floor_server:
        return floor_server(args.floor_server)
    tmp = None
    if args.export_base:
        base = os.path.abspath(args.export_base)
    else:
        tmp = tempfile.mkdtemp(prefix="serving-bench-")
        base = tmp
        build_synthetic(base, args)
    models = [m for m in (S.RECOMMENDER, RECOMMENDER_1M, S.DESIGNER) if os.path.isdir(os.path.join(base, m))]
    config = synthetic.write_models_config(os.path.join(tempfile.mkdtemp(), "models.config"),
                                           {m: os.path.join(base, m) for m in models})
    t0 = time.perf_counter()
    proc, grpc_target, rest_url = start_server(config)
    print(f"server up in {time.perf_counter() - t0:.1f}s: gRPC {grpc_target}, REST {rest_url}", flush=True)
    grpc_client = GrpcClient(grpc_target, timeout=60, retries=0)
    rest_client = RestClient(rest_url, timeout=60, retries=0)
    transports = args.transports.split(",")
    batched_proc = batched_client = None
    if "grpc_batching" in transports:
        bconfig = os.path.join(tempfile.mkdtemp(), "models.config")
        synthetic.write_models_config(bconfig, {S.RECOMMENDER: os.path.join(base, S.RECOMMENDER)})
        batched_proc, batched_target, _ = start_server(bconfig, batching=True)
        batched_client = GrpcClient(batched_target, timeout=60, retries=0)
    loaded = {m: tf.saved_model.load(latest_version(base, m)) for m in models}
    work = workloads(args, base)
    floor_proc = floor_client = None
    if "grpc_floor" in transports:  # canned copies of the real server's responses
        canned = [(m, sig, grpc_client.prediction.Predict(grpc_client.predict_request(m, inputs, sig), timeout=60))
                  for _, m, sig, inputs in work]
        floor_proc, floor_target = start_floor_server(canned)
        floor_client = GrpcClient(floor_target, timeout=60, retries=0)
    concurrency = [int(c) for c in args.concurrency.split(",")]
    results = []
    print(f"{'workload':<13} {'transport':<17} {'conc':>4} {'p50 ms':>9} {'p99 ms':>9} {'req/s':>9} {'errors':>6} "
          f"{'cpu us/req: client':>19} {'server':>7}")
    try:
        for name, model, sig, inputs in work:
            fn = loaded[model].signatures[sig]
            tensors = {k: tf.constant(v) for k, v in inputs.items()}
            calls = {
                "inprocess": lambda: {k: v.numpy() for k, v in
                                      fn(**{n: tf.constant(a) for n, a in inputs.items()}).items()},
                "inprocess_tensors": lambda: fn(**tensors),
                "grpc": lambda: grpc_client.predict(model, inputs, sig),
                "rest": lambda: rest_client.predict(model, inputs, sig),
                "grpc_batching": lambda: batched_client.predict(model, inputs, sig),
                "grpc_floor": lambda: floor_client.predict(model, inputs, sig),
            }
            for c in concurrency:
                for tr in transports:
                    if tr == "grpc_batching" and name != "score":
                        continue
                    pid = {"grpc": proc.pid, "rest": proc.pid,
                           "grpc_batching": batched_proc.pid if batched_proc else None,
                           "grpc_floor": floor_proc.pid if floor_proc else None}.get(tr)
                    r = measure(calls[tr], c, args.seconds, pid)
                    r.update(workload=name, transport=tr, concurrency=c)
                    results.append(r)
                    print(f"{name:<13} {tr:<17} {c:>4} {r['p50_ms']:>9.2f} {r['p99_ms']:>9.2f} "
                          f"{r['rps']:>9.1f} {r['errors']:>6} {r['client_cpu_us']:>19.0f} "
                          f"{r['server_cpu_us']:>7.0f}", flush=True)
    finally:
        for p in (proc, batched_proc, floor_proc):
            if p is not None:
                p.terminate()
                p.wait(timeout=30)
        for c in (grpc_client, floor_client):
            if c is not None:
                c.close()

    def get(w, tr, c):
        return next((r for r in results if (r["workload"], r["transport"], r["concurrency"]) == (w, tr, c)), None)

    print("\nGoals (measured in this run):")
    for w in sorted({r["workload"] for r in results}):
        g, ip, it = get(w, "grpc", 8), get(w, "inprocess", 8), get(w, "inprocess_tensors", 8)
        if g and ip and ip["rps"] > 0:
            ratio = g["rps"] / ip["rps"]
            print(f"  {w}: gRPC req/s at concurrency 8 = {ratio:.0%} of in-process "
                  f"({g['rps']:.1f} vs {ip['rps']:.1f}; goal >= 70%) {'OK' if ratio >= 0.7 else 'MISSED'}")
        if g and it and it["rps"] > 0:
            print(f"  {w}: gRPC req/s at concurrency 8 = {g['rps'] / it['rps']:.0%} of in-process on "
                  f"pre-built tensors ({g['rps']:.1f} vs {it['rps']:.1f})")
        if g and g["n"]:
            own = f"; in-process call: {ip['client_cpu_us']:.0f} us" if ip else ""
            print(f"  {w}: gRPC CPU per request at concurrency 8: client {g['client_cpu_us']:.0f} us + "
                  f"server {g['server_cpu_us']:.0f} us{own}")
        f = get(w, "grpc_floor", 8)
        if f and f["n"] and ip and ip["rps"] > 0:
            floor_us = f["client_cpu_us"] + f["server_cpu_us"]
            per_request = floor_us + ip["client_cpu_us"]
            bound = CORES * 1e6 / per_request
            busy = f["rps"] * floor_us / 1e6 / CORES  # how busy the floor pair itself keeps the cores
            print(f"  {w}: bare Python gRPC floor at concurrency 8: {f['rps']:.1f} req/s, CPU per request client "
                  f"{f['client_cpu_us']:.0f} us + server {f['server_cpu_us']:.0f} us, cores {busy:.0%} busy. "
                  f"A Python server adding nothing but the model call ({ip['client_cpu_us']:.0f} us): "
                  f"{CORES} cores / {per_request:.0f} us = {bound:.0f} req/s = {bound / ip['rps']:.0%} of in-process "
                  f"with the cores 100% busy, {busy * bound / ip['rps']:.0%} at the floor's {busy:.0%}")
        if g and g["p50_ms"] > 0:
            tail = g["p99_ms"] / g["p50_ms"]
            print(f"  {w}: gRPC p99/p50 at concurrency 8 = {tail:.1f}x (goal <= 3x) {'OK' if tail <= 3 else 'MISSED'}")
    for c in concurrency:
        b, g = get("score", "grpc_batching", c), get("score", "grpc", c)
        if b and g and g["rps"] > 0:
            print(f"  score: server-side batching at concurrency {c}: {b['rps']:.1f} vs {g['rps']:.1f} req/s "
                  f"({b['rps'] / g['rps']:.2f}x)")
    for tr in ("inprocess", "grpc", "rest"):
        r = get("recommend_1m", tr, 1)
        if r:
            print(f"  recommend top-{args.k} over {args.big_catalogue} items, {tr}, concurrency 1: p50 "
                  f"{r['p50_ms']:.1f} ms (goal <= 50 ms) {'OK' if r['p50_ms'] <= 50 else 'MISSED'}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)  # the 1M-item model is ~0.5 GB
    return 0


if __name__ == "__main__":
    sys.exit(main())
