"""One TensorFlow SavedModel per trained MACH model: the R networks, lookups, merge and top-k in one graph.

Signatures (plain TensorFlow or TensorFlow Serving load them; no project code, no custom ops):
    serving_default  indices int64 [nnz], values float32 [nnz], row_splits int64 [batch+1]
                     -> labels int64 [batch, k], scores float32 [batch, k]
    predict_lines    lines string [batch], rows in the training text format (labels are ignored)
                     -> the same outputs
Row i holds indices[row_splits[i]:row_splits[i+1]], 0-based feature ids as an xc file writes them
(a libsvm file's `i` is feature i-1), with their raw values: row normalisation and feature hashing
happen in the graph, as in training (mach.data.rows_to_model_input).

The merge in the graph follows mach.merge: score(c) = sum_r logits[r, h_r(c)] added in float32 in the
order r = 0..R-1, ranked by tf.math.top_k, which puts the lower index (= lower label) first among equal
values. Up to EXACT_MERGE_MAX_K classes every label is scored (exact_topk == merge_topk_numpy); above
it only the labels of each repetition's top-m buckets (candidate_topk == merge_candidates_numpy).
The choice is made at export time and recorded in the metadata (assets.extra/mach.json and the
`metadata` string variable of the loaded object).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import tensorflow as tf

from mach.data.formats import id_bases
from mach.data.tfrecords import rows_to_model_input
from mach.files import remove_dead_leftovers
from mach.merge import Merge
from mach.merge_graph import bucket_scores, candidate_topk, exact_topk, probs_estimate
from mach.model import MachNet

# The in-graph exact merge sums [batch, K] floats: faster than the candidate merge up to K of a few
# 10^4, slower (and 0.4 GB per 1,024 rows) from 10^5 (bench/predict_bench.py --merge-sweep;
# experiments/serving).
EXACT_MERGE_MAX_K = 50_000
METADATA_FILE = "mach.json"  # in assets.extra/, next to TensorFlow Serving's warm-up data
PRECISIONS = ("float32", "bfloat16")  # how an export stores the weights
SCHEMA = 3  # bump when the signatures or the metadata change
LINE_FORMATS = ("xc", "libsvm")  # formats predict_lines parses in the graph
_VALUE = r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?"  # a finite decimal, as xcformat reads


def choose_merge(K: int, B: int, R: int, merge) -> Merge:
    """The merge the graph will run: exact or candidates (a Merge), for --merge's choice.

    "auto" takes the exact merge up to EXACT_MERGE_MAX_K classes and the candidate merge above.
    """
    if merge == "auto":
        merge = Merge("exact" if K <= EXACT_MERGE_MAX_K else "candidates")
    if merge.kind == "approx":
        raise ValueError(
            "--merge approx is an evaluation of the official code; export takes exact or candidates"
        )
    merge.m(B)  # checks the buckets against B
    return merge


def parse_lines(lines: tf.Tensor, fmt: str, n_features: int, feature_base: int | None = None):
    """[batch] text rows (xc or libsvm, labels ignored) -> indices [nnz] int64 (0-based), values [nnz]
    float32, row_splits [batch+1] int64. A malformed line fails with its index and text.
    feature_base: the first feature id of the rows (default: the format's)."""
    tokens = tf.strings.split(lines)  # ragged [batch, None]; blank lines are rows without features
    # shape [batch, 1] even when no row has a token (an empty batch, or only blank lines)
    first = tokens[:, :1].to_tensor(default_value="", shape=[None, 1])[:, 0]
    # As xcformat: a leading space, or a first token with ':', means the row has no labels.
    has_labels = (
        ~tf.strings.regex_full_match(lines, r"(?s)\s.*")
        & ~tf.strings.regex_full_match(first, ".*:.*")
        & (first != "")
    )
    labels_ok = ~has_labels | tf.strings.regex_full_match(first, "[0-9]+(,[0-9]+)*")
    position = tf.ragged.range(tokens.row_lengths())
    features = tf.ragged.boolean_mask(tokens, ~((position == 0) & has_labels[:, None]))
    text = features.flat_values
    ok = tf.strings.regex_full_match(text, "[0-9]{1,18}:" + _VALUE)
    # A row without features gets int32's max from the segment min: nothing to refuse.
    feature_ok = tf.math.unsorted_segment_min(
        tf.cast(ok, tf.int32), features.value_rowids(), tf.shape(lines)[0]
    )
    row_ok = labels_ok & (feature_ok > 0)
    # The first bad line (a sentinel past the end when there is none, so an empty batch works too).
    bad = tf.argmin(tf.concat([tf.cast(row_ok, tf.int32), [0]], 0), output_type=tf.int64)
    check = tf.debugging.Assert(
        tf.reduce_all(row_ok),
        [
            "predict_lines: line index",
            bad,
            "is not `labels i:v i:v ...`:",
            tf.gather(tf.concat([lines, [""]], 0), bad),
        ],
    )
    with tf.control_dependencies([check]):  # report the line before to_number fails on it
        text = tf.identity(text)
    parts = tf.strings.split(text, ":", maxsplit=1).to_tensor(shape=[None, 2])
    base = id_bases(fmt, 0, feature_base)[1]
    indices = tf.strings.to_number(parts[:, 0], tf.int64) - base
    values = tf.strings.to_number(parts[:, 1], tf.float32)
    return indices, values, features.row_splits


class ServingModel(tf.Module):
    """The exported object: R networks, their lookups, the merge; signatures serve and predict_lines."""

    def __init__(
        self, cfg, reps, k: int, merge: Merge, inverse, metadata: dict, precision="float32"
    ):
        super().__init__(name="mach_serving")
        # Plain values only: tf.Module would wrap dicts and lists of non-variables for tracking.
        self.cfg, self.k = cfg, k
        self.merge_kind = merge.kind
        self.m, self.min_freq = merge.m(cfg.B), min(merge.min_freq, len(reps))
        self.line_format = metadata["line_format"]
        self.R, self.B, self.D = len(reps), cfg.B, cfg.n_features
        self.nets = [rep.model for rep in reps]
        if precision == "bfloat16":
            # The same networks with their weights stored as bfloat16: half the bytes on disk.
            self.nets = [
                MachNet(
                    cfg.input_dim(),
                    cfg.hidden,
                    cfg.B,
                    0.0,
                    cfg.seed,
                    rep.r,
                    trained=rep.model.arrays(),
                    storage=tf.bfloat16,
                )
                for rep in reps
            ]
        self.lookups = [
            tf.Variable(
                rep.label_to_bucket.astype(np.int32), trainable=False, name=f"label_r{r:02d}"
            )
            for r, rep in enumerate(reps)
        ]  # R x [K] int32
        self.feature_lookups = (
            None
            if cfg.feat_hash_dim is None
            else [tf.Variable(rep.feature_to_slot, trainable=False) for rep in reps]
        )  # R x [D] int32, or None without feature hashing
        if self.merge_kind == "candidates":
            offsets, labels = global_inverse(*inverse)  # [R*B+1], [R*K] int64
            self.bucket_offsets = tf.Variable(offsets, trainable=False)  # [R*B+1] int64
            self.bucket_labels = tf.Variable(labels, trainable=False)  # [R*K] int64
        self.metadata_json = json.dumps(metadata, sort_keys=True)
        self.metadata = tf.Variable(self.metadata_json, trainable=False)  # read back after loading

    def _logits(self, indices, values, row_splits) -> list[tf.Tensor]:
        """R x [batch, B] float32 logits of raw rows, normalised and hashed as in training."""
        checks = [
            tf.debugging.assert_non_negative(indices, "feature ids must be >= 0 (0-based)"),
            tf.debugging.assert_less(
                indices, tf.constant(self.D, tf.int64), f"feature ids must be < n_features={self.D}"
            ),
            tf.debugging.assert_all_finite(values, "feature values must be finite"),
        ]
        with tf.control_dependencies(checks):  # our messages, before a gather fails on a bad id
            indices = tf.identity(indices)
        batch = tf.size(row_splits, out_type=tf.int64) - 1
        parsed = {
            "feat_idx": tf.RaggedTensor.from_row_splits(indices, row_splits).to_sparse(),
            "feat_val": tf.RaggedTensor.from_row_splits(values, row_splits).to_sparse(),
            "labels": tf.SparseTensor(
                tf.zeros([0, 2], tf.int64), tf.zeros([0], tf.int64), tf.stack([batch, 0])
            ),
        }
        out, inputs = [], None
        for r, net in enumerate(self.nets):
            if inputs is None or self.feature_lookups is not None:
                inputs, _ = rows_to_model_input(
                    parsed,
                    self.lookups[r],
                    self.B,
                    self.cfg.input_dim(),
                    None if self.feature_lookups is None else self.feature_lookups[r],
                    self.cfg.normalize,
                )  # without feature hashing, one input serves all R
            out.append(net(inputs))  # each network's own call, as evaluation runs it
        return out

    def _topk(self, indices, values, row_splits) -> dict:
        check = tf.debugging.assert_greater_equal(
            tf.size(row_splits), 1, "row_splits must have batch + 1 >= 1 entries"
        )
        with tf.control_dependencies([check]):
            row_splits = tf.identity(row_splits)
        # An empty batch never reaches the networks: sparse kernels may divide by the batch size.
        return tf.cond(
            tf.size(row_splits) > 1,
            lambda: self._nonempty_topk(indices, values, row_splits),
            lambda: {
                "labels": tf.zeros([0, self.k], tf.int64),
                "scores": tf.zeros([0, self.k], tf.float32),
            },
        )

    def _nonempty_topk(self, indices, values, row_splits) -> dict:
        logits = self._logits(indices, values, row_splits)
        logits = [bucket_scores(x, self.cfg.score, self.cfg.loss) for x in logits]
        if self.merge_kind == "exact":
            labels, scores = exact_topk(logits, self.lookups, self.k)
        else:
            labels, scores = candidate_topk(
                tf.stack(logits, axis=1),
                self.lookups,
                self.bucket_offsets,
                self.bucket_labels,
                self.k,
                self.m,
                self.min_freq,
            )
        if self.cfg.score == "probs":
            scores = probs_estimate(scores, self.R, self.B)
        return {"labels": labels, "scores": scores}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.int64, name="indices"),
            tf.TensorSpec([None], tf.float32, name="values"),
            tf.TensorSpec([None], tf.int64, name="row_splits"),
        ]
    )
    def serve(self, indices, values, row_splits):
        return self._topk(indices, values, row_splits)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="lines")])
    def predict_lines(self, lines):
        return self._topk(*parse_lines(lines, self.line_format, self.D, self.cfg.feature_base))


def global_inverse(bucket_offsets: np.ndarray, bucket_labels: np.ndarray):
    """R CSR inverses ([R, B+1] and [R, K] int64) end to end: offsets [R*B+1] and labels [R*K] int64."""
    R, K = bucket_labels.shape
    shifted = bucket_offsets[:, :-1] + K * np.arange(R, dtype=np.int64)[:, None]
    return np.append(shifted.ravel(), R * K).astype(np.int64), bucket_labels.ravel().astype(
        np.int64
    )


def next_version(base: Path) -> int:
    """1, or one more than the largest numbered version under base (TensorFlow Serving's layout)."""
    versions = [int(p.name) for p in base.iterdir() if p.name.isdigit()] if base.is_dir() else []
    return max(versions, default=0) + 1


def write_savedmodel(module: ServingModel, base: Path, version: int | None) -> Path:
    """Write the SavedModel to base/<version>/, all at once: TensorFlow Serving polls base and must
    never see a half-written version. Returns the version directory."""
    base.mkdir(parents=True, exist_ok=True)
    remove_dead_leftovers(base)
    version = next_version(base) if version is None else version
    final = base / str(version)
    if final.exists():
        raise ValueError(
            f"{final} exists; omit --version to write version {next_version(base)}, or remove it"
        )
    tmp = base / f".{version}.tmp-{os.getpid()}"
    try:
        signatures = {"serving_default": module.serve, "predict_lines": module.predict_lines}
        if module.line_format is None:
            del signatures["predict_lines"]
        # Gradients are not served: a network with a custom gradient saves without its gradient function.
        options = tf.saved_model.SaveOptions(experimental_custom_gradients=False)
        tf.saved_model.save(module, str(tmp), signatures=signatures, options=options)
        (tmp / "assets.extra").mkdir()
        (tmp / "assets.extra" / METADATA_FILE).write_text(
            json.dumps(
                {**json.loads(module.metadata_json), "version": version}, indent=2, sort_keys=True
            )
            + "\n"
        )
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def build(
    cfg, reps, k: int, merge: Merge, inverse, epoch: int, precision: str = "float32"
) -> ServingModel:
    """The ServingModel of loaded repetitions (mach.evaluation.TrainedRepetition) after `epoch`.

    inverse: (bucket_offsets [R, B+1], bucket_labels [R, K]) int64, for the candidate merge only.
    precision: how the weights are stored, float32 or bfloat16 (half the bytes; computed in float32).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {', '.join(PRECISIONS)}")
    if not 1 <= k <= cfg.n_classes:
        raise ValueError(f"top_k={k}: expected 1 <= k <= n_classes={cfg.n_classes}")
    metadata = {
        "schema": SCHEMA,
        "dataset": cfg.name,
        "run": cfg.run,
        "R": len(reps),
        "B": cfg.B,
        "n_classes": cfg.n_classes,
        "n_features": cfg.n_features,
        "feat_hash_dim": cfg.feat_hash_dim,
        "normalize": cfg.normalize,
        "score": cfg.score,
        "k": k,
        "merge": {"kind": merge.kind, "name": merge.name(cfg.B)}
        | (
            {"m": merge.m(cfg.B), "min_freq": min(merge.min_freq, len(reps))}
            if merge.kind != "exact"
            else {}
        ),
        "exact_merge_max_k": EXACT_MERGE_MAX_K,
        "line_format": cfg.format if cfg.format in LINE_FORMATS else None,
        "feature_ids": "0-based (a libsvm file's index i is feature i-1)",
        "epoch": epoch,
        "epochs": cfg.epochs,
        "weights_dtype": precision,
        "tensorflow": tf.__version__,
        "config": dataclasses.asdict(cfg),
    }
    return ServingModel(cfg, reps, k, merge, inverse, metadata, precision)


def export_run(
    cfg,
    data_manifest: dict,
    R: int,
    merge,
    epoch: int | None,
    out: Path,
    version,
    log,
    precision: str = "float32",
):
    """Export repetitions 0..R-1 of cfg's run after `epoch` (None: the last) to out/<version>/ (None:
    the next free), weights stored as `precision`. merge: a mach.merge.Merge or "auto". Returns the
    version directory."""
    import time

    from mach import evaluation
    from mach.data.prepare import load_inverse_lookups
    from mach.identity import data_fingerprint
    from mach.weights import resolve_epoch

    if not 1 <= R <= cfg.R:
        raise ValueError(f"--R {R}: expected 1 <= R <= {cfg.R} (Config.R)")
    merge = choose_merge(cfg.n_classes, cfg.B, R, merge)
    epoch, note = resolve_epoch(cfg, R, epoch)
    start = time.time()
    data = data_fingerprint(data_manifest)
    reps = evaluation.load_repetitions(cfg, range(R), epoch, data, log)
    inverse = None
    if merge.kind == "candidates":
        # The CSR inverses preprocess saved, checked against the lookups the models were trained with.
        inverse = load_inverse_lookups(cfg, np.stack([rep.label_to_bucket for rep in reps]))
    module = build(cfg, reps, cfg.top_k, merge, inverse, epoch, precision)
    path = write_savedmodel(module, Path(out), version)
    log(
        f"exported={path} R={R} K={cfg.n_classes} k={cfg.top_k} merge={merge.name(cfg.B)} "
        f"weights={precision} "
        f"epoch={epoch}{f' ({note})' if note else ''} seconds={time.time() - start:.1f}"
    )
    signatures = "serving_default" + (", predict_lines" if module.line_format else "")
    log(f"signatures={signatures} (saved_model_cli show --dir {path} --all)")
    return path
