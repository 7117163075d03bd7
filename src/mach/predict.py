"""Top-k labels of raw rows, from an exported SavedModel or from a work directory (predict.py).

Rows are read with the repository's readers (mach.xcformat), so a bad row is reported with its line
number, as preprocess reports one. A SavedModel answers through its serving_default signature; a work
directory through its R checkpoints: small batches by the compiled forward kernel (mach.compiled_forward:
a single Delicious row in under a millisecond), large ones by TensorFlow as evaluate.py runs them, then
the compiled merge kernel, as evaluate.py merges.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import json
import os
import sys
import typing
from pathlib import Path

import numpy as np

from mach.files import open_bytes, read_json
from mach.progress import Progress
from mach.xcformat import MAX_SIZE, DataFormatError, Row, parse_line

OUTPUT_FORMATS = ("jsonl", "tsv")


def find_model(path: Path) -> tuple[str, Path]:
    """("savedmodel", version dir) or ("workdir", run dir) for what --model names."""
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
        return "workdir", path
    runs = sorted(p for p in path.glob("*") if (p / "ckpt").is_dir())
    if len(runs) == 1:
        return "workdir", runs[0]
    if runs:
        raise ValueError(
            f"{path} holds {len(runs)} trained runs ({', '.join(p.name for p in runs)}); pass one of "
            "them as --model"
        )
    raise FileNotFoundError(
        f"--model {path}: no SavedModel (saved_model.pb, or numbered versions of one) and no trained "
        "run (ckpt/) there; export one with `python export.py --dataset NAME --out models/NAME`, or "
        "pass a run directory such as work/delicious/B128-hs0-fhnone"
    )


def config_of_run(config_cls, run_dir: Path, threads: int):
    """The Config a run was trained with (ckpt/r00/config.json), pointed at run_dir wherever it now is."""
    path = run_dir / "ckpt" / "r00" / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no {path}: repetition 0 of {run_dir} is not trained; train it with "
            "`python train.py --dataset NAME --repetitions 0`"
        )
    saved = read_json(path)["config"]
    hints = typing.get_type_hints(config_cls)
    fields = {key: value for key, value in saved.items() if key in hints}
    fields["hidden"] = tuple(fields.get("hidden", ()))
    # The work directory may have moved since training: derive it from where the run is now.
    fields.update(work_dir=str(run_dir.parent.parent), name=run_dir.parent.name, threads=threads)
    cfg = config_cls(**fields)
    if cfg.run_dir().resolve() != run_dir.resolve():
        raise ValueError(
            f"{run_dir} does not match the run directory its config.json describes "
            f"({cfg.run_dir().name}); pass the directory train.py wrote"
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
        self.metadata = json.loads((path / "assets.extra" / "mach.json").read_text())
        self.k, self.format = self.metadata["k"], self.metadata["config"]["format"]
        self.n_features, self.n_classes = self.metadata["n_features"], self.metadata["n_classes"]
        # The loaded object owns the variables: keep it, not only its signature.
        self.loaded = tf.saved_model.load(str(path))
        self.serve = self.loaded.signatures["serving_default"]

    def predict(self, rows: list[Row]) -> tuple[np.ndarray, np.ndarray]:
        """Top-k labels [batch, k] int64 and scores [batch, k] float32 of parsed rows."""
        tf = self.tf
        indices, values, row_splits = batch_arrays(rows)
        out = self.serve(
            indices=tf.constant(indices),
            values=tf.constant(values),
            row_splits=tf.constant(row_splits),
        )
        return out["labels"].numpy(), out["scores"].numpy()


FORWARDS = ("auto", "compiled", "compiled-bf16", "tensorflow")  # WorkDirPredictor's forward passes
# forward "auto": batches up to this many rows go through the compiled kernel, larger ones through
# TensorFlow (bench/predict_bench.py, Delicious preset, 2 cores: the kernel 7x faster for one row and
# 1.4x for 32, TensorFlow 1.5x faster for 1,024; at Amazon-670K's shape the kernel's cost grows by
# ~14 ms a row, bench/forward_bench.py, while a matmul reads the weights once per batch).
AUTO_KERNEL_MAX_ROWS = 8


class WorkDirPredictor:
    """The R trained repetitions of a run directory, merged by the compiled merge kernel.

    forward "compiled": mach.compiled_forward (rows read only the weights they use; the fastest on a
    CPU for single rows and small batches, a row's logits independent of its batch); "compiled-bf16":
    the same with bfloat16 weights (half the bytes; logits within ~0.4% of float32's); "tensorflow":
    the networks as evaluate.py runs them, for logits bit for bit evaluate.py's (the float32 paths
    agree to float32 rounding); "auto": compiled for batches of up to AUTO_KERNEL_MAX_ROWS rows,
    tensorflow above (the kernel's copy of the weights is made only once a small batch comes).
    """

    def __init__(self, cfg, k: int, log, forward: str = "auto"):
        from mach import devices, evaluation
        from mach.merge import load_kernel

        if forward not in FORWARDS:
            raise ValueError(f"forward {forward!r}: expected one of {', '.join(FORWARDS)}")
        load_kernel()  # fail now, with the fix, rather than after loading R models
        devices.configure_devices(cfg, log)
        self.cfg, self.k, self.format, self.kind = cfg, k, cfg.format, forward
        self.n_features, self.n_classes = cfg.n_features, cfg.n_classes
        if not 1 <= k <= cfg.n_classes:
            raise ValueError(f"--top-k {k}: expected 1 <= k <= {cfg.n_classes} (the classes)")
        self.reps = evaluation.load_trained(cfg, cfg.R, log)
        self.forward = (
            evaluation.make_forward(cfg, self.reps) if forward in ("auto", "tensorflow") else None
        )
        self.nets = None if forward in ("auto", "tensorflow") else self._compiled_nets()
        self.label_to_bucket = np.stack([rep.label_to_bucket for rep in self.reps])  # [R, K] int32
        if self.nets is not None:
            self.reps = None  # the kernel holds its own copy of the weights: TensorFlow's can go

    def _compiled_nets(self):
        from mach.compiled_forward import CompiledNets

        precision = "bfloat16" if self.kind == "compiled-bf16" else "float32"
        return CompiledNets.of_repetitions(self.cfg, self.reps, precision)

    def logits(self, indices, values, row_splits) -> np.ndarray:
        """[batch, R, B] float32 logits of raw rows, by the forward pass chosen."""
        batch = len(row_splits) - 1
        if self.kind == "tensorflow" or (self.kind == "auto" and batch > AUTO_KERNEL_MAX_ROWS):
            return self._tensorflow_logits(indices, values, row_splits)
        if self.nets is None:
            self.nets = self._compiled_nets()
        return self.nets.logits(indices, values, row_splits, self.cfg.threads)

    def _tensorflow_logits(self, indices, values, row_splits) -> np.ndarray:
        """[batch, R, B] float32 through mach.evaluation's forward pass, as evaluate.py runs it."""
        import tensorflow as tf

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
        return self.forward(parsed).numpy()

    def predict(self, rows: list[Row]) -> tuple[np.ndarray, np.ndarray]:
        from mach.merge import merge_scores

        logits = self.logits(*batch_arrays(rows))  # [batch, R, B] float32
        cfg = self.cfg
        return merge_scores(
            logits, self.label_to_bucket, self.k, cfg.merge, cfg.loss, cfg.threads, "kernel"
        )


def open_input(name: str):
    """A context manager of bytes: a file (gunzipped when it is gzip, as the readers do) or, for "-",
    stdin (gunzipped likewise), left open for the caller's process."""
    if name != "-":
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"--input {name}: no such file")
        return open_bytes(path)
    stdin = sys.stdin.buffer
    if stdin.peek(2)[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=stdin)  # closing it leaves stdin open
    return contextlib.nullcontext(stdin)


def is_header(line: str) -> bool:
    """An xc header `N D L`: three plain integers (a data row has ':' or ',')."""
    tokens = line.split()
    return len(tokens) == 3 and all(t.isascii() and t.isdigit() for t in tokens)


@dataclasses.dataclass
class Counts:
    rows: int = 0  # rows predicted
    skipped: int = 0  # bad rows left out (--skip-bad)
    first_skipped: str = ""  # the first skipped row's message


def read_rows(stream, name: str, fmt: str, n_features: int, skip_bad: bool, counts: Counts):
    """Rows of a text stream in format fmt; a bad row raises DataFormatError naming its line, or with
    skip_bad is counted and left out. Blank lines and an xc header are not rows, as in training."""
    path = Path(name if name != "-" else "<stdin>")
    seen_row = False
    for line_no, raw in enumerate(stream, start=1):
        try:
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                raise DataFormatError(
                    path, line_no, f"byte {raw[err.start]:#04x} is not UTF-8", "UTF-8 text"
                ) from None
            if line_no == 1:
                line = line.removeprefix("\ufeff")
            if not line.strip():
                continue
            if not seen_row and fmt == "xc" and is_header(line):
                seen_row = True
                continue
            seen_row = True
            # Labels, if the row has any, are read but not used: any id the syntax allows is fine.
            yield parse_line(line, path, line_no, n_features, MAX_SIZE, fmt)
        except DataFormatError as err:
            if not skip_bad:
                raise
            counts.skipped += 1
            counts.first_skipped = counts.first_skipped or str(err)


def load_label_names(path: Path, n_classes: int) -> list[str]:
    """One name per line, line i naming label i."""
    with open_bytes(path) as f:
        names = [line.decode("utf-8").rstrip("\r\n") for line in f]
    if len(names) != n_classes:
        raise ValueError(
            f"--label-names {path} has {len(names)} lines but the model has {n_classes} labels; "
            "expected one name per line, line i naming label i"
        )
    return names


class Writer:
    """JSON lines ({"line", "labels", "scores"[, "names"]}) or TSV (line, rank, label, score[, name])."""

    def __init__(self, out: io.TextIOBase, fmt: str, names: list[str] | None):
        if fmt not in OUTPUT_FORMATS:
            raise ValueError(f"output format {fmt!r}: expected one of {', '.join(OUTPUT_FORMATS)}")
        self.out, self.fmt, self.names = out, fmt, names
        if fmt == "tsv":
            out.write("line\trank\tlabel\tscore" + ("\tname" if names else "") + "\n")

    def write(self, line_no: int, labels: np.ndarray, scores: np.ndarray) -> None:
        # 9 significant digits give back the float32 score exactly.
        shown = [float(f"{s:.9g}") for s in scores]
        names = [self.names[c] for c in labels] if self.names else None
        if self.fmt == "jsonl":
            record = {"line": line_no, "labels": labels.tolist(), "scores": shown}
            record.update({"names": names} if names else {})
            self.out.write(json.dumps(record) + "\n")
            return
        for rank, (label, score) in enumerate(zip(labels.tolist(), shown), start=1):
            name = "\t" + names[rank - 1].replace("\t", " ") if names else ""
            self.out.write(f"{line_no}\t{rank}\t{label}\t{score}{name}\n")


def predict_rows(predictor, rows, k: int, batch_size: int, writer: Writer, counts: Counts, log):
    """Predict rows in batches of batch_size and write the top k of each."""
    progress = Progress("predict", log)
    batch: list[Row] = []

    def flush():
        labels, scores = predictor.predict(batch)
        for row, top, score in zip(batch, labels[:, :k], scores[:, :k]):
            writer.write(row.line_no, top, score)
        counts.rows += len(batch)
        batch.clear()

    for row in rows:
        batch.append(row)
        progress.tick()
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()


def output_format(output: str | None, requested: str | None) -> str:
    """--output-format, else the output's extension (.tsv, else JSON lines)."""
    if requested:
        return requested
    return "tsv" if output and output.endswith(".tsv") else "jsonl"


def temporary_output(path: Path) -> Path:
    """Where the output is written before it replaces path (a failed run leaves no partial file)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")
