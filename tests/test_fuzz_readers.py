"""Property tests: any bytes, plain or gzipped, give rows or a DataFormatError, nothing else.

Each reader sees EXAMPLES_PER_READER inputs per run, drawn deterministically (derandomize=True), so
CI runs the same inputs every time and a failure reproduces.  Most inputs are rows of the format
with some lines damaged, so that reading often succeeds and the checks on the rows run too.
"""

import gzip

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mach.data.formats import (
    DataFormatError,
    count_rows,
    iter_rows,
    read_header,
    read_split,
    resolve_sizes,
    scan_sizes,
)

EXAMPLES_PER_READER = 300
FUZZ = settings(max_examples=EXAMPLES_PER_READER, deadline=None, derandomize=True, database=None)
SIZE = 10  # D and K given to the readers when the file has no header

# Characters the formats give meaning to, and traps: BOM, NUL, other scripts' digits and spaces.
ALPHABET = "0123456789,:| \t\r\n.-+e_nx\ufeff\x00\u0663\u00b2\u3000\x1c"
ID = st.integers(0, SIZE - 1).map(str)
VALUE = st.one_of(st.integers(0, 3).map(str), st.sampled_from(["0.5", "-2", "1e3", "1e-40"]))
JUNK = st.one_of(
    st.sampled_from(
        ["10", "0:1", "|", "|ns", "|a:2", "1,", ":", "qid:1", "nan", "1e39", "+1", "1_0", "\u0663"]
        + ["9" * 25]
    ),
    st.text(ALPHABET, max_size=4),
)
JUNK_LINE = st.lists(st.one_of(ID, JUNK), min_size=1, max_size=6).map(" ".join)
STORAGE = ["plain"] * 4 + ["gzip"] * 2 + ["truncated gzip", "corrupt gzip"]


def row_lines(fmt: str):
    """Rows of the format (ids in range for SIZE) and blank lines."""
    labels = st.one_of(st.just(""), st.lists(ID, min_size=1, max_size=3).map(",".join))
    feature = st.tuples(ID, VALUE).map(":".join)
    if fmt == "vw":
        feature = st.one_of(feature, ID)
    if fmt == "libsvm":  # 1-based
        feature = st.tuples(ID.map(lambda i: str(int(i) + 1)), VALUE).map(":".join)
    sep = " | " if fmt == "vw" else " "
    row = st.tuples(labels, st.lists(feature, max_size=4)).map(
        lambda t: t[0] + sep + " ".join(t[1])
    )
    return st.lists(st.one_of(row, st.just("")), max_size=12)


@st.composite
def file_bytes(draw, lines, header_share: int):
    """Lines (mostly), or arbitrary text or bytes; stored plain, gzipped, or as damaged gzip."""
    kind = draw(st.integers(0, 5))
    if kind == 0:
        data = draw(st.binary(max_size=300))
    elif kind == 1:
        data = draw(st.text(ALPHABET, max_size=300)).encode("utf-8")
    else:
        lines = draw(lines)
        if draw(st.booleans()):  # one line of tokens that may mean anything
            lines.insert(draw(st.integers(0, len(lines))), draw(JUNK_LINE))
        header = ""
        if draw(st.integers(0, 9)) >= 10 - header_share:  # right, or wrong row count and sizes
            n_rows = sum(1 for text in lines if text.strip())
            right = draw(st.booleans())
            header = f"{n_rows} {SIZE} {SIZE}\n" if right else f"{n_rows + 1} 5 5\n"
        bom = draw(st.sampled_from(["", "", "\ufeff"]))
        data = (bom + header + "\n".join(lines) + draw(st.sampled_from(["", "\n"]))).encode()
    storage = draw(st.sampled_from(STORAGE))
    if storage == "plain":
        return data
    packed = gzip.compress(data, mtime=0)
    where = draw(st.integers(0, len(packed) - 1))
    if storage == "truncated gzip":
        return packed[:where]
    if storage == "corrupt gzip":
        flip = draw(st.integers(1, 255))
        return packed[:where] + bytes([packed[where] ^ flip]) + packed[where + 1 :]
    return packed


# Strategies are built once: building them per example costs more than reading the file.
SPLIT_LINES = st.lists(
    st.lists(st.integers(1, 200).map(str), min_size=1, max_size=3).map(" ".join), max_size=12
)
FILES = {
    "xc": file_bytes(row_lines("xc"), header_share=6),
    "libsvm": file_bytes(row_lines("libsvm"), header_share=1),
    "vw": file_bytes(row_lines("vw"), header_share=1),
    "split": file_bytes(SPLIT_LINES, header_share=1),
}


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "input.txt"


def read_everything(path, fmt):
    """Every reading entry point on one file; checks what holds for the rows when it succeeds."""
    header = read_header(path, fmt)
    if fmt != "xc":
        assert max(scan_sizes([path], fmt)) <= 2**31 - 1
    configured = None if header is not None else SIZE
    n_features, n_labels = resolve_sizes(path, header, configured, configured)
    rows = list(iter_rows(path, n_features, n_labels, fmt))
    assert len(rows) == count_rows(path, fmt)
    for row in rows:
        assert ((0 <= row.labels) & (row.labels < n_labels)).all()
        assert ((0 <= row.feat_idx) & (row.feat_idx < n_features)).all()
        assert len(row.feat_idx) == len(row.feat_val) and np.isfinite(row.feat_val).all()
    return rows


@pytest.mark.parametrize("fmt", ["xc", "libsvm", "vw"])
@FUZZ
@given(data=st.data())
def test_readers_give_rows_or_a_data_format_error(path, fmt, data):
    path.write_bytes(data.draw(FILES[fmt]))
    try:
        read_everything(path, fmt)
    except DataFormatError:
        pass


@FUZZ
@given(contents=FILES["split"], column=st.integers(1, 3), n_rows=st.integers(0, 250))
def test_split_reader_gives_row_ids_or_a_data_format_error(path, contents, column, n_rows):
    path.write_bytes(contents)
    try:
        ids = read_split(path, column, n_rows)
    except DataFormatError:
        return
    assert ((0 <= ids) & (ids < n_rows)).all() and len(set(ids.tolist())) == len(ids)
