"""Reader for the Extreme Classification Repository text format.

    N D L                              optional header: rows, features, labels
    l1,l2,... i:v i:v ...              one row per line; 0-based label and feature ids
     i:v i:v                           a row with no labels starts with a space
    l1,l2                              a row with no features

plus the repository's split files (`*_trSplit.txt`, `*_tstSplit.txt`): one line per row of a split, one
whitespace-separated column per split, 1-based row numbers into the single data file.

Every problem is reported as a DataFormatError naming file, line, what was found and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from mach.files import open_text


class DataFormatError(ValueError):
    def __init__(self, path: Path, line_no: int | None, problem: str, expected: str):
        where = f"{path}:{line_no}" if line_no is not None else str(path)
        super().__init__(f"{where}: {problem}; expected {expected}")


@dataclass(frozen=True)
class Header:
    n_rows: int
    n_features: int
    n_labels: int


@dataclass
class Row:
    line_no: int  # 1-based line in its file
    labels: np.ndarray  # [n_labels] int64
    feat_idx: np.ndarray  # [n_nonzero] int64
    feat_val: np.ndarray  # [n_nonzero] float32


def _parse_header(tokens: list[str]) -> Header | None:
    """A header is exactly three plain non-negative integers (a data row always has ':' or ',')."""
    if len(tokens) != 3 or not all(t.isdigit() for t in tokens):
        return None
    return Header(*(int(t) for t in tokens))


def read_header(path: Path) -> Header | None:
    with open_text(path) as f:
        first = f.readline()
    if not first:
        raise DataFormatError(
            path, None, "the file is empty", "a header `N D L` and one row per line"
        )
    return _parse_header(first.split())


def _parse_int(token: str, path: Path, line_no: int, what: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise DataFormatError(
            path, line_no, f"{what} {token!r} is not an integer", f"a 0-based {what}"
        ) from None


def parse_line(line: str, path: Path, line_no: int, n_features: int, n_labels: int) -> Row:
    """Parse one data line, checking every id against the dataset sizes."""
    tokens = line.split()
    labels: list[int] = []
    # A leading space (or a first token with ':') means the row has no labels.
    if tokens and not line[0].isspace() and ":" not in tokens[0]:
        for tok in tokens[0].split(","):
            if tok == "":
                raise DataFormatError(
                    path,
                    line_no,
                    f"empty label in {tokens[0]!r}",
                    "`l1,l2,...` with no empty entries",
                )
            labels.append(_parse_int(tok, path, line_no, "label"))
        tokens = tokens[1:]
    idx = np.empty(len(tokens), dtype=np.int64)
    val = np.empty(len(tokens), dtype=np.float32)
    for j, tok in enumerate(tokens):
        i_str, sep, v_str = tok.partition(":")
        if not sep or ":" in v_str or not i_str or not v_str:
            raise DataFormatError(
                path, line_no, f"malformed feature {tok!r}", "`index:value`, e.g. `17:0.25`"
            )
        idx[j] = _parse_int(i_str, path, line_no, "feature index")
        try:
            val[j] = float(v_str)
        except ValueError:
            raise DataFormatError(
                path, line_no, f"feature value {v_str!r} is not a number", "`index:value`"
            ) from None
        if not np.isfinite(val[j]):
            raise DataFormatError(
                path, line_no, f"feature value {v_str!r} is not finite", "a finite number"
            )
    labels_arr = np.asarray(labels, dtype=np.int64)
    bad = labels_arr[(labels_arr < 0) | (labels_arr >= n_labels)]
    if bad.size:
        raise DataFormatError(
            path,
            line_no,
            f"label {bad[0]} is out of range",
            f"0 <= label < {n_labels} (the number of labels)",
        )
    bad = idx[(idx < 0) | (idx >= n_features)]
    if bad.size:
        raise DataFormatError(
            path,
            line_no,
            f"feature index {bad[0]} is out of range",
            f"0 <= index < {n_features} (the number of features)",
        )
    return Row(line_no, labels_arr, idx, val)


def resolve_sizes(
    path: Path, header: Header | None, n_features: int | None, n_labels: int | None
) -> tuple[int, int]:
    """Dataset sizes from the config, checked against the header; the header fills what the config leaves open."""
    sizes = []
    for name, configured, from_header in [
        ("n_features", n_features, header and header.n_features),
        ("n_classes", n_labels, header and header.n_labels),
    ]:
        if configured is not None and from_header is not None and configured != from_header:
            raise DataFormatError(
                path,
                1,
                f"header says {name}={from_header} but the config says {configured}",
                f"the same value; fix the header or pass --set {name}={from_header}",
            )
        value = configured if configured is not None else from_header
        if value is None:
            raise DataFormatError(
                path,
                1,
                f"no header and {name} is not configured",
                f"a header `N D L` or --set {name}=...",
            )
        sizes.append(value)
    return sizes[0], sizes[1]


def iter_rows(path: Path, n_features: int, n_labels: int) -> Iterator[Row]:
    """Yield the rows of one XC-repo file; checks the header's row count at the end."""
    with open_text(path) as f:
        first = f.readline()
        if not first:
            raise DataFormatError(
                path, None, "the file is empty", "a header `N D L` and one row per line"
            )
        header = _parse_header(first.split())
        line_no, n_rows = 1, 0
        if header is None:
            yield parse_line(first.rstrip("\r\n"), path, 1, n_features, n_labels)
            n_rows = 1
        for line_no, line in enumerate(f, start=2):
            line = line.rstrip("\r\n")
            if not line.strip() and header is not None and n_rows == header.n_rows:
                continue  # trailing blank lines after the announced rows
            yield parse_line(line, path, line_no, n_features, n_labels)
            n_rows += 1
    if n_rows == 0:
        raise DataFormatError(
            path, None, "the file has a header but no rows", "at least one data row"
        )
    if header is not None and n_rows != header.n_rows:
        raise DataFormatError(
            path,
            line_no,
            f"header announces {header.n_rows} rows but the file has {n_rows}",
            "the header's N to equal the number of data lines",
        )


def read_split(path: Path, column: int, n_rows: int) -> np.ndarray:
    """0-based row ids of one split column (the file holds 1-based ids).  Returns [n] int64."""
    ids = []
    with open_text(path) as f:
        for line_no, line in enumerate(f, start=1):
            tokens = line.split()
            if not tokens:
                continue
            if column > len(tokens):
                raise DataFormatError(
                    path,
                    line_no,
                    f"no column {column} (the line has {len(tokens)})",
                    f"split column 1..{len(tokens)}",
                )
            row = _parse_int(tokens[column - 1], path, line_no, "row number")
            if not 1 <= row <= n_rows:
                raise DataFormatError(
                    path,
                    line_no,
                    f"row number {row} is out of range",
                    f"1 <= row <= {n_rows} (rows of the data file)",
                )
            ids.append(row - 1)
    if not ids:
        raise DataFormatError(
            path, None, "the split file is empty", "one line of row numbers per split row"
        )
    ids_arr = np.asarray(ids, dtype=np.int64)
    if len(np.unique(ids_arr)) != len(ids_arr):
        raise DataFormatError(
            path,
            None,
            f"column {column} lists a row more than once",
            "each row at most once per split",
        )
    return ids_arr
