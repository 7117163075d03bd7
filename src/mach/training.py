"""Training of one or more MACH repetitions in one process, with per-repetition checkpoints.

Repetitions never share anything: each has its own weights, lookup, data order and checkpoint directory.
Training several in one tf.function only keeps the cores busy; repetition r's data order, initialisation
and dropout depend on (seed, r, epoch) alone, so grouping does not change its result.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import sys
import time

import tensorflow as tf

from mach.checkpoints import (
    RepetitionLock,
    complete_epochs,
    remove_stale_temporaries,
    repair_state_file,
)
from mach.data import read_rows, rows_to_model_input, tfrecord_files
from mach.files import read_json, write_json_atomic
from mach.identity import check_checkpoint_config, model_identity
from mach.model import Adam, MachNet, bucket_loss, repetition_seed, use_sparse_first_layer
from mach.prepare import load_lookups


class Repetition:
    """Model, optimiser, lookups and checkpoint manager of repetition r."""

    def __init__(self, cfg, r: int):
        self.r = r
        self.label_to_bucket, self.feature_to_slot, self.lookup_sha256 = load_lookups(cfg, r)
        sparse = use_sparse_first_layer(cfg.sparse_first_layer, cfg.input_dim())
        self.model = MachNet(
            cfg.input_dim(),
            cfg.hidden,
            cfg.B,
            cfg.dropout,
            cfg.seed,
            r,
            cfg.recipe,
            sparse,
        )
        self.optimizer = Adam(
            self.model.trainable_variables, cfg.lr, epsilon=cfg.adam_epsilon, lazy=sparse
        )
        self.epoch = tf.Variable(0, dtype=tf.int64, name="epochs_done")
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, epoch=self.epoch
        )
        self.manager = None  # made by _start, once the directory is known to be ours
        self.replace_old = (
            False  # --overwrite: the old checkpoints go only when the first new one is saved
        )
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
            lambda seed: read_rows(
                files, cfg.batch_size, shuffle_seed=seed, shuffle_buffer=cfg.shuffle_buffer
            )
        )
        return rows.map(
            lambda parsed: self.model_input(cfg, parsed),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )


def _check_room_for_every_epoch(cfg, reps: list[Repetition], log) -> None:
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
    return tf.train.CheckpointManager(rep.checkpoint, str(cfg.ckpt_dir(rep.r)), max_to_keep=keep)


def _write_identity(cfg, rep: Repetition) -> None:
    write_json_atomic(
        cfg.ckpt_dir(rep.r) / "config.json",
        {"identity": model_identity(cfg, rep.lookup_sha256), "config": dataclasses.asdict(cfg)},
    )


def _start(cfg, reps: list[Repetition], resume: bool, overwrite: bool, log) -> None:
    """Restore, refuse or plan to replace each repetition's checkpoints; nothing is deleted here.

    All repetitions are checked before any file is written, so a refused run leaves the disk as it was.
    """
    plans = []
    for rep in reps:
        ckpt_dir = cfg.ckpt_dir(rep.r)
        epochs = complete_epochs(ckpt_dir)
        if epochs and not resume and not overwrite:
            raise ValueError(
                f"r={rep.r} already has a trained model in {ckpt_dir} (epoch {epochs[-1]}); pass --resume "
                "to continue it, --overwrite to replace it, or --set tag=NAME to train a variant beside it"
            )
        if epochs and resume:
            if not (ckpt_dir / "config.json").exists():
                raise ValueError(
                    f"{ckpt_dir} has checkpoints but no config.json, so the model they hold is unknown; "
                    "restore the file, or retrain with --overwrite"
                )
            check_checkpoint_config(cfg, rep.r, rep.lookup_sha256, "resume")
        plans.append("resume" if epochs and resume else "replace" if epochs else "fresh")
    for rep, plan in zip(reps, plans):
        ckpt_dir = cfg.ckpt_dir(rep.r)
        remove_stale_temporaries(ckpt_dir)
        if plan == "replace":
            rep.replace_old = True
            log(
                f"r={rep.r} overwrite: the old checkpoints in {ckpt_dir} go once the new run saves its first checkpoint"
            )
            continue
        if plan == "resume":
            repair_state_file(ckpt_dir, log)
            rep.manager = _manager(cfg, rep)
            _restore(rep, rep.manager.latest_checkpoint)
            log(
                f"r={rep.r} resumed_from={rep.manager.latest_checkpoint} epochs_done={int(rep.epoch.numpy())}"
            )
            continue
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        _write_identity(cfg, rep)
        rep.manager = _manager(cfg, rep)


def _restore(rep: Repetition, prefix: str) -> None:
    try:
        rep.checkpoint.restore(prefix).assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError) as err:
        raise ValueError(
            f"checkpoint {prefix} cannot be read ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
            f"remove its files {prefix}.* to resume from the previous epoch, or retrain with --overwrite"
        ) from None


def _replace_old_checkpoints(cfg, rep: Repetition) -> None:
    """--overwrite: move the old model aside, start the new directory, and drop the old one once saved."""
    ckpt_dir = cfg.ckpt_dir(rep.r)
    old = ckpt_dir.with_name(f".{ckpt_dir.name}.replaced-{os.getpid()}")
    os.replace(ckpt_dir, old)
    ckpt_dir.mkdir()
    _write_identity(cfg, rep)
    rep.manager = _manager(cfg, rep)
    rep.replace_old = False
    return old


def _make_train_step(cfg, reps: list[Repetition]):
    @tf.function
    def train_step(batches):
        with tf.GradientTape() as tape:
            losses = [
                bucket_loss(rep.model(x, step=rep.optimizer.iterations), y, cfg.loss, cfg.recipe)
                for rep, (x, y) in zip(reps, batches)
            ]
            # The repetitions' variables are disjoint, so the gradient of the sum is each one's own gradient.
            total = tf.add_n(losses)
        variables = [rep.model.trainable_variables for rep in reps]
        grads = tape.gradient(total, variables)
        for rep, g, v in zip(reps, grads, variables):
            rep.optimizer.apply(g, v)
        return tf.stack(losses)

    return train_step


def train_repetitions(
    cfg, repetitions: list[int], data_manifest: dict, resume: bool, log, overwrite: bool = False
) -> list[dict]:
    """Train the given repetitions for cfg.epochs each.  Returns one summary dict per repetition.

    resume: continue from each repetition's last complete epoch (finished ones are left alone);
    overwrite: replace existing checkpoints (only once the new run has saved its first checkpoint).
    Without either, a repetition that already has checkpoints is refused.
    """
    files = tfrecord_files(cfg.tfrecord_dir(), data_manifest["train"])
    rows = data_manifest["train"]["rows"]
    steps_per_epoch = math.ceil(rows / cfg.batch_size)
    # Rows without labels stay in the batches with weight 0 in the loss (cheaper than filtering them).
    log(
        f"train_rows={rows} rows_without_labels_weight_0={data_manifest['train']['rows_without_labels']} "
        f"steps_per_epoch={steps_per_epoch} repetitions={','.join(map(str, repetitions))}"
    )
    # On: the first layer reads, and Adam updates, only the rows of the features in each batch.
    sparse = use_sparse_first_layer(cfg.sparse_first_layer, cfg.input_dim())
    log(
        f"input_dim={cfg.input_dim()} sparse_first_layer={cfg.sparse_first_layer} "
        f"first_layer_update={'lazy_adam' if sparse else 'dense_adam'}"
    )
    locks = []
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
            _check_room_for_every_epoch(cfg, reps, log)
        _start(cfg, reps, resume, overwrite, log)
        finished = [rep for rep in reps if int(rep.epoch.numpy()) >= cfg.epochs]
        for rep in finished:
            log(f"r={rep.r} already_trained epochs_done={int(rep.epoch.numpy())}: left as it is")
        _train_epochs(
            cfg, [rep for rep in reps if rep not in finished], files, rows, steps_per_epoch, log
        )
        return [
            _saved_summary(cfg, rep, rows) if rep in finished else _finish(cfg, rep, rows)
            for rep in reps
        ]
    finally:
        for lock in locks:
            lock.release()


def _train_epochs(cfg, reps, files, rows, steps_per_epoch, log) -> None:
    writers = {
        rep.r: tf.summary.create_file_writer(str(cfg.log_dir() / "tensorboard" / f"r{rep.r:02d}"))
        for rep in reps
    }
    # Repetitions resumed at different epochs sit out the epochs they already have, so the set of
    # active repetitions only grows; each stretch of epochs with one set has one pipeline and step.
    done = sorted({int(rep.epoch.numpy()) for rep in reps})
    starts = [e for e in done if e < cfg.epochs]
    last_save = time.time()
    for first, last in zip(starts, [*starts[1:], cfg.epochs]):
        active = [rep for rep in reps if int(rep.epoch.numpy()) <= first]
        train_step = _make_train_step(cfg, active)
        batches = iter(
            tf.data.Dataset.zip(
                tuple(rep.dataset(cfg, files, first, last) for rep in active)
            ).prefetch(2)
        )
        for epoch in range(first, last):
            _train_epoch(
                cfg, active, train_step, batches, epoch, steps_per_epoch, rows, writers, log
            )
            # Short epochs are not each worth a checkpoint (writing R of them can take longer than
            # the epoch); the last epoch, and every epoch with keep_checkpoints=0, always is.
            due = time.time() - last_save >= cfg.checkpoint_interval_s
            if epoch + 1 == cfg.epochs or cfg.keep_checkpoints == 0 or due:
                for rep in active:
                    _save(cfg, rep, epoch)
                last_save = time.time()


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
        losses = train_step(batch)
        total += losses
        rows_seen += int(batch[0][1].shape[0])
        if bar is not None:
            bar.update(step, values=[("loss", float(tf.reduce_mean(losses)))])
    seconds = time.time() - start
    if rows_seen != rows:
        # A shard cut on a record boundary reads without error; the manifest's count catches it.
        raise ValueError(
            f"epoch {epoch + 1} read {rows_seen} training rows but {cfg.tfrecord_dir()} should hold {rows}: "
            f"a TFRecord shard is damaged; re-run `python preprocess.py --dataset {cfg.name}` (it rewrites "
            "damaged shards), then train again with --resume"
        )
    mean_losses = (total / steps_per_epoch).numpy()
    for rep, loss in zip(active, mean_losses):
        rep.epoch.assign(epoch + 1)
        rep.last_loss, rep.seconds = float(loss), rep.seconds + seconds
        with writers[rep.r].as_default():
            tf.summary.scalar("loss", loss, step=epoch + 1)
            tf.summary.scalar("examples_per_s", rows / seconds, step=epoch + 1)
        # ex_per_s is per repetition, as in TensorBoard; ex_per_s_all sums the repetitions trained together.
        log(
            f"r={rep.r} epoch={epoch + 1} loss={loss:.5f} ex_per_s={rows / seconds:.0f} "
            f"ex_per_s_all={rows * len(active) / seconds:.0f} seconds={seconds:.2f}"
        )


def _save(cfg, rep: Repetition, epoch: int) -> None:
    old = _replace_old_checkpoints(cfg, rep) if rep.replace_old else None
    try:
        rep.manager.save(checkpoint_number=epoch + 1)
    except BaseException:
        remove_stale_temporaries(cfg.ckpt_dir(rep.r))  # e.g. a full disk: no ckpt-N_temp/ left
        raise
    if old is not None:
        shutil.rmtree(old)


def _saved_summary(cfg, rep: Repetition, rows: int) -> dict:
    """A finished repetition's train.json as written when it finished (rebuilt if missing)."""
    path = cfg.ckpt_dir(rep.r) / "train.json"
    try:
        return read_json(path)
    except (OSError, ValueError):
        return _finish(cfg, rep, rows)


def _finish(cfg, rep: Repetition, rows: int) -> dict:
    summary = {
        "r": rep.r,
        "epochs": int(rep.epoch.numpy()),
        "final_loss": rep.last_loss,
        "wall_s": round(rep.seconds, 3),
        "params": rep.model.n_params(),
        "train_rows": rows,
        "checkpoint": rep.manager.latest_checkpoint,
    }
    write_json_atomic(cfg.ckpt_dir(rep.r) / "train.json", summary)
    return summary
