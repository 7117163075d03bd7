import gzip

import numpy as np
import pytest

from mach.data.formats import (
    DataFormatError,
    count_rows,
    iter_rows,
    read_header,
    read_split,
    resolve_sizes,
)


def write(tmp_path, text, name="data.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def rows_of(path, d=10, k=10):
    return list(iter_rows(path, d, k))


def test_header_labels_and_features(tmp_path):
    path = write(tmp_path, "2 10 10\n1,2 0:1.5 3:2\n7 9:0.25\n")
    assert read_header(path).n_rows == 2
    rows = rows_of(path)
    assert rows[0].labels.tolist() == [1, 2] and rows[0].feat_idx.tolist() == [0, 3]
    assert rows[0].feat_val.tolist() == [1.5, 2.0] and rows[0].labels.dtype == np.int64
    assert rows[1].line_no == 3 and rows[1].feat_val.dtype == np.float32


def test_no_header_and_crlf(tmp_path):
    path = write(tmp_path, "1,2 0:1\r\n3 4:1\r\n")
    assert read_header(path) is None
    assert [r.labels.tolist() for r in rows_of(path)] == [[1, 2], [3]]


def test_empty_labels_and_empty_features(tmp_path):
    path = write(tmp_path, "2 10 10\n 0:1 2:1\n4,5\n")
    rows = rows_of(path)
    assert rows[0].labels.size == 0 and rows[0].feat_idx.tolist() == [0, 2]
    assert rows[1].labels.tolist() == [4, 5] and rows[1].feat_idx.size == 0


def test_with_a_header_its_n_lines_are_rows_blank_ones_included(tmp_path):
    # A row with neither labels nor features is written as a blank line (here " "): a header counts it.
    path = write(tmp_path, "\n3 10 10\n \n 0:1 2:1\n4,5\n\n\n")
    rows = rows_of(path)
    assert [r.line_no for r in rows] == [3, 4, 5]  # file lines, for error messages
    assert [r.labels.tolist() for r in rows] == [[], [], [4, 5]]
    assert [r.feat_idx.tolist() for r in rows] == [[], [0, 2], []]
    assert read_header(path).n_rows == 3 and count_rows(path) == 3  # trailing blank lines: no rows
    too_many = write(tmp_path, "1 10 10\n\n4,5\n", "more.txt")
    with pytest.raises(
        DataFormatError, match=r"more.txt:3: header announces 1 rows but the file has more"
    ):
        rows_of(too_many)


def test_without_a_header_blank_lines_are_never_rows(tmp_path):
    path = write(tmp_path, "\n \t\n 0:1 2:1\n\n4,5\n\n")
    rows = rows_of(path)
    assert [r.line_no for r in rows] == [3, 5]
    assert [r.labels.tolist() for r in rows] == [[], [4, 5]] and count_rows(path) == 2


def test_header_and_headerless_files_give_the_same_rows(tmp_path):
    body = "1,2 0:1\n 3:0.5\n7\n\n"
    with_header = rows_of(write(tmp_path, "3 10 10\n" + body, "h.txt"))
    without = rows_of(write(tmp_path, body, "n.txt"))
    assert len(with_header) == len(without) == 3
    for a, b in zip(with_header, without):
        assert a.labels.tolist() == b.labels.tolist()
        assert a.feat_idx.tolist() == b.feat_idx.tolist()
        assert a.feat_val.tolist() == b.feat_val.tolist()
    assert count_rows(tmp_path / "h.txt") == count_rows(tmp_path / "n.txt") == 3


def test_byte_order_mark_is_dropped(tmp_path):
    path = tmp_path / "bom.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8-sig") as f:
        f.write("1 10 10\n1 2:1\n")
    assert read_header(path).n_rows == 1 and rows_of(path)[0].labels.tolist() == [1]
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf3 4:1\n")
    assert rows_of(tmp_path / "bom.txt")[0].labels.tolist() == [3]


def test_gzip_is_read_transparently(tmp_path):
    path = tmp_path / "data.txt.gz"
    with gzip.open(path, "wt") as f:
        f.write("1 10 10\n1 2:1\n")
    assert rows_of(path)[0].labels.tolist() == [1]


@pytest.mark.parametrize(
    "text, message",
    [
        ("1 10 10\n12 0:1\n", "data.txt:2: label 12 is out of range; expected 0 <= label < 10"),
        (
            "1 10 10\n1 10:1\n",
            "data.txt:2: feature index 10 is out of range; expected 0 <= index < 10",
        ),
        ("1 10 10\n1,x 0:1\n", "data.txt:2: label 'x' is not an integer"),
        ("1 10 10\n1 a:1\n", "data.txt:2: feature index 'a' is not an integer"),
        ("1 10 10\n1 3:abc\n", "data.txt:2: feature value 'abc' is not a number"),
        ("1 10 10\n1 3\n", "data.txt:2: malformed feature '3'; expected `index:value`"),
        ("1 10 10\n1 3:1:2\n", "data.txt:2: malformed feature '3:1:2'"),
        ("1 10 10\n1,,2 3:1\n", "data.txt:2: empty label in '1,,2'"),
        ("1 10 10\n1 3:nan\n", "data.txt:2: feature value 'nan' is not finite"),
        ("3 10 10\n1 0:1\n2 0:1\n", "data.txt:3: header announces 3 rows but the file has 2"),
        ("3 10 10\n", "data.txt: the file has a header but no rows"),
        ("", "data.txt: the file is empty"),
        ("\n \n", "data.txt: the file has only blank lines"),
        (
            "1 10 10\n+5 0:1\n",
            "data.txt:2: label '+5' is not an integer; expected 0 <= label < 10 (the number of "
            "labels), written with the digits 0-9",
        ),
        ("1 10 10\n1_0 0:1\n", "data.txt:2: label '1_0' is not an integer"),
        ("1 10 10\n\u0663 0:1\n", "data.txt:2: label '\u0663' is not an integer"),
        ("1 10 10\n1 1_0:1\n", "data.txt:2: feature index '1_0' is not an integer"),
        ("1 10 10\n1 -1:1\n", "data.txt:2: feature index '-1' is not an integer"),
        ("1 10 10\n1 1:1_0\n", "data.txt:2: feature value '1_0' is not a number"),
        ("1 10 10\n1 1:1e39\n", "data.txt:2: feature value '1e39' is too large for float32"),
        (
            "1 10 10\n9223372036854775808 0:1\n",
            "data.txt:2: label 9223372036854775808 is out of range; expected 0 <= label < 10",
        ),
        (
            "1 10 10\n1 " + "9" * 40 + ":1\n",
            "data.txt:2: feature index 999999999999... (40 digits) is out of range",
        ),
        (
            "2 10\n1 0:1\n",
            "data.txt:1: the first line '2 10' has 2 numbers; expected a header of exactly `N D L`",
        ),
        ("1 10 10 4\n1 0:1\n", "data.txt:1: the first line '1 10 10 4' has 4 numbers"),
        ("1 10 " + "9" * 30 + "\n", "data.txt:1: the header has a number of more than 18 digits"),
    ],
)
def test_bad_input_names_file_line_and_expectation(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(DataFormatError) as err:
        rows_of(path)
    assert message in str(err.value)
    assert str(tmp_path) in str(err.value)


def test_binary_input_names_the_line(tmp_path):
    path = tmp_path / "data.txt"
    path.write_bytes(b"2 10 10\n1 0:1\n\x89PNG\x00\xff 1:1\n")
    with pytest.raises(DataFormatError) as err:
        rows_of(path)
    assert str(err.value) == (
        f"{path}:3: byte 0x89 at column 1 is not UTF-8; expected UTF-8 text (is this a binary "
        "file, or compressed other than by gzip?)"
    )


@pytest.mark.parametrize("damage", ["truncate", "corrupt", "magic_only"])
def test_truncated_or_corrupt_gzip(tmp_path, damage):
    path = tmp_path / "data.txt.gz"
    text = "".join(f"{i % 10} {i % 7}:{i}\n" for i in range(20_000))
    blob = gzip.compress(("20000 10 10\n" + text).encode(), mtime=0)
    blob = {
        "truncate": blob[: len(blob) // 2],
        "corrupt": blob[:40] + bytes(b ^ 0x55 for b in blob[40:80]) + blob[80:],
        "magic_only": blob[:2],
    }[damage]
    path.write_bytes(blob)
    with pytest.raises(DataFormatError) as err:
        rows_of(path)
    assert str(err.value).startswith(f"{path}: the gzip data is truncated or corrupt after ")
    assert "expected a complete gzip file; download it again" in str(err.value)


def test_sizes_from_header_and_config_must_agree(tmp_path):
    path = write(tmp_path, "1 10 20\n1 0:1\n")
    header = read_header(path)
    assert resolve_sizes(path, header, None, None) == (10, 20)
    assert resolve_sizes(path, None, 5, 6) == (5, 6)
    with pytest.raises(DataFormatError, match="header says n_classes=20 but the config says 30"):
        resolve_sizes(path, header, 10, 30)
    with pytest.raises(DataFormatError, match="no header and n_features is not configured"):
        resolve_sizes(path, None, None, 6)


def test_sizes_beyond_int32_are_refused(tmp_path):
    path = write(tmp_path, "\n1 10 1099511627776\n1 0:1\n")
    with pytest.raises(DataFormatError) as err:
        resolve_sizes(path, read_header(path), None, None)
    assert str(err.value) == (
        f"{path}:2: the header says n_classes=1099511627776; "
        "expected 1 <= n_classes <= 2147483647 (ids are hashed as int32)"
    )
    with pytest.raises(DataFormatError, match="the config says n_features=0; expected 1 <="):
        resolve_sizes(path, None, 0, 5)


def test_split_columns_are_one_based(tmp_path):
    path = write(tmp_path, "3 1\n1 2\n", "split.txt")
    assert read_split(path, 1, 5).tolist() == [2, 0]
    assert read_split(path, 2, 5).tolist() == [0, 1]


@pytest.mark.parametrize(
    "text, column, message",
    [
        ("3 1\n9 2\n", 1, "split.txt:2: row number 9 is out of range; expected 1 <= row <= 5"),
        ("3 1\n0 2\n", 1, "split.txt:2: row number 0 is out of range"),
        ("3 1\n2 2\n", 3, "split.txt:1: no column 3"),
        (
            "3 1\nx 2\n",
            1,
            "split.txt:2: row number 'x' is not an integer; expected 1 <= row <= 5 (rows of the "
            "data file), written with the digits 0-9",
        ),
        ("3 1\n1_0 2\n", 1, "split.txt:2: row number '1_0' is not an integer"),
        ("+3 1\n", 1, "split.txt:1: row number '+3' is not an integer"),
        ("\u0663 1\n", 1, "split.txt:1: row number '\u0663' is not an integer"),
        ("3 1\n3 2\n", 1, "lists a row more than once"),
        ("", 1, "the split file is empty"),
    ],
)
def test_bad_split_files(tmp_path, text, column, message):
    with pytest.raises(DataFormatError) as err:
        read_split(write(tmp_path, text, "split.txt"), column, 5)
    assert message in str(err.value)


def test_files_that_number_ids_from_another_base_are_read_from_0(tmp_path):
    """Vowpal Wabbit's recall_tree files number classes from 1; ODP's features start at 1001."""
    path = tmp_path / "odp.vw"
    path.write_text("1 | 1001:0.5 1003\n3 | 1002\n")
    rows = list(iter_rows(path, n_features=3, n_labels=3, fmt="vw", bases=(1, 1001)))
    assert [r.labels.tolist() for r in rows] == [[0], [2]]
    assert [r.feat_idx.tolist() for r in rows] == [[0, 2], [1]]
    with pytest.raises(DataFormatError, match=r"label 0 is out of range; expected 1 <= label <= 3"):
        list(iter_rows(write(tmp_path, "0 | 1001\n", "zero.vw"), 3, 3, "vw", (1, 1001)))
