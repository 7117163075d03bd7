"""MACH from Python: fit on a scipy CSR matrix, predict, evaluate, save, load and export.

    import mach
    from mach import MACH

    train, test = mach.read_dataset("delicious")       # ((X, Y), (X, Y)) of the preset's files
    model = MACH(preset="delicious", R=4, epochs=5).fit(*train)
    metrics = model.evaluate(*test)                     # what evaluate.py writes under "metrics"
    labels, scores = model.predict(test[0], k=5)
    model.save("models/delicious-r4")
    model = mach.load("models/delicious-r4")

Each step runs the scripts' own code (mach.data.prepare, mach.training, mach.evaluation,
mach.serving), on TFRecords written from the arrays: the same settings and seed give the same lookups,
weights and P@k as preprocess.py, train.py and evaluate.py on the same rows.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import tempfile
import weakref
from pathlib import Path

import numpy as np

from mach.config import FIELDS, Config, renamed_key, with_run_name

DEFAULT_PRESET_NAME = "custom"  # the dataset name of a model without a preset


def _logger(verbose: bool):
    """One line per event (an epoch, a step) on stdout when verbose, nothing otherwise; TensorFlow's
    own log lines stay hidden, as in the scripts without --verbose."""
    from mach.cli import show_tensorflow_logs

    show_tensorflow_logs(False)
    if not verbose:
        return lambda _message: None
    return lambda message: print(message, flush=True)


def read_dataset(preset: str | Config, split: int | None = None):
    """((X_train, Y_train), (X_test, Y_test)) of a preset's data files (split: the column of its
    split files, default the preset's): CSR features [n, D] float32, CSR label indicators [n, K]."""
    from mach.data.arrays import read_dataset as read
    from mach.presets import preset as named

    cfg = named(preset) if isinstance(preset, str) else preset
    if split is not None:
        cfg = dataclasses.replace(cfg, split=split)
    return read(cfg)


def read_xc(path, n_features: int | None = None, n_classes: int | None = None, fmt: str = "xc"):
    """(X, Y) of one text file in the repository's format (xc; or libsvm, vw with fmt)."""
    from mach.data.arrays import read_xc as read

    return read(path, n_features, n_classes, fmt)


class MACH:
    """A MACH model: R networks over B buckets each, merged into the top-k of K labels.

    preset: a dataset preset of config.py (its settings are the starting point), or None for the
    defaults; settings: any Config field (R=4, epochs=5, hidden=(512,), ...). work_dir: where the
    TFRecords, lookups and run directory go; None = a temporary directory, removed with the object
    (save() keeps the model). verbose: one progress line per epoch and step.
    """

    def __init__(self, preset: str | None = None, work_dir=None, verbose: bool = True, **settings):
        self.preset, self.work_dir, self.verbose = preset, work_dir, verbose
        self.settings = dict(settings)
        self._base_config()  # a wrong key or value fails here, not after reading the data
        self.config_: Config | None = None  # the resolved config, once fitted or loaded
        self._tmp = None

    # scikit-learn conventions
    def get_params(self, deep: bool = True) -> dict:
        return {
            "preset": self.preset,
            "work_dir": self.work_dir,
            "verbose": self.verbose,
            **self.settings,
        }

    def set_params(self, **params) -> MACH:
        for key in ("preset", "work_dir", "verbose"):
            if key in params:
                setattr(self, key, params.pop(key))
        self.settings.update(params)
        self._base_config()
        return self

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if v is not None)
        return f"MACH({shown})"

    def _base_config(self) -> tuple[Config, Config]:
        """(the preset, the preset with the settings), checked field by field."""
        from mach.presets import load_presets

        base, presets = load_presets()
        if self.preset is None:
            preset = dataclasses.replace(base, name=DEFAULT_PRESET_NAME)
        elif self.preset in presets:
            preset = presets[self.preset]
        else:
            raise ValueError(
                f"preset {self.preset!r}: expected one of {', '.join(sorted(presets))}"
            )
        notes: list[str] = []
        changes = {}
        for key, value in self.settings.items():
            field = renamed_key(key, value, notes)
            if field not in FIELDS:
                raise ValueError(
                    f"{key}: not a setting; valid settings: {', '.join(sorted(FIELDS))}"
                )
            changes[field] = tuple(value) if field == "hidden" and value is not None else value
        for note in notes:
            print(note, file=sys.stderr)
        return preset, dataclasses.replace(preset, **changes)

    def _work_dir(self) -> Path:
        if self.work_dir is not None:
            return Path(self.work_dir)
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="mach-")
            weakref.finalize(self, shutil.rmtree, self._tmp, ignore_errors=True)
        return Path(self._tmp)

    def _fitted(self) -> Config:
        if self.config_ is None:
            raise ValueError(
                "this MACH model is not fitted: call fit(X, Y) or mach.load(path) first"
            )
        return self.config_

    def fit(self, X, Y=None) -> MACH:
        """Train on X (CSR [n, D], or the path of a text file whose labels are read with it) and Y
        (an indicator [n, K] or a list of label-id lists). Returns self."""
        from mach import training
        from mach.data import prepare
        from mach.devices import configure_devices

        log = _logger(self.verbose)
        preset, cfg = self._base_config()
        cfg = dataclasses.replace(cfg, work_dir=str(self._work_dir()))
        X, labels, K = arrays_of(X, Y, cfg)
        cfg = with_run_name(dataclasses.replace(cfg, n_features=X.shape[1], n_classes=K), preset)
        digest = _fingerprint(X, labels)
        manifest = prepare.prepare_array_tfrecords(cfg, {"train": (X, labels, digest)}, log)
        cfg = prepare.with_data_sizes(cfg, manifest)
        prepare.prepare_lookups(cfg, log)
        configure_devices(cfg, log)
        training.train_repetitions(cfg, list(range(cfg.R)), manifest, log)
        self.config_ = cfg
        return self

    def predict(
        self,
        X,
        k: int | None = None,
        merge: str = "exact",
        merge_buckets=None,
        min_freq: int = 2,
        forward: str = "auto",
        epoch: int | None = None,
        batch_size: int = 1024,
    ):
        """Top-k labels [n, k] int64 and scores [n, k] float32 of the rows of X (CSR [n, D]), as
        predict.py answers them (no TensorFlow unless forward="tensorflow")."""
        from mach.data.arrays import check_features
        from mach.merge import Merge
        from mach.serving.predictors import RunPredictor

        cfg = self._fitted()
        X = check_features(X, cfg.n_features)
        predictor = RunPredictor(
            cfg,
            k or cfg.top_k,
            _logger(self.verbose),
            forward,
            Merge(merge, merge_buckets, min_freq),
            "compiled",
            epoch,
        )
        labels, scores = [], []
        for start in range(0, X.shape[0], batch_size):
            part = X[start : start + batch_size]
            top = predictor.predict_arrays(part.indices, part.data, part.indptr)
            labels.append(top[0])
            scores.append(top[1])
        if not labels:
            return np.zeros((0, predictor.k), np.int64), np.zeros((0, predictor.k), np.float32)
        return np.concatenate(labels), np.concatenate(scores)

    def evaluate(
        self,
        X,
        Y=None,
        merge: str = "exact",
        merge_buckets=None,
        min_freq: int = 2,
        epoch: int | None = None,
        R: int | None = None,
    ) -> dict:
        """P@k, nDCG@k, PSP@k (and top-1 accuracy for one label per row) of the rows of X against Y,
        by evaluate.py's code: the dict it writes under "metrics" in metrics.json."""
        from mach import evaluation
        from mach.data import prepare
        from mach.merge import Merge, check_request
        from mach.weights import resolve_epoch

        cfg = self._fitted()
        log = _logger(self.verbose)
        X, labels, _ = arrays_of(X, Y, cfg)
        R = cfg.R if R is None else R
        merge = Merge(merge, merge_buckets, min_freq)
        check_request(cfg, R, merge, "compiled")
        epoch, _ = resolve_epoch(cfg, R, epoch)
        manifest = prepare.load_data_manifest(cfg)
        # The rows to score go to TFRecords of their own; training's label counts give PSP.
        digest = _fingerprint(X, labels)
        out_dir = cfg.dataset_dir() / f"evaluate-{digest[:16]}"
        written = prepare.prepare_array_tfrecords(cfg, {"test": (X, labels, digest)}, log, out_dir)
        manifest = {**manifest, "test": written["test"], "test_dir": str(out_dir)}
        out = evaluation.evaluate_run(cfg, manifest, R, [R], merge, "compiled", epoch, log)
        return out["metrics"]

    def save(self, path) -> Path:
        """Copy the model (its run directory, lookups and data manifest; not the TFRecords) to path,
        as a work directory that mach.load and predict.py --model read. Returns the run directory.
        """
        from mach.data.prepare import LABEL_COUNTS, MANIFEST

        cfg = self._fitted()
        path = Path(path)
        moved = dataclasses.replace(cfg, work_dir=str(path))
        if moved.run_dir().resolve() == cfg.run_dir().resolve():
            return cfg.run_dir()
        if moved.run_dir().exists():
            raise ValueError(f"{moved.run_dir()} exists; save to another path, or remove it first")
        tmp = path / f".save-{moved.run}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            shutil.copytree(cfg.run_dir(), tmp / "run", ignore=shutil.ignore_patterns(".*"))
            shutil.copytree(cfg.lookup_dir(), tmp / "lookups", dirs_exist_ok=True)
            for name in (MANIFEST, LABEL_COUNTS):
                (tmp / "tfrecords").mkdir(exist_ok=True)
                shutil.copy2(cfg.tfrecord_dir() / name, tmp / "tfrecords" / name)
            moved.hashing_dir().mkdir(parents=True, exist_ok=True)
            if not moved.lookup_dir().exists():
                (tmp / "lookups").rename(moved.lookup_dir())
            if not moved.tfrecord_dir().exists():
                (tmp / "tfrecords").rename(moved.tfrecord_dir())
            (tmp / "run").rename(moved.run_dir())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return moved.run_dir()

    def export(
        self,
        path,
        merge: str = "auto",
        merge_buckets=None,
        min_freq: int = 2,
        epoch: int | None = None,
        version: int | None = None,
    ) -> Path:
        """A TensorFlow SavedModel of the model in path/<version>/ (export.py's). Returns that dir."""
        from mach.data.prepare import load_data_manifest
        from mach.merge import Merge
        from mach.serving.export import export_run

        cfg = self._fitted()
        chosen = "auto" if merge == "auto" else Merge(merge, merge_buckets, min_freq)
        log = _logger(self.verbose)
        return export_run(
            cfg, load_data_manifest(cfg), cfg.R, chosen, epoch, Path(path), version, log
        )


def _fingerprint(X, labels) -> str:
    from mach.data.arrays import fingerprint

    return fingerprint(X, labels)


def arrays_of(X, Y, cfg: Config):
    """(X CSR float32 [n, D], label lists, K) of fit's or evaluate's arguments, checked against cfg."""
    from mach.data.arrays import check_features, label_lists, read_xc

    if isinstance(X, (str, Path)):
        if Y is not None:
            raise ValueError("X is a file, whose rows hold their labels: pass no Y")
        X, Y = read_xc(X, cfg.n_features, cfg.n_classes, cfg.format, cfg.id_bases())
    elif Y is None:
        raise ValueError("Y is missing: pass the labels (an indicator [n, K] or label-id lists)")
    X = check_features(X, cfg.n_features)
    labels, K = label_lists(Y, X.shape[0], cfg.n_classes)
    if X.shape[0] == 0:
        raise ValueError("X has no rows")
    return X, labels, K


def load(path, verbose: bool = True) -> MACH:
    """A trained model from a run directory (train.py's or MACH.save's), or a directory holding one."""
    from mach.serving.predictors import find_model, run_config

    kind, run_dir = find_model(Path(path))
    if kind != "run":
        raise ValueError(
            f"{path} is an exported SavedModel: load it with tf.saved_model.load or predict.py; "
            "mach.load reads a run directory"
        )
    cfg = run_config(run_dir)
    model = MACH(preset=None, work_dir=cfg.work_dir, verbose=verbose)
    model.config_ = cfg
    return model
