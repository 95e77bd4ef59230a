"""Baselines under a 2-logical-CPU MirroredStrategy, in a subprocess (devices are fixed at TF start-up).

Runs VBPR, which first trains its category classifier in the same process:
two training runs one after another, which also checks that they share one
strategy object (two MirroredStrategy objects in a process collide on
collective keys). BPR-MF is VBPR without the visual term (same task code).
"""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, os, sys
import tfmodels
from tfmodels.training.strategy import split_cpu, build_strategy
split_cpu(2)
sys.path.insert(0, os.path.dirname({test_file!r}))
import numpy as np
from test_eval_baselines import write_world
from tfmodels import config as config_lib
from tfmodels.data.loading import load_for_training
from tfmodels.training import baselines

root = {root!r}
write_world(root)
cfg = config_lib.tiny()
cfg.data.dataset = "generic"; cfg.data.data_dir = root; cfg.data.resolution = 16
cfg.data.cache_dir = os.path.join(root, "cache"); cfg.model.fc_units = 32
cfg.train.strategy = "mirrored"; cfg.baseline.steps = 40; cfg.baseline.batch_size = 64
cfg.train.eval_every = 40; cfg.train.checkpoint_every = 40; cfg.train.steps_per_loop = 20
cfg.baseline.learning_rate = 0.05; cfg.baseline.l2 = 1e-4; cfg.classifier.steps = 10
ds, sp = load_for_training(cfg)
out = {{}}
for kind, fn in (("vbpr", baselines.train_vbpr),):
    r = fn(cfg, os.path.join(root, kind), ds, sp)
    out[kind] = {{"replicas": build_strategy("mirrored").num_replicas_in_sync,
                 "loss": r["losses"].get("loss"), "auc": r["metrics"]["auc_all"], "step": r["step"]}}
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_baselines_train_under_two_device_mirrored_strategy(tmp_path):
    here = os.path.abspath(__file__)
    code = SCRIPT.format(test_file=here, root=str(tmp_path / "w"))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(here)), env=env)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT "):])
    for kind in ("vbpr",):
        assert out[kind]["replicas"] == 2
        assert out[kind]["loss"] is not None and out[kind]["loss"] == out[kind]["loss"]  # finite, not NaN
    assert out["vbpr"]["step"] == 40
    assert out["vbpr"]["auc"] > 0.6, out  # learning happens with the loss split over two replicas
