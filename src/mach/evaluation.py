"""Evaluation: run R trained repetitions over the test rows, merge their bucket scores, score the top-k.

Memory model: g = eval_group_size (0 = R), G = ceil(R / g) groups, n test rows, b = eval_batch_size.
- One group (the default): the R models on their devices plus [b, R, B] float32 logits per step.
  Each batch is merged as soon as its logits exist; nothing goes to disk.
- G > 1 groups: one group at a time, each loaded once: g models plus [b, g, B] float32 logits per
  step. A group's logits of all n rows go to a spill file of n*g*B*4 bytes, so the G files take
  n*R*B*4 bytes in a temporary directory of the run dir (deleted at the end; the page cache keeps
  them in RAM when there is room). The merge then reads [b, R, B] at a time from them. Delicious
  (3,185 test rows, R = 16, B = 128): 26 MB; Amazon-670K (153,025 rows, R = 32, B = 10,000): 196 GB.
The merge sees the same logits in the same r order either way, so labels and float32 scores are
bit-identical. Repetition j of a group runs on device j // R_per_device of the visible GPUs (else
the logical CPUs); R_per_device = 0 puts the whole group on the first.
"""

from __future__ import annotations

import contextlib
import gc
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from mach import metrics
from mach.checkpoints import checkpoint_prefix, complete_epochs
from mach.data import read_rows, rows_to_model_input, tfrecord_files
from mach.devices import check_placement, device_for, placement_devices
from mach.identity import check_checkpoint_config
from mach.merge import ApproxSearch, CandidateSearch, check_inverse_lookups, merge_scores
from mach.model import MachNet
from mach.prepare import load_inverse_lookup, load_label_counts, load_lookups


def checkpoint_path(cfg, r: int, epoch: int | None) -> str:
    """The checkpoint prefix of repetition r after `epoch` epochs, or its latest when epoch is None."""
    ckpt_dir = cfg.ckpt_dir(r)
    if epoch is None:
        latest = tf.train.latest_checkpoint(str(ckpt_dir))
        if latest is None:
            raise FileNotFoundError(
                f"no complete checkpoint in {ckpt_dir}; train it with `python train.py --repetitions {r}`"
            )
        return latest
    epochs = complete_epochs(ckpt_dir)
    if epoch not in epochs:
        raise FileNotFoundError(
            f"--epoch {epoch}: repetition r={r} has no checkpoint of that epoch in {ckpt_dir}; "
            f"available epochs: {', '.join(map(str, epochs)) or 'none'} (training keeps the last "
            f"keep_checkpoints={cfg.keep_checkpoints}; train with --set keep_checkpoints=0 to keep "
            "every epoch)"
        )
    return checkpoint_prefix(ckpt_dir, epoch)


class TrainedRepetition:
    """Repetition r restored from its last checkpoint (or that of `epoch`), for inference only."""

    def __init__(self, cfg, r: int, epoch: int | None = None, device: str | None = None):
        self.r = r
        self.label_to_bucket, feature_to_slot, lookup_sha256 = load_lookups(cfg, r)
        check_checkpoint_config(cfg, r, lookup_sha256, "evaluate")
        self.checkpoint_path = checkpoint_path(cfg, r, epoch)
        # Weights and lookups live on the device that computes this repetition's logits.
        with tf.device(device) if device else contextlib.nullcontext():
            self.model = MachNet(cfg.input_dim(), cfg.hidden, cfg.B, 0.0, cfg.seed, r)
            # The optimiser's slots are in the checkpoint too; inference needs only the model.
            try:
                tf.train.Checkpoint(model=self.model).restore(
                    self.checkpoint_path
                ).expect_partial().assert_existing_objects_matched()
            except (tf.errors.OpError, AssertionError, ValueError) as err:
                raise ValueError(
                    f"checkpoint {self.checkpoint_path} cannot be read ({type(err).__name__}: "
                    f"{str(err).splitlines()[0][:200]}); evaluate another epoch with --epoch N, or "
                    f"retrain repetition {r} with `python train.py --repetitions {r} --overwrite`"
                ) from None
            self.feature_to_slot = None if feature_to_slot is None else tf.constant(feature_to_slot)
            self.lookup_tensor = tf.constant(self.label_to_bucket)
        self.device = self.model.weights_[0].device

    def logits(self, cfg, parsed) -> tf.Tensor:
        inputs, _ = rows_to_model_input(
            parsed, self.lookup_tensor, cfg.B, cfg.input_dim(), self.feature_to_slot, cfg.normalize
        )
        return self.model(inputs)  # [batch, B] float32


def load_repetitions(
    cfg, rs, log, epoch: int | None = None, devices: list[str] | None = None
) -> list[TrainedRepetition]:
    """Repetitions rs, the j-th on device_for(j, devices, cfg.R_per_device) (TF's choice if no devices)."""
    reps = []
    for j, r in enumerate(rs):
        device = None if devices is None else device_for(j, devices, cfg.R_per_device)
        reps.append(TrainedRepetition(cfg, r, epoch, device))
        log(f"loaded r={r} checkpoint={reps[-1].checkpoint_path} device={reps[-1].device}")
    return reps


def load_trained(cfg, R: int, log, epoch: int | None = None) -> list[TrainedRepetition]:
    return load_repetitions(cfg, range(R), log, epoch)


def repetition_groups(R: int, group_size: int) -> list[range]:
    """r = 0..R-1 in consecutive groups of group_size (0 = one group)."""
    size = R if group_size == 0 else min(group_size, R)
    return [range(start, min(R, start + size)) for start in range(0, R, size)]


def make_forward(cfg, reps: list[TrainedRepetition]):
    """tf.function: parsed rows -> logits [batch, len(reps), B] float32, each rep on its device."""

    def forward(parsed):
        logits = []
        for rep in reps:
            with tf.device(rep.device):
                logits.append(rep.logits(cfg, parsed))
        # Stacked on the host, where they go next, so no GPU holds the whole group's logits.
        with tf.device("/CPU:0"):
            return tf.stack(logits, axis=1)

    # Batches differ in their number of non-zeros; one relaxed trace serves them all.
    return tf.function(forward, reduce_retracing=True)


def row_labels(parsed) -> list[np.ndarray]:
    """The true labels of each row of a parsed batch, [n_i] int64 each."""
    ragged = tf.RaggedTensor.from_sparse(parsed["labels"])
    return np.split(ragged.values.numpy(), ragged.row_splits.numpy()[1:-1])


def forward_rows(cfg, reps, files: list[str], max_rows: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """logits [rows, R, B] float32 of the first max_rows test rows, and their true labels (benchmarks)."""
    forward = make_forward(cfg, reps)
    blocks, true_labels = [], []
    for parsed in read_rows(files, cfg.eval_batch_size):
        blocks.append(forward(parsed).numpy())
        true_labels += row_labels(parsed)
        if len(true_labels) >= max_rows:
            break
    return np.ascontiguousarray(np.concatenate(blocks)[:max_rows]), true_labels[:max_rows]


def sweep_sizes(R: int) -> list[int]:
    """1, 2, 4, ... and R itself."""
    sizes = [2**i for i in range(R.bit_length()) if 2**i < R]
    return sizes + [R]


def load_inverse_lookups(cfg, label_to_bucket: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """bucket_offsets [R, B+1] int64 and bucket_labels [R, K] int64 saved by preprocess, checked against
    label_to_bucket [R, K] (the candidate kernel trusts them)."""
    offsets, labels = zip(*(load_inverse_lookup(cfg, r) for r in range(len(label_to_bucket))))
    bucket_offsets, bucket_labels = np.stack(offsets), np.stack(labels)
    check_inverse_lookups(label_to_bucket, bucket_offsets, bucket_labels)
    return bucket_offsets, bucket_labels


def merge_blocks(
    cfg,
    blocks,
    label_to_bucket: np.ndarray,
    R_values: list[int],
    impl: str,
    log,
    candidates: tuple[int, int] | None = None,
    approx: tuple[int, int] | None = None,
) -> dict:
    """Top-k labels and scores of logit blocks [batch, R, B] float32 for each R in R_values (the first
    R repetitions). blocks: any iterable; the time spent producing them counts as forward_s.

    candidates=(m, min_freq) merges by the candidate merge, approx=(m, min_freq) by approx_eval
    (min_freq capped at each R); neither: the exact merge. label_to_bucket: [R, K] int32.

    Returns {"topk": {R: [n, top_k] int64}, "scores": {R: [n, top_k] float32}, "forward_s", "merge_s"}.
    """
    search = candidates or approx
    inverse = None if search is None else load_inverse_lookups(cfg, label_to_bucket)
    topk = {R: [] for R in R_values}
    scores = {R: [] for R in R_values}
    rows, forward_s, merge_s = 0, 0.0, 0.0
    blocks = iter(blocks)
    while True:
        start = time.time()
        logits = next(blocks, None)
        forward_s += time.time() - start
        if logits is None:
            break
        start = time.time()
        for R in R_values:
            extra = {}
            if search is not None:
                kind, Search = (
                    ("candidates", CandidateSearch) if candidates else ("approx", ApproxSearch)
                )
                extra[kind] = Search(inverse[0][:R], inverse[1][:R], search[0], min(search[1], R))
            labels, top_scores = merge_scores(
                np.ascontiguousarray(logits[:, :R]),
                label_to_bucket[:R],
                cfg.top_k,
                mode=cfg.merge,
                loss=cfg.loss,
                threads=cfg.threads,
                impl=impl,
                **extra,
            )
            topk[R].append(labels)
            scores[R].append(top_scores)
        merge_s += time.time() - start
        rows += len(logits)
        if rows % (20 * cfg.eval_batch_size) < cfg.eval_batch_size:
            log(f"progress=evaluate rows={rows}")
    return {
        "topk": {R: np.concatenate(v) for R, v in topk.items()},
        "scores": {R: np.concatenate(v) for R, v in scores.items()},
        "forward_s": forward_s,
        "merge_s": merge_s,
    }


def predict(
    cfg,
    reps: list[TrainedRepetition],
    files: list[str],
    R_values: list[int],
    impl: str,
    log,
    candidates: tuple[int, int] | None = None,
    approx: tuple[int, int] | None = None,
) -> dict:
    """Top-k predictions of the test rows by loaded repetitions, each batch merged as it comes.

    Returns merge_blocks' dict plus "true_labels" (list of [n_i] int64) and "n_params" (all networks).
    """
    forward = make_forward(cfg, reps)
    label_to_bucket = np.stack([rep.label_to_bucket for rep in reps])  # [R, K] int32
    true_labels: list[np.ndarray] = []

    def blocks():
        for parsed in read_rows(files, cfg.eval_batch_size):
            true_labels.extend(row_labels(parsed))
            yield forward(parsed).numpy()  # [batch, R, B] float32

    out = merge_blocks(cfg, blocks(), label_to_bucket, R_values, impl, log, candidates, approx)
    out["true_labels"] = true_labels
    out["n_params"] = sum(rep.model.n_params() for rep in reps)
    return out


def predict_grouped(
    cfg,
    R: int,
    files: list[str],
    R_values: list[int],
    impl: str,
    log,
    candidates: tuple[int, int] | None = None,
    approx: tuple[int, int] | None = None,
    epoch: int | None = None,
    n_rows: int | None = None,
) -> dict:
    """predict() of repetitions 0..R-1, loaded eval_group_size at a time and placed R_per_device per
    device (memory model: the module docstring). n_rows, the number of test rows, lets a grouped run
    check the free disk first. Returns predict's dict plus "devices" (those used) and "groups".
    """
    devices = placement_devices()
    groups = repetition_groups(R, cfg.eval_group_size)
    check_placement(len(groups[0]), devices, cfg.R_per_device)
    used = devices[: 1 if cfg.R_per_device == 0 else -(-len(groups[0]) // cfg.R_per_device)]
    if len(groups) == 1:
        reps = load_repetitions(cfg, groups[0], log, epoch, devices)
        return {
            **predict(cfg, reps, files, R_values, impl, log, candidates, approx),
            "devices": used,
            "groups": 1,
        }
    if n_rows is not None:
        need, free = n_rows * R * cfg.B * 4, shutil.disk_usage(cfg.run_dir()).free
        if need > free:
            raise ValueError(
                f"eval_group_size={cfg.eval_group_size} spills the logits of all {n_rows} test rows "
                f"to disk: {need / 2**30:.1f} GiB needed in {cfg.run_dir()}, {free / 2**30:.1f} GiB "
                "free; free some space, or set eval_group_size=0 to hold all R models in memory"
            )
    spill_dir = Path(tempfile.mkdtemp(prefix=".eval-logits-", dir=cfg.run_dir()))
    try:
        label_to_bucket, true_labels, n_params, paths = [], [], 0, []
        start = time.time()
        for g, rs in enumerate(groups):
            reps = load_repetitions(cfg, rs, log, epoch, devices)
            label_to_bucket += [rep.label_to_bucket for rep in reps]
            n_params += sum(rep.model.n_params() for rep in reps)
            forward = make_forward(cfg, reps)
            paths.append(spill_dir / f"logits_g{g:02d}.f32")
            with open(paths[-1], "wb") as f:
                for parsed in read_rows(files, cfg.eval_batch_size):
                    f.write(forward(parsed).numpy().tobytes())  # [batch, len(rs), B] float32
                    if g == 0:
                        true_labels.extend(row_labels(parsed))
            # Drop this group's models before the next group is loaded.
            del reps, forward
            gc.collect()
            log(
                f"progress=evaluate group={g + 1}/{len(groups)} r={rs.start}..{rs.stop - 1} "
                f"rows={len(true_labels)}"
            )
        forward_s = time.time() - start
        n, b = len(true_labels), cfg.eval_batch_size
        spilled = [
            np.memmap(path, np.float32, "r", shape=(n, len(rs), cfg.B)) if n else None
            for path, rs in zip(paths, groups)
        ]
        # Rows in order, all R side by side: the same [b, R, B] blocks as the one-group path merges.
        blocks = (np.concatenate([x[i : i + b] for x in spilled], axis=1) for i in range(0, n, b))
        out = merge_blocks(
            cfg, blocks, np.stack(label_to_bucket), R_values, impl, log, candidates, approx
        )
        del spilled, blocks
    finally:
        shutil.rmtree(spill_dir, ignore_errors=True)
    out["forward_s"] += forward_s
    return {
        **out,
        "true_labels": true_labels,
        "n_params": n_params,
        "devices": used,
        "groups": len(groups),
    }


def metric_ks(top_k: int) -> tuple[int, ...]:
    """The k of the reported metrics: 1, 3 and 5 where they are <= top_k, and top_k itself."""
    return tuple(sorted({k for k in (1, 3, 5) if k <= top_k} | {top_k}))


def score(cfg, topk: np.ndarray, true_labels: list[np.ndarray], data_manifest: dict) -> dict:
    counts = load_label_counts(cfg, data_manifest)
    n_train_rows = data_manifest["train"]["rows"]
    inv_propensity = 1.0 / metrics.propensities(counts, n_train_rows, cfg.psp_A, cfg.psp_B)
    ks = metric_ks(cfg.top_k)
    return metrics.evaluate_topk(topk, true_labels, ks=ks, inv_propensity=inv_propensity)


def test_files(cfg, data_manifest: dict) -> list[str]:
    return tfrecord_files(cfg.tfrecord_dir(), data_manifest["test"])
