"""predict.py's text in and out: rows read with the training readers, top-k written as JSON lines or TSV.

Rows are read with the repository's readers (mach.data.formats), so a bad row is reported with its line
number, as preprocess reports one; a truncated .gz is a clear error too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import json
import os
import sys
import zlib
from pathlib import Path

import numpy as np

from mach.data.formats import MAX_SIZE, DataFormatError, Row, parse_line
from mach.files import open_bytes
from mach.progress import Progress

OUTPUT_FORMATS = ("jsonl", "tsv")


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


def read_text_rows(
    stream, name: str, fmt: str, n_features: int, skip_bad: bool, counts: Counts, bases=None
):
    """Rows of a text stream in format fmt; a bad row raises DataFormatError naming its line, or with
    skip_bad is counted and left out. Blank lines and an xc header are not rows, as in training."""
    path = Path(name if name != "-" else "<stdin>")
    seen_row = False
    for line_no, raw in enumerate(_lines_of(stream, path), start=1):
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
            yield parse_line(line, path, line_no, n_features, MAX_SIZE, fmt, bases)
        except DataFormatError as err:
            if not skip_bad:
                raise
            counts.skipped += 1
            counts.first_skipped = counts.first_skipped or str(err)


def _lines_of(stream, path: Path):
    """The byte lines of stream; a compressed input cut short is a DataFormatError, not an EOFError."""
    try:
        yield from stream
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataFormatError(
            path,
            None,
            f"the compressed input is damaged or cut short ({err})",
            "a complete .gz file",
        ) from None


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
