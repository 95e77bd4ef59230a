"""Strategy parity, kill-and-resume, and 2-process MultiWorkerMirroredStrategy (all in subprocesses).

Logical CPU devices and multi-worker clusters must be configured before
TensorFlow initialises its devices, hence fresh Python processes.
"""

import json
import os
import re
import signal
import subprocess
import time

import numpy as np
import pytest

from test_train_support import PYTHON, REPO, free_port, subprocess_env

PARITY = r"""
import json, sys
import numpy as np
import tfmodels
from tfmodels.training.strategy import split_cpu, build_strategy
split_cpu(2)
import tensorflow as tf
from test_train_support import colour_world, tiny_config
from tfmodels.training import loop
from tfmodels.training.recommender import DVBPRTask

dataset, split, images = colour_world()
batch = {"user": np.arange(8, dtype=np.int32) * 3, "pos": np.zeros(8, np.int32),
         "neg": np.arange(8, dtype=np.int32) + 1}
batch["pos"] = np.array([split.train_item[split.train_user == u][0] for u in batch["user"]], np.int32)

class FixedBatchTask(DVBPRTask):
    init = None
    def build(self, strategy):
        super().build(strategy)
        # Plain SGD: its update is proportional to the gradient, so a wrong
        # cross-replica reduction shows (Adam's first step is ~lr * sign(g)).
        self.optimizer = tf.keras.optimizers.SGD(0.5)
        if FixedBatchTask.init is None:
            self.model.user_embedding.embeddings.assign(tf.random.normal([split.num_users, 8], seed=1))
            FixedBatchTask.init = self.model.get_weights()
        else:
            self.model.set_weights(FixedBatchTask.init)
    def evaluate(self, step):
        return None
    def make_dataset(self, strategy, start_step):
        ds = tf.data.Dataset.from_tensors(batch).repeat()
        return strategy.experimental_distribute_dataset(ds)

cfg = tiny_config(steps=1, steps_per_loop=1, eval_every=0, checkpoint_every=1, histogram_every=0,
                  lambda_theta=1.0, lambda_cnn=0.05)
cfg.model.dropout = 0.0
out = {}
for name in ("default", "mirrored"):
    strategy = build_strategy(name)
    task = FixedBatchTask(cfg, None, split, images)
    res = loop.run(task, cfg.train, sys.argv[1] + "/" + name, strategy)
    out[name] = {"replicas": strategy.num_replicas_in_sync, "loss": res["losses"]["loss"],
                 "weights": [w.tolist() for w in task.model.get_weights()],
                 # The host-side scorer also works on (mirrored) variables.
                 "scores": task.scorer()(np.arange(5))}
a = [np.array(w) for w in out["default"]["weights"]]
b = [np.array(w) for w in out["mirrored"]["weights"]]
init = FixedBatchTask.init
print(json.dumps({
    "replicas": out["mirrored"]["replicas"],
    "loss_default": out["default"]["loss"], "loss_mirrored": out["mirrored"]["loss"],
    "max_diff": max(float(np.max(np.abs(x - y))) for x, y in zip(a, b)),
    "max_change": max(float(np.max(np.abs(x - y))) for x, y in zip(a, init)),
    "score_diff": float(np.max(np.abs(out["default"]["scores"] - out["mirrored"]["scores"]))),
}))
"""

TRAIN = r"""
import json, sys
import tfmodels
from test_train_support import colour_world, numpy_auc, tiny_config
from tfmodels.training import recommender

workdir, steps = sys.argv[1], int(sys.argv[2])
dataset, split, images = colour_world()
cfg = tiny_config(steps=steps, steps_per_loop=10, eval_every=0, checkpoint_every=20, histogram_every=0)
res = recommender.train_dvbpr_on(cfg, workdir, dataset, split, images,
                                 evaluate_fn=lambda s, sp: {"auc_all": numpy_auc(s, sp, "val")})
task = res["task"]
print("RESULT " + json.dumps({"step": res["step"], "start_step": res["start_step"],
                              "optimizer_iterations": int(task.optimizer.iterations.numpy())}), flush=True)
"""

MULTI_WORKER = r"""
import json, sys
import numpy as np
import tfmodels
from tfmodels.training.strategy import build_strategy
strategy = build_strategy("multi_worker")  # first: before any other TensorFlow work
from test_train_support import colour_world, numpy_auc, tiny_config
from tfmodels.training import recommender

workdir, out = sys.argv[1], sys.argv[2]
dataset, split, images = colour_world()
cfg = tiny_config(steps=6, steps_per_loop=3, eval_every=0, checkpoint_every=3, histogram_every=0,
                  batch_size=16, strategy="multi_worker")
res = recommender.train_dvbpr_on(cfg, workdir, dataset, split, images, strategy=strategy,
                                 evaluate_fn=lambda s, sp: {"auc_all": numpy_auc(s, sp, "val")})
weights = res["task"].model.get_weights()
np.savez(out, *weights)
print("RESULT " + json.dumps({"step": res["step"], "replicas": strategy.num_replicas_in_sync}), flush=True)
"""


def _run(code, *args, timeout=240, env=None):
    proc = subprocess.run([PYTHON, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          env=env or subprocess_env(), cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_default_and_two_replica_mirrored_step_agree(tmp_path):
    out = json.loads(_run(PARITY, str(tmp_path)).strip().splitlines()[-1])
    assert out["replicas"] == 2
    assert out["max_change"] > 1e-3, out  # the step really moved the weights
    assert out["max_diff"] < 1e-5, out
    assert abs(out["loss_default"] - out["loss_mirrored"]) < 1e-5, out
    assert out["score_diff"] < 1e-4, out


def _latest_step(ckpt_dir):
    path = os.path.join(ckpt_dir, "checkpoint")
    if not os.path.exists(path):
        return None
    m = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', open(path).read(), re.M)
    return int(m.group(1)) if m else None


def test_killed_run_resumes_at_saved_step(tmp_path):
    workdir = str(tmp_path / "w")
    proc = subprocess.Popen([PYTHON, "-c", TRAIN, workdir, "100000"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=subprocess_env(), cwd=REPO)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and (_latest_step(os.path.join(workdir, "ckpt")) or 0) < 40:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    saved = _latest_step(os.path.join(workdir, "ckpt"))
    assert saved is not None and saved >= 40 and saved % 20 == 0

    out = _run(TRAIN, workdir, str(saved + 20))
    assert "resumed from" in out and f"at step {saved}/{saved + 20}" in out
    result = json.loads(out.split("RESULT ")[-1])
    assert result == {"step": saved + 20, "start_step": saved, "optimizer_iterations": saved + 20}
    info = json.load(open(os.path.join(workdir, "model.json")))
    assert info["step"] == saved + 20


@pytest.mark.slow
def test_two_worker_multi_worker_mirrored_training(tmp_path):
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        env = subprocess_env()
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen(
            [PYTHON, "-c", MULTI_WORKER, str(tmp_path / "w"), str(tmp_path / f"weights{i}.npz")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO))
    results = []
    try:
        results = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    # Both workers' logs: when one crashes, the other only reports "task N stopped sending heartbeats".
    failed = [f"worker {i} (exit {p.returncode}):\n{err[-2500:]}"
              for i, (p, (_, err)) in enumerate(zip(procs, results)) if p.returncode != 0]
    assert not failed, "\n\n".join(failed)
    outs = [json.loads(out.split("RESULT ")[-1]) for out, _ in results]
    assert outs[0] == outs[1] == {"step": 6, "replicas": 2}
    w0, w1 = np.load(tmp_path / "weights0.npz"), np.load(tmp_path / "weights1.npz")
    assert len(w0.files) == len(w1.files) > 0
    for k in w0.files:
        np.testing.assert_allclose(w0[k], w1[k], rtol=1e-5, atol=1e-6)
    # Only the chief wrote the checkpoints; the other worker's scratch folder is gone.
    assert _latest_step(str(tmp_path / "w" / "ckpt")) == 6
    assert not [d for d in os.listdir(tmp_path / "w") if d.startswith(".worker_")]
