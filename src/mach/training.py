"""Training of one or more MACH repetitions in one process, with per-repetition checkpoints.

Repetitions never share anything that shapes them: each has its own weights, lookup, data order and
checkpoint directory. Training several in one tf.function only keeps the cores busy; repetition r's
data order, initialisation and dropout depend on (seed, r, epoch) alone, so grouping does not change
its result. When the shuffle buffer would hold every training row, the rows are parsed once and held
in memory for all repetitions of the process (mach.data.resident); otherwise each repetition streams
the TFRecords through its own tf.data pipeline.

A repetition's directory (ckpt/rNN/) holds config.json (what the model is), TensorFlow checkpoints with
Adam's state (for resuming; keep_checkpoints of them), weights/epoch-NNN.npz after every epoch (for
evaluation and prediction; mach.weights) and train.json once it is finished.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from mach import weights
from mach.checkpoints import (
    RepetitionLock,
    complete_epochs,
    recover_interrupted_overwrite,
    remove_epoch_files,
    remove_unfinished_saves,
    repair_state_file,
)
from mach.data.prepare import damaged_shards, load_lookups
from mach.data.resident import ResidentRows, epoch_order, index_batches
from mach.data.tfrecords import read_batches, rows_to_model_input, tfrecord_files
from mach.files import read_json, write_json_atomic
from mach.identity import check_repetition, data_fingerprint, write_repetition_config
from mach.model import Adam, MachNet, bucket_loss, repetition_seed, use_sparse_first_layer


class Repetition:
    """Model, optimiser, lookups and checkpoint manager of repetition r."""

    def __init__(self, cfg, r: int):
        self.r = r
        self.dir = cfg.ckpt_dir(r)  # where its files go; a new directory while --overwrite runs
        self.label_to_bucket, self.feature_to_slot, self.lookup_sha256 = load_lookups(cfg, r)
        sparse = use_sparse_first_layer(cfg.sparse_first_layer, cfg.input_dim())
        self.model = MachNet(
            cfg.input_dim(), cfg.hidden, cfg.B, cfg.dropout, cfg.seed, r, cfg.recipe, sparse
        )
        self.optimizer = Adam(
            self.model.trainable_variables, cfg.lr, epsilon=cfg.adam_epsilon, lazy=sparse
        )
        self.epoch = tf.Variable(0, dtype=tf.int64, name="epochs_done")
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, epoch=self.epoch
        )
        self.manager = None  # made by _start, once the directory is known to be ours
        self.replacing = False  # --overwrite: the old directory goes when the first save is made
        self.last_loss = float("nan")
        self.seconds = 0.0

    def model_input(self, cfg, parsed):
        feature_to_slot = (
            None if self.feature_to_slot is None else tf.constant(self.feature_to_slot)
        )
        return rows_to_model_input(
            parsed,
            tf.constant(self.label_to_bucket),
            cfg.B,
            cfg.input_dim(),
            feature_to_slot,
            cfg.normalize,
        )

    def dataset(self, cfg, files: list[str], first: int, last: int) -> tf.data.Dataset:
        """The batches of epochs first..last-1, back to back: one pipeline, traced once, for a run of
        many short epochs. The order of epoch e is a function of (seed, r, e), so a resumed epoch
        replays the same batches."""
        seeds = [repetition_seed(cfg.seed, self.r, 1000 + e) for e in range(first, last)]
        rows = tf.data.Dataset.from_tensor_slices(tf.constant(seeds, tf.int64)).flat_map(
            lambda seed: read_batches(
                files, cfg.batch_size, shuffle_seed=seed, shuffle_buffer=cfg.shuffle_buffer
            )
        )
        return rows.map(
            lambda parsed: self.model_input(cfg, parsed),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )


def _check_room_for_every_checkpoint(cfg, reps: list[Repetition], log) -> None:
    """keep_checkpoints=0 keeps every epoch: refuse up front a run whose checkpoints cannot fit."""
    # A checkpoint holds the weights and Adam's two slots: 3 float32 per parameter.
    need = sum(12 * rep.model.n_params() for rep in reps) * cfg.epochs
    cfg.run_dir().mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(cfg.run_dir()).free
    log(f"keep_checkpoints=0 epochs={cfg.epochs} checkpoints_bytes~{need} free_bytes={free}")
    if need > free:
        raise ValueError(
            f"keep_checkpoints=0 keeps all {cfg.epochs} epochs of {len(reps)} repetitions, about "
            f"{need / 2**30:.1f} GiB, but {cfg.run_dir()} has {free / 2**30:.1f} GiB free: keep the last "
            "few (--set keep_checkpoints=2), use fewer epochs, or train on a larger disk (--work-dir)"
        )


def _manager(cfg, rep: Repetition) -> tf.train.CheckpointManager:
    keep = cfg.keep_checkpoints or None  # 0 keeps every epoch
    return tf.train.CheckpointManager(rep.checkpoint, str(rep.dir), max_to_keep=keep)


def _start(cfg, reps: list[Repetition], overwrite: bool, data: str, policy, log) -> None:
    """Resume or plan to replace each repetition's checkpoints; nothing is deleted here.

    All repetitions are checked before any file is written, so a refused run leaves the disk as it was.
    """
    plans = []
    for rep in reps:
        recover_interrupted_overwrite(cfg.ckpt_dir(rep.r), log)
        epochs = complete_epochs(rep.dir)
        if epochs and not overwrite:
            if not (rep.dir / "config.json").exists():
                raise ValueError(
                    f"{rep.dir} has checkpoints but no config.json, so the model they hold is "
                    "unknown; restore the file, or retrain with --overwrite"
                )
            check_repetition(cfg, rep.r, rep.lookup_sha256, data, "resume")
        plans.append("resume" if epochs and not overwrite else "replace" if epochs else "fresh")
    resumed = []
    for rep, plan in zip(reps, plans):
        remove_unfinished_saves(rep.dir)
        if plan == "replace":
            # The new model trains in a directory of its own until its first checkpoint is saved.
            rep.replacing = True
            rep.dir = rep.dir.with_name(f".{rep.dir.name}.new-{os.getpid()}")
            log(
                f"r={rep.r} overwrite: the old model in {cfg.ckpt_dir(rep.r)} stays until the new "
                "one saves its first checkpoint"
            )
        if plan == "resume":
            latest = repair_state_file(rep.dir, log)
            rep.manager = _manager(cfg, rep)
            _restore(rep, rep.manager.latest_checkpoint)
            weights.recover(rep.dir, latest, rep.model.arrays, policy, log)
            resumed.append(f"r{rep.r}:{latest}")
            continue
        rep.dir.mkdir(parents=True, exist_ok=True)
        write_repetition_config(cfg, rep.lookup_sha256, data, rep.dir)
        rep.manager = _manager(cfg, rep)
    if resumed:
        log(f"resumed_from_epochs={','.join(resumed)} (the last full checkpoints)")


def _restore(rep: Repetition, prefix: str) -> None:
    try:
        rep.checkpoint.restore(prefix).assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError) as err:
        raise ValueError(
            f"checkpoint {prefix} cannot be read ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
            f"remove its files {prefix}.* to resume from the previous epoch, or retrain with --overwrite"
        ) from None


def _swap_in(cfg, rep: Repetition) -> None:
    """--overwrite, once the new model has a checkpoint: it replaces the old one, which is then removed.

    A crash between the two renames leaves the old model as .rNN.replaced-PID, which the next run
    puts back (mach.checkpoints.recover_interrupted_overwrite).
    """
    final = cfg.ckpt_dir(rep.r)
    old = final.with_name(f".{final.name}.replaced-{os.getpid()}")
    os.replace(final, old)
    try:
        os.replace(rep.dir, final)
    except BaseException:
        os.replace(old, final)
        raise
    shutil.rmtree(old)
    rep.dir, rep.replacing = final, False
    rep.manager = _manager(cfg, rep)


def _make_train_step(cfg, reps: list[Repetition], spec, model_inputs):
    """The training step of reps, traced once (spec: its input's spec, batch size relaxed, so the
    last partial batch needs no second trace; model_inputs: that input -> [(x, y)] of each rep; no
    autograph: plain Python loops)."""

    @functools.partial(tf.function, input_signature=[spec], autograph=False)
    def train_step(step_input):
        with tf.GradientTape() as tape:
            losses = [
                bucket_loss(rep.model(x, step=rep.optimizer.iterations), y, cfg.loss, cfg.recipe)
                for rep, (x, y) in zip(reps, model_inputs(step_input))
            ]
            # The repetitions' variables are disjoint, so the gradient of the sum is each one's own gradient.
            total = tf.add_n(losses)
        variables = [rep.model.trainable_variables for rep in reps]
        grads = tape.gradient(total, variables)
        for rep, g, v in zip(reps, grads, variables):
            rep.optimizer.apply(g, v)
        return tf.stack(losses)

    return train_step


def _weights_policy(cfg, reps: list[Repetition], log) -> tuple[str, str]:
    cfg.run_dir().mkdir(parents=True, exist_ok=True)
    per_epoch = sum(4 * rep.model.n_params() for rep in reps)
    policy = weights.keep_policy(
        cfg.keep_epoch_weights, per_epoch, cfg.epochs, shutil.disk_usage(cfg.run_dir()).free
    )
    log(f"epoch_weights={policy[0]} ({policy[1]})")
    return policy


def train_repetitions(
    cfg, repetitions: list[int], data_manifest: dict, log, overwrite=False
) -> list[dict]:
    """Train the given repetitions for cfg.epochs each.  Returns one summary dict per repetition.

    A repetition with checkpoints continues from its last complete epoch (a finished one is left
    alone); overwrite retrains it, replacing the old model only once the new one has a checkpoint.
    """
    files = tfrecord_files(cfg.tfrecord_dir(), data_manifest["train"])
    rows = data_manifest["train"]["rows"]
    steps_per_epoch = math.ceil(rows / cfg.batch_size)
    sparse = use_sparse_first_layer(cfg.sparse_first_layer, cfg.input_dim())
    # Rows without labels stay in the batches with weight 0 in the loss (cheaper than filtering them).
    log(
        f"train_rows={rows} rows_without_labels_weight_0={data_manifest['train']['rows_without_labels']} "
        f"steps_per_epoch={steps_per_epoch} repetitions={_ranges(repetitions)} run={cfg.run_dir()} "
        f"first_layer_update={'lazy_adam' if sparse else 'dense_adam'}"
    )
    locks, reps = [], []
    try:
        for r in repetitions:
            locks.append(
                RepetitionLock(
                    cfg.run_dir() / "ckpt" / f".r{r:02d}.lock",
                    f"repetition r={r} in {cfg.run_dir()}",
                )
            )
        reps = [Repetition(cfg, r) for r in repetitions]
        if cfg.keep_checkpoints == 0:
            _check_room_for_every_checkpoint(cfg, reps, log)
        policy = _weights_policy(cfg, reps, log)
        _start(cfg, reps, overwrite, data_fingerprint(data_manifest), policy, log)
        finished = [rep for rep in reps if int(rep.epoch.numpy()) >= cfg.epochs]
        if finished:
            log(
                f"already_trained repetitions={_ranges([rep.r for rep in finished])} "
                f"epochs={cfg.epochs}: left as they are"
            )
        try:
            _train_epochs(
                cfg,
                [rep for rep in reps if rep not in finished],
                files,
                rows,
                steps_per_epoch,
                policy,
                log,
            )
        except tf.errors.DataLossError:
            # A shard whose bytes changed (its size unchanged): name it, and the fix.
            damaged = damaged_shards(cfg.tfrecord_dir(), data_manifest) or files
            raise ValueError(
                f"{', '.join(map(str, damaged))}: the TFRecords are damaged; re-run `python "
                f"preprocess.py --dataset {cfg.name}` with the same options (it rewrites damaged "
                "shards), then train again: the finished epochs are kept"
            ) from None
        return [
            _saved_summary(cfg, rep, rows) if rep in finished else _finish(cfg, rep, rows, policy)
            for rep in reps
        ]
    finally:
        # A failed --overwrite leaves no new directory: the old models stay as they were.
        for rep in reps:
            if rep.replacing:
                shutil.rmtree(rep.dir, ignore_errors=True)
        for lock in locks:
            lock.release()


def _ranges(rs: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    parts, start = [], None
    for i, r in enumerate(rs):
        start = r if start is None else start
        if i + 1 == len(rs) or rs[i + 1] != r + 1:
            parts.append(str(r) if start == r else f"{start}-{r}")
            start = None
    return ",".join(parts)


def _train_epochs(cfg, reps, files, rows, steps_per_epoch, policy, log) -> None:
    writers = {
        rep.r: tf.summary.create_file_writer(str(cfg.log_dir() / "tensorboard" / f"r{rep.r:02d}"))
        for rep in reps
    }
    # Repetitions resumed at different epochs sit out the epochs they already have, so the set of
    # active repetitions only grows; each stretch of epochs with one set has one pipeline and step.
    done = sorted({int(rep.epoch.numpy()) for rep in reps})
    starts = [e for e in done if e < cfg.epochs]
    resident = _resident_rows(cfg, files, rows, len(reps), log) if starts else None
    last_save = time.time()
    for first, last in zip(starts, [*starts[1:], cfg.epochs]):
        active = [rep for rep in reps if int(rep.epoch.numpy()) <= first]
        if resident is None:
            train_step, batches = _streamed(cfg, active, files, first, last)
        else:
            train_step, batches = _gathered(cfg, active, resident, first, last)
        for epoch in range(first, last):
            _train_epoch(
                cfg, active, train_step, batches, epoch, steps_per_epoch, rows, writers, log
            )
            if weights.is_kept(policy[0], epoch + 1, cfg.epochs):
                for rep in active:
                    weights.save_epoch(rep.dir, epoch + 1, rep.model.arrays(), *policy)
            # Short epochs are not each worth a full checkpoint (writing R of them can take longer
            # than the epoch); the last epoch, and every epoch with keep_checkpoints=0, always is.
            due = time.time() - last_save >= cfg.checkpoint_interval_s
            if epoch + 1 == cfg.epochs or cfg.keep_checkpoints == 0 or due:
                for rep in active:
                    _save(cfg, rep, epoch)
                last_save = time.time()


def _resident_rows(cfg, files, rows: int, n_reps: int, log) -> ResidentRows | None:
    """The training rows parsed once, when the shuffle buffer would hold them all anyway."""
    if rows > cfg.shuffle_buffer:
        log(f"input=streamed (train_rows={rows} > shuffle_buffer={cfg.shuffle_buffer})")
        return None
    start = time.time()
    resident = ResidentRows(files)
    if resident.rows != rows:
        raise ValueError(
            f"{cfg.tfrecord_dir()} holds {resident.rows} training rows but should hold {rows}: a "
            f"TFRecord shard is damaged; re-run `python preprocess.py --dataset {cfg.name}` (it "
            "rewrites damaged shards), then train again"
        )
    log(
        f"input=in_memory (train_rows={rows} <= shuffle_buffer={cfg.shuffle_buffer}): parsed once in "
        f"{time.time() - start:.1f} s, {resident.nbytes() / 2**20:.1f} MiB shared by {n_reps} repetitions"
    )
    return resident


def _streamed(cfg, active, files, first: int, last: int):
    """Training step and (step input, rows) of epochs first..last-1: one tf.data pipeline per
    repetition, each reading and parsing the TFRecords."""
    dataset = tf.data.Dataset.zip(
        tuple(rep.dataset(cfg, files, first, last) for rep in active)
    ).prefetch(2)
    train_step = _make_train_step(cfg, active, dataset.element_spec, lambda batches: batches)
    return train_step, ((batches, int(batches[0][1].shape[0])) for batches in dataset)


def _gathered(cfg, active, resident: ResidentRows, first: int, last: int):
    """Training step and (step input, rows) of epochs first..last-1 over rows held in memory: the
    step input is each repetition's row numbers [A, b], gathered inside the step."""

    def model_inputs(index):
        return [rep.model_input(cfg, resident.batch(index[i])) for i, rep in enumerate(active)]

    spec = tf.TensorSpec([len(active), None], tf.int64)
    train_step = _make_train_step(cfg, active, spec, model_inputs)

    def batches():
        for epoch in range(first, last):
            orders = np.stack(
                [
                    epoch_order(resident.rows, repetition_seed(cfg.seed, rep.r, 1000 + epoch))
                    for rep in active
                ]
            )
            for index in index_batches(orders, cfg.batch_size):
                yield index, index.shape[1]

    return train_step, batches()


def _train_epoch(
    cfg, active, train_step, batches, epoch, steps_per_epoch, rows, writers, log
) -> None:
    bar = tf.keras.utils.Progbar(steps_per_epoch, unit_name="step") if sys.stdout.isatty() else None
    start = time.time()
    total = tf.zeros([len(active)])
    rows_seen = 0
    for step in range(1, steps_per_epoch + 1):
        batch = next(batches, None)
        if batch is None:
            break
        step_input, batch_rows = batch
        losses = train_step(step_input)
        total += losses
        rows_seen += batch_rows
        if bar is not None:
            bar.update(step, values=[("loss", float(tf.reduce_mean(losses)))])
    seconds = time.time() - start
    if rows_seen != rows:
        # A shard cut on a record boundary reads without error; the manifest's count catches it.
        raise ValueError(
            f"epoch {epoch + 1} read {rows_seen} training rows but {cfg.tfrecord_dir()} should hold {rows}: "
            f"a TFRecord shard is damaged; re-run `python preprocess.py --dataset {cfg.name}` (it rewrites "
            "damaged shards), then train again"
        )
    mean_losses = (total / steps_per_epoch).numpy()
    for rep, loss in zip(active, mean_losses):
        rep.epoch.assign(epoch + 1)
        rep.last_loss, rep.seconds = float(loss), rep.seconds + seconds
        with writers[rep.r].as_default():
            tf.summary.scalar("loss", loss, step=epoch + 1)
            tf.summary.scalar("examples_per_s", rows / seconds, step=epoch + 1)
    # One line for all repetitions of this process (train.sh --status shows the last one): the
    # mean loss, rows per second per repetition and for all of them together.
    log(
        f"epoch={epoch + 1}/{cfg.epochs} loss={mean_losses.mean():.5f} ex_per_s={rows / seconds:.0f} "
        f"ex_per_s_all={rows * len(active) / seconds:.0f} seconds={seconds:.2f} "
        f"repetitions={_ranges([rep.r for rep in active])}"
    )


def _save(cfg, rep: Repetition, epoch: int) -> None:
    """A full checkpoint after `epoch`; a failed save (a full disk) leaves none of its files."""
    try:
        rep.manager.save(checkpoint_number=epoch + 1)
    except BaseException:
        remove_epoch_files(rep.dir, epoch + 1)
        remove_unfinished_saves(rep.dir)
        if rep.replacing:
            shutil.rmtree(rep.dir, ignore_errors=True)  # the old model stays as it was
        raise
    if rep.replacing:
        _swap_in(cfg, rep)


def _saved_summary(cfg, rep: Repetition, rows: int) -> dict:
    """A finished repetition's train.json as written when it finished (rebuilt if missing)."""
    try:
        return read_json(rep.dir / "train.json")
    except (OSError, ValueError):
        return _finish(cfg, rep, rows, None)


def _finish(cfg, rep: Repetition, rows: int, policy) -> dict:
    from mach.devices import peak_memory

    summary = {
        "r": rep.r,
        "epochs": int(rep.epoch.numpy()),
        "final_loss": rep.last_loss,
        "wall_s": round(rep.seconds, 3),
        "params": rep.model.n_params(),
        "train_rows": rows,
        "checkpoint": Path(rep.manager.latest_checkpoint).name,
        "epoch_weights": weights.saved_epochs(rep.dir),
        "epoch_weights_policy": None if policy is None else policy[1],
        **peak_memory(),
    }
    write_json_atomic(rep.dir / "train.json", summary)
    return summary
