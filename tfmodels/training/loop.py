"""The shared custom training loop (orbit style): a ``Task`` plus ``run``.

DVBPR, the BPR-MF / VBPR baselines and the GAN all train with ``run``. A task
says *what* one step does; ``run`` does everything around it, the same way for
every model and every ``tf.distribute`` strategy.

The Task API (subclass ``Task``; only ``build``, ``checkpoint_items``,
``train_step`` and ``make_dataset`` are required)::

    kind = "dvbpr"            # written to W/model.json
    best_metric = "auc_all"   # key of evaluate()'s dict that chooses W/best/
    best_mode = "max"         # or "min"

    build_inputs(strategy)    # HOST, OUTSIDE strategy.scope() (optional): plain,
                              # unmirrored per-worker state the steps only read, e.g.
                              # a uint8 image table on the host CPU (mirroring it
                              # would copy it per device and broadcast it at start).
    build(strategy)           # HOST, inside strategy.scope(): create models and
                              # optimizers as attributes (use build_optimizer()).
    initialize()              # HOST (optional): only when W holds no checkpoint yet,
                              # e.g. copy pre-trained weights in (a resumed run gets
                              # them from its checkpoint, so their source may be gone).
    ready()                   # HOST (optional): after the restore or initialize(), before
                              # the first step: state computed from the weights as they
                              # now are (e.g. a table of a frozen backbone's outputs).
    checkpoint_items() -> {name: trackable}
                              # models, optimizers, anything stateful to save.
                              # "step" is reserved for the loop's step counter.
    train_step(batch) -> {name: scalar}
                              # REPLICA context, traced into a tf.function. Gets the
                              # per-replica batch; computes per-example losses,
                              # reduces them with average_loss() (global batch size
                              # from tf.shape, never a Python constant) and once-per-
                              # step terms with scale_regularization(), gets gradients
                              # with compute_gradients() (handles mixed-precision loss
                              # scaling) and applies them. Returned values are SUMMED
                              # over replicas, so they must be reduced that way. A GAN
                              # simply runs both optimizers here: one loop step = one
                              # D and one G update, one shared step counter.
    make_dataset(strategy, start_step) -> distributed dataset
                              # HOST: e.g. strategy.distribute_datasets_from_function;
                              # infinite; start_step lets a resumed run draw new samples.
    evaluate(step) -> dict | None
                              # HOST, eager (optional): validation metrics; appended to
                              # W/metrics.jsonl, TensorBoard "val/<key>", best checkpoint.
    write_summaries(step)     # HOST (optional): called after every inner loop inside the
                              # TensorBoard writer's context (e.g. image grids every N steps).
    summary_every = 0         # chunks also end on multiples of this (0 = no extra cut).
    mixed_precision = True    # False: the task always trains in float32.
    learning_rates() -> {name: float}       # optional; default: optimizers found in
    histogram_variables() -> [tf.Variable]  # checkpoint_items() / their Keras models.
    model_info() -> dict      # optional extra keys for W/model.json.
    finish(workdir, step, chief)            # HOST (optional): after the last step
                              # (e.g. the embedding projector).

``run(task, train_cfg, workdir, strategy, steps=...)`` then:

1. sets the mixed_float16 policy if ``train_cfg.mixed_precision``, calls
   ``task.build_inputs``, then builds the task and a step counter under
   ``strategy.scope()``;
2. restores the latest ``W/ckpt/`` checkpoint if there is one, so a killed run
   resumes at its saved step with the same counter (else calls
   ``task.initialize()`` and starts at 0);
3. repeats: one ``tf.function`` call running up to ``steps_per_loop`` steps (a
   ``tf.range`` loop around ``strategy.run(task.train_step)``, averaged losses
   returned), then eagerly: a console progress line (steps/s, ETA), TensorBoard
   scalars (losses, learning rates, steps/s) and weight histograms, a checkpoint
   every ``checkpoint_every`` steps and at the end (``tf.train.CheckpointManager``:
   written then recorded, so a kill never leaves a half-written latest
   checkpoint), and every ``eval_every`` steps and at the end (``eval_every`` 0:
   only at the end) ``task.evaluate`` -> ``W/metrics.jsonl``, TensorBoard
   ``val/*`` and, when ``best_metric`` improves, ``W/best/`` (+ ``best.json``);
4. writes ``W/model.json`` {"kind", "step", "best_step", ..., "stopped"} after each
   checkpoint;
5. stops early when ``train_cfg.minutes`` > 0 and that much wall-clock time has
   passed since ``run`` started (checkpoint and evaluation at the stopping step):
   a time budget, so a run's duration does not depend on the processor. Rerunning
   resumes from there with a new budget.

Chunks are cut at checkpoint / evaluation / histogram boundaries so those happen
at exact multiples of their intervals. In multi-worker training every worker runs
the same loop (the collectives need all of them); only the chief writes
summaries, metrics and ``W/ckpt``; other workers write their (required)
checkpoints to a temporary folder they delete at the end.
"""

from __future__ import annotations

import math
import os
import shutil
import time

import tensorflow as tf

from tfmodels import workdir as workdir_lib
from tfmodels.training.strategy import is_chief, worker_info


# --------------------------------------------------------------------------- helpers for tasks


def build_optimizer(learning_rate, mixed_precision: bool = False, **adam_kwargs) -> tf.keras.optimizers.Optimizer:
    """Adam, wrapped in a dynamic LossScaleOptimizer when training in mixed precision."""
    opt = tf.keras.optimizers.Adam(learning_rate=learning_rate, **adam_kwargs)
    if mixed_precision:
        opt = tf.keras.mixed_precision.LossScaleOptimizer(opt)
    return opt


def average_loss(per_example: tf.Tensor) -> tf.Tensor:
    """Replica context: sum(per_example) / global batch size, float32 scalar.

    The global batch size is this replica's batch (``tf.shape``) times the number
    of replicas in sync, so summing the result over replicas gives the mean over
    the global batch, whatever the strategy.
    """
    per_example = tf.cast(per_example, tf.float32)
    replicas = tf.distribute.get_replica_context().num_replicas_in_sync
    global_batch = tf.shape(per_example)[0] * replicas
    return tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)


def scale_regularization(loss: tf.Tensor) -> tf.Tensor:
    """Replica context: a once-per-step term (e.g. weight decay) divided by the replica count."""
    return tf.nn.scale_regularization_loss(tf.cast(loss, tf.float32))


def compute_gradients(tape: tf.GradientTape, optimizer, loss: tf.Tensor, variables) -> list:
    """Gradients of ``loss``; with a LossScaleOptimizer the loss is scaled and the grads unscaled.

    Scaling through ``output_gradients`` means callers may leave the tape's
    context before calling this.
    """
    if isinstance(optimizer, tf.keras.mixed_precision.LossScaleOptimizer):
        # d(scale * loss)/dw = scale * dloss/dw: the scale enters as the output
        # gradient (get_scaled_loss of 1 is the current scale, and tells the
        # optimizer the loss was scaled).
        scale = optimizer.get_scaled_loss(tf.ones_like(loss))
        grads = tape.gradient(loss, variables, output_gradients=scale)
        return optimizer.get_unscaled_gradients(grads)
    return tape.gradient(loss, variables)


def _inner_optimizer(opt):
    return getattr(opt, "inner_optimizer", opt)


class Task:
    """Base class of everything ``run`` trains; see the module docstring for the API."""

    kind = "task"
    best_metric = "auc_all"
    best_mode = "max"

    def build_inputs(self, strategy: tf.distribute.Strategy) -> None:
        return None

    summary_every = 0
    mixed_precision = True

    def build(self, strategy: tf.distribute.Strategy) -> None:
        raise NotImplementedError

    def initialize(self) -> None:
        return None

    def ready(self) -> None:
        return None

    def checkpoint_items(self) -> dict:
        raise NotImplementedError

    def train_step(self, batch) -> dict:
        raise NotImplementedError

    def make_dataset(self, strategy: tf.distribute.Strategy, start_step: int):
        raise NotImplementedError

    def evaluate(self, step: int) -> dict | None:
        return None

    def write_summaries(self, step: int) -> None:
        return None

    def learning_rates(self) -> dict:
        rates = {}
        for name, item in self.checkpoint_items().items():
            if isinstance(item, tf.keras.optimizers.Optimizer) or hasattr(item, "inner_optimizer"):
                lr = _inner_optimizer(item).learning_rate
                rates[name] = float(lr(item.iterations) if callable(lr) else tf.keras.backend.get_value(lr))
        return rates

    def histogram_variables(self) -> list:
        out = []
        for item in self.checkpoint_items().values():
            if isinstance(item, tf.keras.Model):
                out.extend(item.trainable_variables)
        return out

    def model_info(self) -> dict:
        return {}

    def finish(self, workdir: str, step: int, chief: bool) -> None:
        return None


# --------------------------------------------------------------------------- the loop


def _format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def _to_next(step: int, every: int) -> int:
    return every - step % every if every > 0 else 1 << 62


def run(task: Task, train_cfg, workdir: str, strategy: tf.distribute.Strategy | None = None,
        log=None, steps: int | None = None) -> dict:
    """Trains ``task`` up to ``steps`` steps or ``train_cfg.minutes`` (resuming from ``W/ckpt``).

    Args:
      task: the Task to train.
      train_cfg: ``tfmodels.config.TrainConfig`` (steps, steps_per_loop,
        checkpoint_every, eval_every, keep_checkpoints, histogram_every,
        mixed_precision, minutes).
      workdir: the work directory W (ckpt/, best/, tb/, metrics.jsonl, model.json).
      strategy: a tf.distribute strategy (default: the default strategy).
      log: callable for progress lines (default: print to stdout, chief only).
      steps: the step cap (default ``train_cfg.steps``; a kind with its own
        setting, e.g. ``gan.steps``, passes it here).

    Returns:
      {"step", "start_step", "losses" (last loop's means), "metrics" (last
      evaluation or {}), "best" (best.json content or None), "steps_per_sec"
      (steady-state training rate: steps after the first, compiling, loop over
      their wall time including input pipeline, logging and summaries, but not
      checkpoints and evaluations), "loop_steps_per_sec" (the same per
      tf.function call), "stopped" ("steps" or "minutes": what ended the run)}.
    """
    started = time.perf_counter()
    budget = 60.0 * float(train_cfg.minutes) if train_cfg.minutes > 0 else float("inf")
    strategy = strategy or tf.distribute.get_strategy()
    chief = is_chief(strategy)
    if log is None:
        log = (lambda msg: print(msg, flush=True)) if chief else (lambda msg: None)
    os.makedirs(workdir, exist_ok=True)
    task_type, task_id = worker_info(strategy)
    # Non-chief workers must still save (saving may involve collectives) but to a
    # private folder that is thrown away.
    scratch = None if chief else os.path.join(workdir, f".worker_{task_type}_{task_id}")

    old_policy = tf.keras.mixed_precision.global_policy()
    if train_cfg.mixed_precision and task.mixed_precision:
        tf.keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        task.build_inputs(strategy)
        with strategy.scope():
            task.build(strategy)
            step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step",
                               aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        items = task.checkpoint_items()
        if "step" in items:
            raise ValueError(f"task {task.kind}: checkpoint item name 'step' is reserved for the loop")
        ckpt = tf.train.Checkpoint(step=step, **items)
        ckpt_dir = os.path.join(workdir, "ckpt")
        best_dir = os.path.join(workdir, "best")
        latest = tf.train.latest_checkpoint(ckpt_dir)
        if latest:
            ckpt.restore(latest).assert_existing_objects_matched()
        else:
            task.initialize()
        task.ready()
        start = int(step.numpy())
        manager = tf.train.CheckpointManager(
            ckpt, ckpt_dir if chief else os.path.join(scratch, "ckpt"),
            max_to_keep=max(1, train_cfg.keep_checkpoints), step_counter=step)
        best_manager = tf.train.CheckpointManager(
            ckpt, best_dir if chief else os.path.join(scratch, "best"), max_to_keep=1, checkpoint_name="best")

        records = [r for r in workdir_lib.read_metrics(workdir) if r.get("step", 0) <= start]
        best = workdir_lib.read_json(os.path.join(best_dir, "best.json"))
        if best and best.get("step", 0) > start:
            best = None  # evaluated after the checkpoint we resumed from; redo
        if chief:
            workdir_lib.write_metrics(workdir, records)
        writer = tf.summary.create_file_writer(os.path.join(workdir, "tb")) if chief else tf.summary.create_noop_writer()

        total = int(train_cfg.steps if steps is None else steps)
        if latest:
            log(f"[{task.kind}] resumed from {latest} at step {start}/{total}")
        else:
            log(f"[{task.kind}] starting at step 0/{total} ({strategy.num_replicas_in_sync} replica(s), "
                f"{type(strategy).__name__})")

        def one_step(iterator):
            batch = next(iterator)
            per_replica = strategy.run(task.train_step, args=(batch,))
            return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

        @tf.function
        def train_loop(iterator, num_steps):
            totals = one_step(iterator)
            step.assign_add(1)
            for _ in tf.range(num_steps - 1):
                losses = one_step(iterator)
                step.assign_add(1)
                totals = {k: totals[k] + losses[k] for k in totals}
            return {k: v / tf.cast(num_steps, v.dtype) for k, v in totals.items()}

        losses: dict = {}
        metrics: dict = records[-1] if records else {}
        last_eval = records[-1]["step"] if records else -1
        steady_steps, steady_time = 0, 0.0
        loop_rates: list[float] = []
        rate = float("nan")
        cur = start
        iterator = iter(task.make_dataset(strategy, start)) if cur < total else None
        first = True
        stopped = "steps"
        while cur < total:
            n = min(train_cfg.steps_per_loop, total - cur, _to_next(cur, train_cfg.checkpoint_every),
                    _to_next(cur, train_cfg.eval_every), _to_next(cur, train_cfg.histogram_every),
                    _to_next(cur, task.summary_every))
            t0 = time.perf_counter()
            out = train_loop(iterator, tf.constant(n, tf.int32))
            losses = {k: float(v) for k, v in out.items()}
            cur = int(step.numpy())
            bad = [k for k, v in losses.items() if not math.isfinite(v)]
            if bad:
                raise FloatingPointError(f"[{task.kind}] non-finite loss {bad} at step {cur}: {losses}")

            with writer.as_default(step=cur):
                for k, v in losses.items():
                    tf.summary.scalar(f"train/{k}", v)
                for k, v in task.learning_rates().items():
                    tf.summary.scalar(f"learning_rate/{k}", v)
                if _due(cur, train_cfg.histogram_every):
                    for v in task.histogram_variables():
                        tf.summary.histogram(v.name.replace(":", "_"), v)
                task.write_summaries(cur)
                # The rate covers steps, input pipeline, logging and summaries;
                # checkpoints and evaluations (every few hundred steps) are not in it.
                dt = time.perf_counter() - t0
                out_of_time = cur < total and time.perf_counter() - started >= budget
                if _due(cur, train_cfg.checkpoint_every) or cur == total or out_of_time:
                    manager.save(checkpoint_number=cur)
                    if chief:
                        _write_model_json(workdir, task, cur, best)
                if first:
                    first = False  # includes tracing: not a rate
                else:
                    steady_steps += n
                    steady_time += dt
                    rate = steady_steps / steady_time
                    loop_rates.append(n / dt)
                    tf.summary.scalar("perf/steps_per_sec", n / dt)
                eta = (total - cur) / rate if rate == rate and rate > 0 else float("nan")
                loss_text = "  ".join(f"{k} {v:.4f}" for k, v in losses.items())
                log(f"[{task.kind}] step {cur}/{total}  {loss_text}  "
                    f"{'%.2f' % rate if rate == rate else '-'} steps/s  ETA {_format_duration(eta)}")

                if _due(cur, train_cfg.eval_every) or cur == total or out_of_time:
                    new = _evaluate(task, cur, workdir, chief, records, log)
                    if new is not None:
                        metrics, last_eval = new, cur
                        best = _maybe_best(task, cur, new, best, best_manager, best_dir, chief, log)
                        if chief:
                            _write_model_json(workdir, task, cur, best)
            writer.flush()
            if out_of_time:
                stopped = "minutes"
                log(f"[{task.kind}] time budget of {train_cfg.minutes:g} min reached at step {cur}/{total}; "
                    "rerun the same command to train on")
                break

        if cur != last_eval and total > 0:
            # Nothing left to train (already finished) but never evaluated at the end.
            new = _evaluate(task, cur, workdir, chief, records, log)
            if new is not None:
                metrics = new
                best = _maybe_best(task, cur, new, best, best_manager, best_dir, chief, log)
        if chief:
            _write_model_json(workdir, task, cur, best, stopped)
        with writer.as_default(step=cur):
            task.finish(workdir, cur, chief)
        writer.flush()
        if scratch and os.path.isdir(scratch):
            shutil.rmtree(scratch, ignore_errors=True)
        return {"step": cur, "start_step": start, "losses": losses, "metrics": metrics,
                "best": best, "steps_per_sec": rate, "loop_steps_per_sec": loop_rates, "stopped": stopped}
    finally:
        tf.keras.mixed_precision.set_global_policy(old_policy)


def _write_model_json(workdir: str, task: Task, step: int, best, stopped: str | None = None) -> None:
    info = {"kind": task.kind, "step": step, "best_step": best["step"] if best else None,
            "best_metric": task.best_metric}
    if stopped:
        info["stopped"] = stopped  # what ended the last run: "steps" (the cap) or "minutes" (its budget)
    info.update(task.model_info())
    workdir_lib.write_model_json(workdir, info)


def _evaluate(task: Task, step: int, workdir: str, chief: bool, records: list, log):
    t0 = time.perf_counter()
    metrics = task.evaluate(step)
    if metrics is None:
        return None
    metrics = {k: _plain(v) for k, v in metrics.items()}
    record = {"step": step, "time": time.time(), **metrics}
    records.append(record)
    if chief:
        workdir_lib.write_metrics(workdir, records)
        for k, v in metrics.items():
            if isinstance(v, float) and math.isfinite(v):
                tf.summary.scalar(f"val/{k}", v, step=step)
    shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    counts = ", ".join(f"{k} {v}" for k, v in metrics.items() if isinstance(v, int))
    shown += f"  ({counts})" if counts else ""
    log(f"[{task.kind}] eval @ {step}: {shown}  ({time.perf_counter() - t0:.1f}s)")
    return record


def _plain(v):
    """numpy / TF scalars -> Python int or float for JSON and logs."""
    if isinstance(v, bool):
        return v
    if isinstance(v, int) or (hasattr(v, "dtype") and getattr(v.dtype, "kind", "") in "iu"):
        return int(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def _maybe_best(task, step, record, best, best_manager, best_dir, chief, log):
    value = record.get(task.best_metric)
    if value is None or not math.isfinite(value):
        return best
    better = (best is None or (value > best["value"] if task.best_mode == "max" else value < best["value"]))
    if not better:
        return best
    best_manager.save(checkpoint_number=step)
    best = {"step": step, "metric": task.best_metric, "value": value, "metrics": record}
    if chief:
        workdir_lib.write_best(best_dir, best)
    log(f"[{task.kind}] new best {task.best_metric} {value:.4f} at step {step} -> {best_dir}")
    return best
