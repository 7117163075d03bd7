"""Training of one or more MACH repetitions in one process, with per-repetition checkpoints.

Repetitions never share anything: each has its own weights, lookup, data order and checkpoint directory.
Training several in one tf.function only keeps the cores busy; repetition r's data order, initialisation
and dropout depend on (seed, r, epoch) alone, so grouping does not change its result.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import sys
import time

import tensorflow as tf

from mach.data import read_rows, rows_to_model_input, tfrecord_files
from mach.files import read_json, write_json_atomic
from mach.model import Adam, MachNet, bucket_loss, repetition_seed
from mach.prepare import load_lookups

# Fields that shape a repetition's weights: a checkpoint is only resumed or merged when they agree.
MODEL_FIELDS = [
    "n_features",
    "n_classes",
    "B",
    "hash_seed",
    "feat_hash_dim",
    "hidden",
    "loss",
    "normalize",
    "seed",
]


def configure_devices(cfg, log) -> None:
    """Use what CUDA_VISIBLE_DEVICES exposes; let several processes share one GPU."""
    if cfg.threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(cfg.threads)
        tf.config.threading.set_inter_op_parallelism_threads(cfg.threads)
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        if cfg.gpu_memory_mb is not None:
            tf.config.set_logical_device_configuration(
                gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=cfg.gpu_memory_mb)]
            )
        else:
            tf.config.experimental.set_memory_growth(gpu, True)
    log(
        f"devices gpus={len(gpus)} threads={cfg.threads or 'all'} gpu_memory_mb={cfg.gpu_memory_mb or 'growth'}"
    )


def model_identity(cfg, lookup_sha256: str) -> dict:
    identity = {field: getattr(cfg, field) for field in MODEL_FIELDS}
    identity["hidden"] = list(cfg.hidden)
    identity["label_lookup_sha256"] = lookup_sha256
    return identity


def check_checkpoint_config(cfg, r: int, lookup_sha256: str, action: str) -> dict:
    """The saved config.json of repetition r, refused when it disagrees with cfg or the lookup."""
    path = cfg.ckpt_dir(r) / "config.json"
    if not path.exists():
        raise FileNotFoundError(
            f"no trained repetition r={r} at {cfg.ckpt_dir(r)}; run `python train.py --dataset {cfg.name} --repetitions {r}`"
        )
    saved = read_json(path)
    expected = model_identity(cfg, lookup_sha256)
    diff = {
        k: (saved["identity"].get(k), v)
        for k, v in expected.items()
        if saved["identity"].get(k) != v
    }
    if diff:
        details = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
        raise ValueError(
            f"cannot {action} {cfg.ckpt_dir(r)}: it was trained with a different setup ({details}); retrain it or use the matching --set options"
        )
    return saved


class Repetition:
    """Model, optimiser, lookups and checkpoint manager of repetition r."""

    def __init__(self, cfg, r: int):
        self.r = r
        self.label_to_bucket, self.feature_to_slot, self.lookup_sha256 = load_lookups(cfg, r)
        self.model = MachNet(cfg.input_dim(), cfg.hidden, cfg.B, cfg.dropout, cfg.seed, r)
        self.optimizer = Adam(self.model.trainable_variables, cfg.lr)
        self.epoch = tf.Variable(0, dtype=tf.int64, name="epochs_done")
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, epoch=self.epoch
        )
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, str(cfg.ckpt_dir(r)), max_to_keep=cfg.keep_checkpoints
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

    def dataset(self, cfg, files: list[str], epoch: int) -> tf.data.Dataset:
        # The order of epoch e is a function of (seed, r, e): a resumed epoch replays the same batches.
        rows = read_rows(
            files,
            cfg.batch_size,
            shuffle_seed=repetition_seed(cfg.seed, self.r, 1000 + epoch),
            shuffle_buffer=cfg.shuffle_buffer,
        )
        return rows.map(
            lambda parsed: self.model_input(cfg, parsed),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )


def _start(cfg, reps: list[Repetition], resume: bool, log) -> None:
    for rep in reps:
        ckpt_dir = cfg.ckpt_dir(rep.r)
        if resume and rep.manager.latest_checkpoint:
            check_checkpoint_config(cfg, rep.r, rep.lookup_sha256, "resume")
            rep.checkpoint.restore(rep.manager.latest_checkpoint).assert_existing_objects_matched()
            log(
                f"r={rep.r} resumed_from={rep.manager.latest_checkpoint} epochs_done={int(rep.epoch.numpy())}"
            )
            continue
        if ckpt_dir.exists() and any(ckpt_dir.iterdir()):
            log(
                f"r={rep.r} starting_fresh (old checkpoints in {ckpt_dir} removed; pass --resume to continue them)"
            )
            shutil.rmtree(ckpt_dir)
            rep.manager = tf.train.CheckpointManager(
                rep.checkpoint, str(ckpt_dir), max_to_keep=cfg.keep_checkpoints
            )
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            ckpt_dir / "config.json",
            {"identity": model_identity(cfg, rep.lookup_sha256), "config": dataclasses.asdict(cfg)},
        )


def _make_train_step(cfg, reps: list[Repetition]):
    @tf.function
    def train_step(batches):
        with tf.GradientTape() as tape:
            losses = [
                bucket_loss(rep.model(x, step=rep.optimizer.iterations), y, cfg.loss)
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
    cfg, repetitions: list[int], data_manifest: dict, resume: bool, log
) -> list[dict]:
    """Train the given repetitions for cfg.epochs each.  Returns one summary dict per repetition."""
    files = tfrecord_files(cfg.tfrecord_dir(), data_manifest["train"])
    rows = data_manifest["train"]["rows"]
    steps_per_epoch = math.ceil(rows / cfg.batch_size)
    # Rows without labels stay in the batches with weight 0 in the loss (cheaper than filtering them).
    log(
        f"train_rows={rows} rows_without_labels_weight_0={data_manifest['train']['rows_without_labels']} "
        f"steps_per_epoch={steps_per_epoch} repetitions={','.join(map(str, repetitions))}"
    )
    reps = [Repetition(cfg, r) for r in repetitions]
    _start(cfg, reps, resume, log)
    writers = {
        rep.r: tf.summary.create_file_writer(str(cfg.log_dir() / "tensorboard" / f"r{rep.r:02d}"))
        for rep in reps
    }
    steps = {}  # one traced train step per set of active repetitions
    for epoch in range(cfg.epochs):
        # Repetitions resumed at different epochs simply sit out the epochs they already have.
        active = [rep for rep in reps if int(rep.epoch.numpy()) <= epoch]
        if not active:
            continue
        key = tuple(rep.r for rep in active)
        steps.setdefault(key, _make_train_step(cfg, active))
        _train_epoch(cfg, active, steps[key], files, epoch, steps_per_epoch, rows, writers, log)
    return [_finish(cfg, rep, rows) for rep in reps]


def _train_epoch(
    cfg, active, train_step, files, epoch, steps_per_epoch, rows, writers, log
) -> None:
    batches = tf.data.Dataset.zip(tuple(rep.dataset(cfg, files, epoch) for rep in active)).prefetch(
        2
    )
    bar = tf.keras.utils.Progbar(steps_per_epoch, unit_name="step") if sys.stdout.isatty() else None
    start = time.time()
    total = tf.zeros([len(active)])
    for step, batch in enumerate(batches, start=1):
        losses = train_step(batch)
        total += losses
        if bar is not None:
            bar.update(step, values=[("loss", float(tf.reduce_mean(losses)))])
    seconds = time.time() - start
    mean_losses = (total / steps_per_epoch).numpy()
    for rep, loss in zip(active, mean_losses):
        rep.epoch.assign(epoch + 1)
        rep.manager.save(checkpoint_number=epoch + 1)
        rep.last_loss, rep.seconds = float(loss), rep.seconds + seconds
        with writers[rep.r].as_default():
            tf.summary.scalar("loss", loss, step=epoch + 1)
            tf.summary.scalar("examples_per_s", rows / seconds, step=epoch + 1)
        log(
            f"r={rep.r} epoch={epoch + 1} loss={loss:.5f} ex_per_s={rows * len(active) / seconds:.0f} seconds={seconds:.2f}"
        )


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
