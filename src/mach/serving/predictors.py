"""Trained models that answer top-k queries on raw rows.

A run directory (what train.py writes) answers with NumPy and the compiled kernels: its weights are
verified NumPy files (mach.weights), so no TensorFlow is imported unless --forward tensorflow asks for
it. An exported SavedModel (export.py) answers through its serving_default signature.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from mach import weights
from mach.config import from_dict
from mach.data.formats import Row, id_bases
from mach.data.prepare import load_inverse_lookups, load_lookups
from mach.files import read_json_checked
from mach.identity import check_repetition
from mach.merge import Merge, load_kernel, merge_scores

# RunPredictor's forward passes. "auto": the compiled kernel for batches of up to AUTO_KERNEL_MAX_ROWS
# rows (it reads only the weights a row uses), matrix products above (they read the weights once per
# batch); bench/predict_bench.py measures the crossover.
FORWARDS = ("auto", "compiled", "compiled-bf16", "matmul", "tensorflow")
AUTO_KERNEL_MAX_ROWS = 8
EXACT = Merge()


def find_model(path: Path) -> tuple[str, Path]:
    """("savedmodel", version dir) or ("run", run dir) for what --model names: a SavedModel (or its
    base directory of numbered versions), a run directory, or a directory holding exactly one run.
    """
    if (path / "saved_model.pb").is_file():
        return "savedmodel", path
    versions = sorted(
        (int(p.name), p)
        for p in path.glob("*")
        if p.name.isdigit() and (p / "saved_model.pb").is_file()
    )
    if versions:
        return "savedmodel", versions[-1][1]  # the newest, as TensorFlow Serving serves it
    if (path / "ckpt").is_dir():
        return "run", path
    # A work directory, a dataset directory or a hashing directory: <dataset>/<hashing>/<run>/ckpt.
    runs = sorted({p.parent for depth in ("*", "*/*", "*/*/*") for p in path.glob(f"{depth}/ckpt")})
    if len(runs) == 1:
        return "run", runs[0]
    if runs:
        raise ValueError(
            f"{path} holds {len(runs)} trained runs ({', '.join(str(p.relative_to(path)) for p in runs)});"
            " pass one of them as --model (`python evaluate.py --list` describes them)"
        )
    raise FileNotFoundError(
        f"--model {path}: no SavedModel (saved_model.pb, or numbered versions of one) and no trained "
        "run (ckpt/) there; export one with `python export.py --dataset NAME --out models/NAME`, or "
        "pass a run directory such as work/delicious/B128-hs0-fhnone/default"
    )


def run_config(run_dir: Path, threads: int = 0):
    """The Config a run was trained with (ckpt/r00/config.json), pointed at run_dir wherever it now is."""
    path = run_dir / "ckpt" / "r00" / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no {path}: repetition 0 of {run_dir} is not trained; train it with "
            "`python train.py --dataset NAME --repetitions 0` and the run's --set options"
        )
    fix = "it is written by train.py: restore it, or retrain the run with --overwrite"
    saved = read_json_checked(path, fix).get("config")
    if not isinstance(saved, dict):
        raise ValueError(f"{path} is damaged (no config in it); {fix}")
    # The work directory may have moved since training: derive it from where the run is now.
    saved.update(
        work_dir=str(run_dir.parents[2]),
        name=run_dir.parents[1].name,
        run=run_dir.name,
        threads=threads,
    )
    cfg = from_dict(saved)
    if cfg.hashing_dir().resolve() != run_dir.parent.resolve():
        raise ValueError(
            f"{run_dir} is not where its config.json puts it ({cfg.hashing_dir().name}/{run_dir.name}): "
            "pass the run directory as train.py wrote it, inside <work>/<dataset>/<hashing>/"
        )
    return cfg


def batch_arrays(rows: list[Row]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """indices [nnz] int64, values [nnz] float32, row_splits [batch+1] int64: serving_default's inputs."""
    lengths = [len(row.feat_idx) for row in rows]
    row_splits = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=row_splits[1:])
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.float32), row_splits
    indices = np.concatenate([row.feat_idx for row in rows]).astype(np.int64)
    values = np.concatenate([row.feat_val for row in rows]).astype(np.float32)
    return indices, values, row_splits


class SavedModelPredictor:
    """An exported model (export.py), loaded with plain TensorFlow."""

    def __init__(self, path: Path, threads: int = 0):
        import tensorflow as tf

        if threads > 0:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        self.path, self.tf = path, tf
        meta_path = path / "assets.extra" / "mach.json"
        fix = f"export the model again with export.py (it writes {meta_path.name} with the model)"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path} is missing; {fix}")
        self.metadata = read_json_checked(meta_path, fix)
        try:
            conf = self.metadata["config"]
            self.k, self.format = self.metadata["k"], conf["format"]
            self.n_features, self.n_classes = (
                self.metadata["n_features"],
                self.metadata["n_classes"],
            )
            self.bases = id_bases(self.format, conf.get("label_base", 0), conf.get("feature_base"))
        except (KeyError, TypeError):
            raise ValueError(f"{meta_path} is damaged (fields missing); {fix}") from None
        try:
            # The loaded object owns the variables: keep it, not only its signature.
            self.loaded = tf.saved_model.load(str(path))
            self.serve = self.loaded.signatures["serving_default"]
        except (OSError, ValueError, KeyError, tf.errors.OpError) as err:
            raise ValueError(
                f"{path} cannot be loaded as a SavedModel ({type(err).__name__}: "
                f"{str(err).splitlines()[0][:160]}); {fix}"
            ) from None

    def predict(self, rows: list[Row]) -> tuple[np.ndarray, np.ndarray]:
        """Top-k labels [batch, k] int64 and scores [batch, k] float32 of parsed rows."""
        tf = self.tf
        indices, values, row_splits = batch_arrays(rows)
        try:
            out = self.serve(
                indices=tf.constant(indices),
                values=tf.constant(values),
                row_splits=tf.constant(row_splits),
            )
        except tf.errors.OpError as err:
            raise ValueError(
                f"{self.path}: the SavedModel failed on a batch ({type(err).__name__}: "
                f"{str(err).splitlines()[0][:200]}); if its files were damaged, export it again"
            ) from None
        return out["labels"].numpy(), out["scores"].numpy()


class RunPredictor:
    """The R trained repetitions of a run directory, merged by the compiled merge kernel.

    forward: "compiled" (the kernel; a row's logits independent of its batch), "compiled-bf16" (the
    same with bfloat16 weights: half the bytes, logits within ~0.4% of float32's), "matmul" (sparse
    and BLAS matrix products), "tensorflow" (the networks as evaluate.py runs them: the same bits as
    evaluate.py), or "auto" (compiled up to AUTO_KERNEL_MAX_ROWS rows, matmul above). The float32
    paths agree to float32 rounding.
    """

    def __init__(
        self,
        cfg,
        k: int,
        log,
        forward: str = "auto",
        merge: Merge = EXACT,
        impl: str = "compiled",
        epoch: int | None = None,
    ):
        from mach.serving.forward import Networks

        if forward not in FORWARDS:
            raise ValueError(f"forward {forward!r}: expected one of {', '.join(FORWARDS)}")
        if impl == "compiled":
            load_kernel()  # fail now, with the fix, rather than after loading R models
        if not 1 <= k <= cfg.n_classes:
            raise ValueError(f"--top-k {k}: expected 1 <= k <= {cfg.n_classes} (the classes)")
        merge.m(cfg.B)
        self.cfg, self.k, self.kind, self.merge, self.impl = cfg, k, forward, merge, impl
        self.format, self.n_features, self.n_classes = cfg.format, cfg.n_features, cfg.n_classes
        self.bases = cfg.id_bases()
        self.epoch, self.epoch_note = weights.resolve_epoch(cfg, cfg.R, epoch)
        lookups, feature_lookups, arrays = [], [], []
        for r in range(cfg.R):
            label_to_bucket, feature_to_slot, lookup_sha256 = load_lookups(cfg, r)
            check_repetition(cfg, r, lookup_sha256, None, "predict with")
            lookups.append(label_to_bucket)
            feature_lookups.append(feature_to_slot)
            fix = "retrain the run with `python train.py ... --overwrite`"
            arrays.append(weights.load_epoch(cfg.ckpt_dir(r), self.epoch, fix))
        self.label_to_bucket = np.stack(lookups)  # [R, K] int32
        self.arrays, self.feature_lookups = arrays, feature_lookups  # for --forward tensorflow
        hashed = np.stack(feature_lookups) if cfg.feat_hash_dim is not None else None
        precision = "bfloat16" if forward == "compiled-bf16" else "float32"
        self.nets = Networks(arrays, hashed, cfg.normalize, precision)
        self.inverse = (
            None if merge.kind == "exact" else load_inverse_lookups(cfg, self.label_to_bucket)
        )
        self._tensorflow = None
        log(
            f"model={cfg.run_dir()} R={cfg.R} epoch={self.epoch}"
            + (f" ({self.epoch_note})" if self.epoch_note else "")
        )

    def logits(self, indices, values, row_splits) -> np.ndarray:
        """[batch, R, B] float32 logits of raw rows, by the forward pass chosen."""
        batch = len(row_splits) - 1
        if self.kind == "tensorflow":
            return self._tensorflow_logits(indices, values, row_splits)
        if self.kind == "matmul" or (self.kind == "auto" and batch > AUTO_KERNEL_MAX_ROWS):
            return self.nets.logits_matmul(indices, values, row_splits)
        return self.nets.logits(indices, values, row_splits, self.cfg.threads)

    def _tensorflow_logits(self, indices, values, row_splits):
        """[batch, R, B] float32 through mach.evaluation's forward pass, as evaluate.py runs it; or,
        when the merge runs on the device (merge_device), the top-k: (labels, scores) arrays."""
        import tensorflow as tf

        from mach import evaluation

        if self._tensorflow is None:
            reps = [
                evaluation.TrainedRepetition(self.cfg, r, *rep)
                for r, rep in enumerate(
                    zip(self.arrays, self.label_to_bucket, self.feature_lookups)
                )
            ]
            merge_R = (
                [self.cfg.R] if evaluation.merges_on_device(self.cfg, reps, self.merge) else None
            )
            cfg = dataclasses.replace(self.cfg, top_k=self.k)  # the graph merge's k
            self._tensorflow = evaluation.make_forward(cfg, reps, merge_R)
            self._tensorflow_merges = merge_R is not None
        batch = len(row_splits) - 1
        positions = np.arange(len(indices)) - np.repeat(row_splits[:-1], np.diff(row_splits))
        rows_of = np.repeat(np.arange(batch), np.diff(row_splits))
        where = tf.constant(np.stack([rows_of, positions], axis=1).reshape(-1, 2), tf.int64)
        width = int(np.diff(row_splits).max(initial=0))
        parsed = {
            "feat_idx": tf.SparseTensor(where, indices, [batch, width]),
            "feat_val": tf.SparseTensor(where, values, [batch, width]),
            "labels": tf.SparseTensor(
                tf.zeros([0, 2], tf.int64), tf.zeros([0], tf.int64), [batch, 0]
            ),
        }
        out = self._tensorflow(parsed)
        if self._tensorflow_merges:
            ((labels, scores),) = out
            return labels.numpy(), scores.numpy()
        return out.numpy()

    def predict_arrays(self, indices, values, row_splits) -> tuple[np.ndarray, np.ndarray]:
        """Top-k labels [batch, k] int64 and scores [batch, k] float32 of raw rows."""
        cfg = self.cfg
        logits = self.logits(indices, values, row_splits)  # [batch, R, B] float32
        if isinstance(logits, tuple):
            return logits  # merged in the graph, on the logits' device
        return merge_scores(
            logits,
            self.label_to_bucket,
            self.k,
            cfg.score,
            cfg.loss,
            cfg.threads,
            "numpy" if self.merge.kind == "approx" else self.impl,
            **self.merge.search(self.inverse, cfg.R),
        )

    def predict(self, rows: list[Row]) -> tuple[np.ndarray, np.ndarray]:
        return self.predict_arrays(*batch_arrays(rows))
