"""predict.py: top-k of new rows from a SavedModel or a work directory, equal to evaluate.py's merge;
inputs (file, .gz, stdin), outputs (JSON lines, TSV, names) and bad rows."""

import argparse
import dataclasses
import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_flags, evaluate_topk, format_rows, make_rows

import config
import export as export_script
import predict as predict_script
from mach.cli import add_config_flags, config_from_args
from mach.data.prepare import load_data_manifest, with_data_sizes

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny trained run (R=2, 1 epoch), its export, and evaluate.py's top-k of its test rows."""
    root = tmp_path_factory.mktemp("predict")
    files = {"train": root / "train.txt", "test": root / "test.txt"}
    files["train"].write_text(format_rows(make_rows(64, seed=1)))
    files["test"].write_text(format_rows(make_rows(32, seed=2)))
    work = root / "work"
    flags = cli_flags(files, "tinypred", work)
    for script in ["preprocess.py", "train.py"]:
        done = subprocess.run(
            [sys.executable, str(REPO / script), *flags],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=root,
        )
        assert done.returncode == 0, done.stderr
    assert export_script.main([*flags, "--out", str(root / "models" / "tiny")]) == 0
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    cfg = config_from_args(parser.parse_args(flags), config.BASE, config.DATASETS)
    cfg = with_data_sizes(cfg, load_data_manifest(cfg))
    pred = evaluate_topk(cfg)
    return {
        "root": root,
        "files": files,
        "models": root / "models" / "tiny",
        "run_dir": cfg.run_dir(),
        "labels": pred["topk"][cfg.R],
        "scores": pred["scores"][cfg.R],
    }


def read_jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def check_equal_to_evaluate(records, model, k=5):
    np.testing.assert_array_equal([r["labels"] for r in records], model["labels"][:, :k])
    np.testing.assert_allclose(
        [r["scores"] for r in records], model["scores"][:, :k], rtol=1e-5, atol=1e-6
    )


@pytest.mark.slow
def test_savedmodel_from_gzipped_stdin_equals_evaluate(model):
    data = gzip.compress(model["files"]["test"].read_bytes())
    done = subprocess.run(
        [sys.executable, str(REPO / "predict.py"), "--model", str(model["models"])],
        input=data,
        capture_output=True,
        timeout=300,
        cwd=model["root"],
    )
    assert done.returncode == 0, done.stderr.decode()
    records = read_jsonl(done.stdout.decode())
    assert [r["line"] for r in records] == list(range(2, 34))  # line 1 is the header
    check_equal_to_evaluate(records, model)
    assert "predicted rows=32 skipped=0" in done.stderr.decode()


@pytest.mark.parametrize(
    "which, forward, batch",
    [
        ("run_dir", "auto", 7),  # the compiled kernel
        ("dataset_dir", "auto", 16),  # TensorFlow
        ("run_dir", "compiled", 16),
        ("run_dir", "tensorflow", 7),
    ],
)
@pytest.mark.slow
def test_work_directory_equals_evaluate(model, capsys, which, forward, batch):
    path = model["run_dir"] if which == "run_dir" else model["run_dir"].parent
    argv = ["--model", str(path), "--input", str(model["files"]["test"])]
    argv += ["--batch-size", str(batch), "--forward", forward]
    assert predict_script.main(argv) == 0
    check_equal_to_evaluate(read_jsonl(capsys.readouterr().out), model)


@pytest.mark.slow
def test_tsv_output_with_label_names_and_top_k(model, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("".join(f"label {i}\n" for i in range(50)))
    out, rows = tmp_path / "out.tsv", tmp_path / "rows.gz"
    rows.write_bytes(gzip.compress(model["files"]["test"].read_bytes()))
    argv = ["--model", str(model["models"]), "--input", str(rows)]
    argv += ["--label-names", str(names), "--top-k", "3", "--output", str(out)]
    assert predict_script.main(argv) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "line\trank\tlabel\tscore\tname" and len(lines) == 1 + 32 * 3
    first = [line.split("\t") for line in lines[1:4]]
    assert [int(f[2]) for f in first] == model["labels"][0, :3].tolist()
    assert [f[4] for f in first] == [f"label {c}" for c in model["labels"][0, :3]]
    assert [int(f[1]) for f in first] == [1, 2, 3] and {f[0] for f in first} == {"2"}
    jsonl = tmp_path / "out.jsonl"
    argv[-1] = str(jsonl)
    assert predict_script.main(argv) == 0
    record = read_jsonl(jsonl.read_text())[0]
    assert record["names"] == [f"label {c}" for c in record["labels"]]


@pytest.mark.slow
def test_a_bad_row_is_an_error_naming_its_line_or_skipped(model, tmp_path, capsys):
    rows = tmp_path / "rows.txt"
    rows.write_text(" 1:1 2:1\n\n1,2 4:x\n 3:0.5\n")
    out = tmp_path / "out.jsonl"
    argv = ["--model", str(model["models"]), "--input", str(rows), "--output", str(out)]
    assert predict_script.main(argv) == 2
    err = capsys.readouterr().err
    assert f"error: {rows}:3: feature value 'x' is not a number" in err
    assert not out.exists() and not list(tmp_path.glob(".out.jsonl.tmp-*"))
    assert predict_script.main([*argv, "--skip-bad"]) == 0
    assert "predicted rows=2 skipped=1" in capsys.readouterr().err
    assert [r["line"] for r in read_jsonl(out.read_text())] == [1, 4]


@pytest.mark.slow
def test_clear_errors_for_the_model_and_flags(model, tmp_path, capsys):
    argv = ["--model", str(model["models"]), "--input", str(model["files"]["test"])]
    assert predict_script.main([*argv, "--top-k", "6"]) == 2
    assert "exported with k=5" in capsys.readouterr().err
    assert predict_script.main(["--model", str(tmp_path), "--input", "x"]) == 2
    assert "export one with `python export.py" in capsys.readouterr().err
    names = tmp_path / "names.txt"
    names.write_text("a\nb\n")
    assert predict_script.main([*argv, "--label-names", str(names)]) == 2
    assert "has 2 lines but the model has 50 labels" in capsys.readouterr().err


@pytest.mark.slow
def test_tensorflow_forward_with_the_merge_on_the_device(model, tmp_path):
    """predict.py --forward tensorflow --set-like merge_device=device: the graph's merge, the same top-k."""
    from mach.merge import Merge
    from mach.serving import predictors

    cfg = predictors.run_config(model["run_dir"])
    host = predictors.RunPredictor(cfg, 3, lambda _m: None, "tensorflow", Merge(), "compiled")
    device_cfg = dataclasses.replace(cfg, merge_device="device")
    device = predictors.RunPredictor(
        device_cfg, 3, lambda _m: None, "tensorflow", Merge(), "compiled"
    )
    from conftest import random_rows

    rows = random_rows(5, 17)
    want, got = host.predict_arrays(*rows), device.predict_arrays(*rows)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6, atol=1e-7)
    assert got[0].shape == (17, 3)
