"""Readers for the text formats of Config.format, and the repository's split files.

xc, the Extreme Classification Repository format (0-based ids):

    N D L                              optional header: rows, features, labels
    l1,l2,... i:v i:v ...              one row per line
     i:v i:v                           a row with no labels starts with a space
    l1,l2                              a row with no features

libsvm: the same rows with no header and 1-based feature indices, as LIBSVM writes them; `i` is read
as feature i-1.  Labels are taken as written, 0-based (a file with classes 1..K gets K+1 labels, 0
unused).  `qid:` and float or signed labels such as `+1`/`-1` are not supported.

vw, Vowpal Wabbit's multilabel text format: `labels [weight] | i:v i ...`, labels comma-separated
and 0-based before the first `|`, features after it with 0-based indices; `i` alone means value 1.  A
name attached to a `|` (`|ns 3:1`) is a namespace; namespaces only group features, and all share one
id space.  An importance weight must be 1 (MACH weighs every row the same).  String features, tags
and other VW label types are not supported.

Rules shared by all formats:
- a blank (whitespace-only) line is never a row: it is skipped wherever it is, and the xc header's N
  counts the other lines.  A row with neither labels nor features therefore cannot be written.
- ids are plain digits 0-9 (no sign, underscore or other script's digits); values are finite decimal
  numbers within float32 range.
- files are UTF-8 (a leading byte-order mark is dropped) and may be gzip-compressed.
- sizes (D features, K labels) come from the config; else from the xc header; else, for libsvm and
  vw, from a scan of the files (largest id + 1, see scan_sizes).  Both must be at most 2^31-1, since
  the lookups hash ids as int32.

The split files (`*_trSplit.txt`, `*_tstSplit.txt`) hold one line per row of a split and one
whitespace-separated column per split: 1-based row numbers into the single data file, counting rows
as above (neither the header nor blank lines are rows).

Every problem is a DataFormatError naming the file, the line, what was found and what was expected.
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mach.files import open_bytes

MAX_SIZE = 2**31 - 1  # largest D or K: lookups hash ids as int32
FLOAT32_MAX = float(np.finfo(np.float32).max)
FORMATS = ("xc", "libsvm", "vw")


class DataFormatError(ValueError):
    def __init__(self, path: Path, line_no: int | None, problem: str, expected: str):
        where = f"{path}:{line_no}" if line_no is not None else str(path)
        super().__init__(f"{where}: {problem}; expected {expected}")


@dataclass(frozen=True)
class Header:
    n_rows: int
    n_features: int
    n_labels: int
    line_no: int = 1  # where the header is (blank lines may precede it)


@dataclass
class Row:
    line_no: int  # 1-based line in its file
    labels: np.ndarray  # [n_labels] int64
    feat_idx: np.ndarray  # [n_nonzero] int64, 0-based
    feat_val: np.ndarray  # [n_nonzero] float32


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, text without its newline) of every line, gunzipped and decoded."""
    line_no = 0
    try:
        # Bytes are decoded line by line so that a bad byte is reported on its own line.
        with open_bytes(path) as f:
            for line_no, raw in enumerate(f, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise DataFormatError(
                        path,
                        line_no,
                        f"byte {raw[err.start]:#04x} at column {err.start + 1} is not UTF-8",
                        "UTF-8 text (is this a binary file, or compressed other than by gzip?)",
                    ) from None
                if line_no == 1 and text.startswith("\ufeff"):
                    text = text[1:]  # a byte-order mark, as some Windows editors write
                yield line_no, text.rstrip("\r\n")
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DataFormatError(
            path,
            None,
            f"the gzip data is truncated or corrupt after {line_no} lines ({err})",
            "a complete gzip file; download it again (`gzip -t FILE` tests a copy)",
        ) from None


def _is_digits(token: str) -> bool:
    return token.isascii() and token.isdigit()


def _parse_header(line: str, path: Path, line_no: int) -> Header | None:
    """A header is exactly three plain non-negative integers (a data row always has ':' or ',')."""
    tokens = line.split()
    if len(tokens) < 2 or not all(_is_digits(t) for t in tokens):
        return None  # a single integer is a row with one label and no features
    if len(tokens) != 3:
        raise DataFormatError(
            path,
            line_no,
            f"the first line {line.strip()!r} has {len(tokens)} numbers",
            "a header of exactly `N D L` (rows, features, labels) or a data row",
        )
    if any(len(t) > 18 for t in tokens):
        raise DataFormatError(
            path,
            line_no,
            "the header has a number of more than 18 digits",
            f"N, D and L below 10^18 (D and L at most {MAX_SIZE})",
        )
    return Header(*(int(t) for t in tokens), line_no=line_no)


def read_header(path: Path, fmt: str = "xc") -> Header | None:
    """The xc header (the first non-blank line), or None; libsvm and vw files have none."""
    line_no = 0
    for line_no, line in _lines(path):
        if line.strip():
            return _parse_header(line, path, line_no) if fmt == "xc" else None
    problem = "the file is empty" if line_no == 0 else "the file has only blank lines"
    raise DataFormatError(path, None, problem, "one row per line")


def _parse_id(token: str, path: Path, line_no: int, what: str, base: int, size: int) -> int:
    """A `base`-based id, checked against the size, returned 0-based."""
    if not _is_digits(token):
        raise DataFormatError(
            path,
            line_no,
            f"{what} {token!r} is not an integer",
            f"{_id_range(what, base, size)}, written with the digits 0-9",
        )
    # int() of a very long digit string is slow or refused, and nothing that long is in range.
    value = int(token) if len(token) <= 20 else None
    if value is None or not base <= value < base + size:
        shown = value if value is not None else f"{token[:12]}... ({len(token)} digits)"
        raise DataFormatError(
            path, line_no, f"{what} {shown} is out of range", _id_range(what, base, size)
        )
    return value - base


def _id_range(what: str, base: int, size: int) -> str:
    name = {"feature index": "index", "row number": "row"}.get(what, what)
    why = {
        "label": "the number of labels",
        "feature index": "the number of features",
        "row number": "rows of the data file",
    }[what]
    if size >= MAX_SIZE:
        why = "ids are hashed as int32"
    elif base == 1 and what == "feature index":
        why += "; libsvm indices are 1-based"
    return f"0 <= {name} < {size} ({why})" if base == 0 else f"1 <= {name} <= {size} ({why})"


def _parse_value(token: str, path: Path, line_no: int) -> float:
    try:
        if not token.isascii() or "_" in token:
            raise ValueError  # float() would accept `1_0` and other scripts' digits
        value = float(token)
    except ValueError:
        raise DataFormatError(
            path, line_no, f"feature value {token!r} is not a number", "`index:value`"
        ) from None
    if not math.isfinite(value):
        raise DataFormatError(
            path, line_no, f"feature value {token!r} is not finite", "a finite number"
        )
    if abs(value) > FLOAT32_MAX:
        raise DataFormatError(
            path,
            line_no,
            f"feature value {token!r} is too large for float32",
            f"|value| <= {FLOAT32_MAX:.4g}",
        )
    return value


def _parse_labels(token: str, path: Path, line_no: int, n_labels: int, base: int) -> list[int]:
    labels = []
    for tok in token.split(","):
        if tok == "":
            raise DataFormatError(
                path, line_no, f"empty label in {token!r}", "`l1,l2,...` with no empty entries"
            )
        labels.append(_parse_id(tok, path, line_no, "label", base, n_labels))
    return labels


def _row(line_no: int, labels: list[int], idx: list[int], val: list[float]) -> Row:
    return Row(
        line_no,
        np.array(labels, dtype=np.int64),
        np.array(idx, dtype=np.int64),
        np.array(val, dtype=np.float32),
    )


def _parse_sparse_line(
    line: str, path: Path, line_no: int, n_features: int, n_labels: int, bases: tuple[int, int]
) -> Row:
    """An xc or libsvm row: `labels i:v i:v ...`, ids counted from bases (labels, features)."""
    label_base, base = bases
    tokens = line.split()
    labels: list[int] = []
    # A leading space (or a first token with ':') means the row has no labels.
    if tokens and not line[0].isspace() and ":" not in tokens[0]:
        labels = _parse_labels(tokens[0], path, line_no, n_labels, label_base)
        tokens = tokens[1:]
    idx, val = [], []
    for tok in tokens:
        i_str, sep, v_str = tok.partition(":")
        if not sep or ":" in v_str or not i_str or not v_str:
            raise DataFormatError(
                path, line_no, f"malformed feature {tok!r}", "`index:value`, e.g. `17:0.25`"
            )
        idx.append(_parse_id(i_str, path, line_no, "feature index", base, n_features))
        val.append(_parse_value(v_str, path, line_no))
    return _row(line_no, labels, idx, val)


def _parse_vw_line(
    line: str, path: Path, line_no: int, n_features: int, n_labels: int, bases: tuple[int, int]
) -> Row:
    label_base, feature_base = bases
    head, bar, body = line.partition("|")
    if not bar:
        raise DataFormatError(path, line_no, "no `|` in the line", "`labels [weight] | i:v i ...`")
    head_tokens = head.split()
    if len(head_tokens) > 2:
        raise DataFormatError(
            path,
            line_no,
            f"{len(head_tokens)} fields before `|`",
            "`labels [weight] |` (tags and other VW label types are not supported)",
        )
    labels = (
        _parse_labels(head_tokens[0], path, line_no, n_labels, label_base) if head_tokens else []
    )
    if len(head_tokens) == 2:
        weight = head_tokens[1]
        if _parse_value(weight, path, line_no) != 1.0:
            raise DataFormatError(
                path,
                line_no,
                f"importance weight {weight!r}",
                "no weight or 1 (MACH weighs every row the same)",
            )
    idx, val = [], []
    for segment in body.split("|"):
        tokens = segment.split()
        if tokens and not segment[0].isspace():
            namespace = tokens.pop(0)  # `|name` opens a namespace; the name is not a feature
            if ":" in namespace:
                raise DataFormatError(
                    path,
                    line_no,
                    f"namespace {namespace!r} has a weight",
                    "a space or a plain namespace name after `|` (no namespace weights)",
                )
        for tok in tokens:
            i_str, sep, v_str = tok.partition(":")
            idx.append(_parse_id(i_str, path, line_no, "feature index", feature_base, n_features))
            val.append(_parse_value(v_str, path, line_no) if sep else 1.0)
    return _row(line_no, labels, idx, val)


FEATURE_BASES = {"xc": 0, "libsvm": 1, "vw": 0}  # the id of the first feature in each format


def id_bases(fmt: str, label_base: int = 0, feature_base: int | None = None) -> tuple[int, int]:
    """(first label id, first feature id) of a file: the format's unless the config says otherwise."""
    return label_base, FEATURE_BASES[fmt] if feature_base is None else feature_base


def parse_line(
    line: str,
    path: Path,
    line_no: int,
    n_features: int,
    n_labels: int,
    fmt: str = "xc",
    bases: tuple[int, int] | None = None,
) -> Row:
    """Parse one data line, checking every id against the dataset sizes; ids come back 0-based,
    counted from bases (first label id, first feature id; default: the format's)."""
    bases = id_bases(fmt) if bases is None else bases
    if fmt == "vw":
        return _parse_vw_line(line, path, line_no, n_features, n_labels, bases)
    return _parse_sparse_line(line, path, line_no, n_features, n_labels, bases)


def _check_size(path: Path, line_no: int | None, name: str, value: int, source: str) -> int:
    if not 1 <= value <= MAX_SIZE:
        raise DataFormatError(
            path,
            line_no,
            f"{source} says {name}={value}",
            f"1 <= {name} <= {MAX_SIZE} (ids are hashed as int32)",
        )
    return value


def resolve_sizes(
    path: Path, header: Header | None, n_features: int | None, n_labels: int | None
) -> tuple[int, int]:
    """(D, K) from the config, checked against the header, which fills what the config leaves open."""
    sizes = []
    for name, configured, from_header in [
        ("n_features", n_features, header and header.n_features),
        ("n_classes", n_labels, header and header.n_labels),
    ]:
        line_no = header.line_no if header is not None else 1
        if configured is not None and from_header is not None and configured != from_header:
            raise DataFormatError(
                path,
                line_no,
                f"header says {name}={from_header} but the config says {configured}",
                f"the same value; fix the header or pass --set {name}={from_header}",
            )
        if configured is not None:
            sizes.append(_check_size(path, None, name, configured, "the config"))
        elif from_header is not None:
            sizes.append(_check_size(path, line_no, name, from_header, "the header"))
        else:
            raise DataFormatError(
                path,
                line_no,
                f"no header and {name} is not configured",
                f"a header `N D L` or --set {name}=...",
            )
    return sizes[0], sizes[1]


def _row_lines(path: Path, fmt: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of each row of a file. Without a header a blank line is never a row;
    with an xc header `N D L`, the N lines after it are the rows, blank ones included (a row with
    neither labels nor features is written as a blank line), and blank lines after them are not."""
    header, n_rows, line_no = None, 0, 0
    for line_no, line in _lines(path):
        if header is None and n_rows == 0 and fmt == "xc" and line.strip():
            header = _parse_header(line, path, line_no)
            if header is not None:
                continue
        if header is None and not line.strip():
            continue
        if header is not None and n_rows == header.n_rows:
            if not line.strip():
                continue
            raise DataFormatError(
                path,
                line_no,
                f"header announces {header.n_rows} rows but the file has more",
                "the header's N to equal the number of data lines",
            )
        yield line_no, line
        n_rows += 1
    if line_no == 0:
        raise DataFormatError(path, None, "the file is empty", "one row per line")
    if n_rows == 0 and header is None:
        raise DataFormatError(path, None, "the file has only blank lines", "one row per line")
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


def iter_rows(
    path: Path, n_features: int, n_labels: int, fmt: str = "xc", bases=None
) -> Iterator[Row]:
    """The rows of one file (_row_lines says which lines are rows), each checked against D and K."""
    for line_no, line in _row_lines(path, fmt):
        yield parse_line(line, path, line_no, n_features, n_labels, fmt, bases)


def count_rows(path: Path, fmt: str = "xc") -> int:
    """Rows of a file without parsing them."""
    return sum(1 for _ in _row_lines(path, fmt))


def scan_sizes(paths: list[Path], fmt: str, bases=None) -> tuple[int, int]:
    """(D, K): the largest feature id and label in the files' rows, plus one (at least 1)."""
    max_feature, max_label = -1, -1
    for path in paths:
        for row in iter_rows(path, MAX_SIZE, MAX_SIZE, fmt, bases):
            if row.feat_idx.size:
                max_feature = max(max_feature, int(row.feat_idx.max()))
            if row.labels.size:
                max_label = max(max_label, int(row.labels.max()))
    return max(max_feature + 1, 1), max(max_label + 1, 1)


def read_split(path: Path, column: int, n_rows: int) -> np.ndarray:
    """0-based row ids of one split column (the file holds 1-based ids).  Returns [n] int64."""
    ids = []
    for line_no, line in _lines(path):
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
        ids.append(_parse_id(tokens[column - 1], path, line_no, "row number", 1, n_rows))
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
