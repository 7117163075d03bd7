"""Evaluation: run R trained repetitions over the test rows, merge their bucket scores, score the top-k."""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

from mach import metrics
from mach.data import read_rows, rows_to_model_input, tfrecord_files
from mach.merge import CandidateSearch, check_inverse_lookups, merge_scores
from mach.model import MachNet
from mach.prepare import LABEL_COUNTS, load_lookups
from mach.training import check_checkpoint_config


class TrainedRepetition:
    """Repetition r restored from its last checkpoint, for inference only."""

    def __init__(self, cfg, r: int):
        self.r = r
        self.label_to_bucket, feature_to_slot, lookup_sha256 = load_lookups(cfg, r)
        check_checkpoint_config(cfg, r, lookup_sha256, "evaluate")
        latest = tf.train.latest_checkpoint(str(cfg.ckpt_dir(r)))
        if latest is None:
            raise FileNotFoundError(
                f"no complete checkpoint in {cfg.ckpt_dir(r)}; train it with `python train.py --repetitions {r}`"
            )
        self.checkpoint_path = latest
        self.model = MachNet(cfg.input_dim(), cfg.hidden, cfg.B, 0.0, cfg.seed, r)
        # The optimiser's slots are in the checkpoint too; inference needs only the model.
        tf.train.Checkpoint(model=self.model).restore(
            latest
        ).expect_partial().assert_existing_objects_matched()
        self.feature_to_slot = None if feature_to_slot is None else tf.constant(feature_to_slot)
        self.lookup_tensor = tf.constant(self.label_to_bucket)

    def logits(self, cfg, parsed) -> tf.Tensor:
        inputs, _ = rows_to_model_input(
            parsed, self.lookup_tensor, cfg.B, cfg.input_dim(), self.feature_to_slot, cfg.normalize
        )
        return self.model(inputs)  # [batch, B] float32


def load_trained(cfg, R: int, log) -> list[TrainedRepetition]:
    reps = []
    for r in range(R):
        reps.append(TrainedRepetition(cfg, r))
        log(f"loaded r={r} checkpoint={reps[-1].checkpoint_path}")
    return reps


def sweep_sizes(R: int) -> list[int]:
    """1, 2, 4, ... and R itself."""
    sizes = [2**i for i in range(R.bit_length()) if 2**i < R]
    return sizes + [R]


def load_inverse_lookups(cfg, label_to_bucket: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """bucket_offsets [R, B+1] int64 and bucket_labels [R, K] int64 saved by preprocess, checked against
    label_to_bucket [R, K] (the candidate kernel trusts them)."""
    offsets, labels = [], []
    for r in range(len(label_to_bucket)):
        path = cfg.inverse_lookup_path(r)
        if not path.is_file():
            raise FileNotFoundError(
                f"no inverse lookup for r={r} at {path}; run `python preprocess.py --dataset {cfg.name}` with the same --set options"
            )
        with np.load(path) as saved:
            offsets.append(saved["bucket_offsets"])
            labels.append(saved["bucket_labels"])
    bucket_offsets, bucket_labels = np.stack(offsets), np.stack(labels)
    check_inverse_lookups(label_to_bucket, bucket_offsets, bucket_labels)
    return bucket_offsets, bucket_labels


def predict(
    cfg,
    reps: list[TrainedRepetition],
    files: list[str],
    R_values: list[int],
    impl: str,
    log,
    candidates: tuple[int, int] | None = None,
) -> dict:
    """Top-k predictions of the test rows for each R in R_values (the first R repetitions).

    candidates=(m, min_freq) merges by the candidate merge (min_freq capped at each R) instead of the exact one.

    Returns {"topk": {R: [n, top_k] int64}, "true_labels": list of [n_i] int64, "forward_s", "merge_s"}.
    """
    # Batches differ in their number of non-zeros; one relaxed trace serves them all.
    forward = tf.function(
        lambda parsed: tf.stack([rep.logits(cfg, parsed) for rep in reps], axis=1),
        reduce_retracing=True,
    )
    label_to_bucket = np.stack([rep.label_to_bucket for rep in reps])  # [R, K] int32
    inverse = None if candidates is None else load_inverse_lookups(cfg, label_to_bucket)
    topk = {R: [] for R in R_values}
    true_labels: list[np.ndarray] = []
    forward_s = merge_s = 0.0
    for parsed in read_rows(files, cfg.eval_batch_size):
        start = time.time()
        logits = forward(parsed).numpy()  # [batch, R, B] float32
        forward_s += time.time() - start
        start = time.time()
        for R in R_values:
            search = (
                None
                if inverse is None
                else CandidateSearch(
                    inverse[0][:R], inverse[1][:R], candidates[0], min(candidates[1], R)
                )
            )
            labels, _ = merge_scores(
                np.ascontiguousarray(logits[:, :R]),
                label_to_bucket[:R],
                cfg.top_k,
                mode=cfg.merge,
                loss=cfg.loss,
                threads=cfg.threads,
                impl=impl,
                candidates=search,
            )
            topk[R].append(labels)
        merge_s += time.time() - start
        ragged = tf.RaggedTensor.from_sparse(parsed["labels"])
        true_labels += np.split(ragged.values.numpy(), ragged.row_splits.numpy()[1:-1])
        if len(true_labels) % (20 * cfg.eval_batch_size) < cfg.eval_batch_size:
            log(f"progress=evaluate rows={len(true_labels)}")
    return {
        "topk": {R: np.concatenate(v) for R, v in topk.items()},
        "true_labels": true_labels,
        "forward_s": forward_s,
        "merge_s": merge_s,
    }


def score(cfg, topk: np.ndarray, true_labels: list[np.ndarray], n_train_rows: int) -> dict:
    counts = np.load(cfg.tfrecord_dir() / LABEL_COUNTS)
    inv_propensity = 1.0 / metrics.propensities(counts, n_train_rows, cfg.psp_A, cfg.psp_B)
    ks = tuple(k for k in (1, 3, 5) if k <= cfg.top_k) or (cfg.top_k,)
    return metrics.evaluate_topk(topk, true_labels, ks=ks, inv_propensity=inv_propensity)


def test_files(cfg, data_manifest: dict) -> list[str]:
    return tfrecord_files(cfg.tfrecord_dir(), data_manifest["test"])
