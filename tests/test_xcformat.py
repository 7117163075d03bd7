import gzip

import numpy as np
import pytest

from mach.xcformat import DataFormatError, iter_rows, read_header, read_split, resolve_sizes


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
    path = write(tmp_path, "3 10 10\n 0:1 2:1\n4,5\n\n")
    rows = rows_of(path)
    assert rows[0].labels.size == 0 and rows[0].feat_idx.tolist() == [0, 2]
    assert rows[1].labels.tolist() == [4, 5] and rows[1].feat_idx.size == 0
    assert rows[2].labels.size == 0 and rows[2].feat_idx.size == 0


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
    ],
)
def test_bad_input_names_file_line_and_expectation(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(DataFormatError) as err:
        rows_of(path)
    assert message in str(err.value)
    assert str(tmp_path) in str(err.value)


def test_sizes_from_header_and_config_must_agree(tmp_path):
    path = write(tmp_path, "1 10 20\n1 0:1\n")
    header = read_header(path)
    assert resolve_sizes(path, header, None, None) == (10, 20)
    assert resolve_sizes(path, None, 5, 6) == (5, 6)
    with pytest.raises(DataFormatError, match="header says n_classes=20 but the config says 30"):
        resolve_sizes(path, header, 10, 30)
    with pytest.raises(DataFormatError, match="no header and n_features is not configured"):
        resolve_sizes(path, None, None, 6)


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
        ("3 1\nx 2\n", 1, "split.txt:2: row number 'x' is not an integer"),
        ("3 1\n3 2\n", 1, "lists a row more than once"),
        ("", 1, "the split file is empty"),
    ],
)
def test_bad_split_files(tmp_path, text, column, message):
    with pytest.raises(DataFormatError, match=message.replace("(", r"\(")):
        read_split(write(tmp_path, text, "split.txt"), column, 5)
