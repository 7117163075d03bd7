"""bench/compare.py's pure-Python pieces: the shared matrix, scoring, the table; no peers venv, no network."""

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import config
from mach import metrics
from mach.cli import parse_ranges
from mach.data import formats as xcformat

# The bench scripts are not a package; they import each other from their own folder.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import compare
import compare_report
import peers_runner
import shared_matrix


def small_split():
    X = sp.csr_matrix(
        np.array(
            [[3.0, 0, 4.0, 0], [0, 0, 0, 0], [0, 2.5, 0, 0], [1e-3, 1 / 3, 0, 7.0]], np.float32
        )
    )
    Y = shared_matrix.labels_to_csr(
        [np.array([2, 0]), np.array([1]), np.array([], np.int64), np.array([4])], 5
    )
    return shared_matrix.normalize_rows(X), Y


def test_normalize_rows_gives_unit_rows_and_keeps_zero_rows():
    X, _ = small_split()
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    np.testing.assert_allclose(norms, [1, 0, 1, 1], rtol=1e-6)
    np.testing.assert_allclose(X[0].toarray(), [[0.6, 0, 0.8, 0]], rtol=1e-6)
    assert X.dtype == np.float32


def test_shared_split_round_trips_through_npz_and_repository_text(tmp_path):
    X, Y = small_split()
    paths = shared_matrix.write_split(tmp_path, "train", X, Y)
    X2, Y2 = shared_matrix.load_split(paths["npz"])
    assert (X2 != X).nnz == 0 and (Y2 != Y).nnz == 0
    # The text copy (what MACH and omikuji read) holds bit-identical float32 values and the same labels.
    rows = list(xcformat.iter_rows(paths["txt"], 4, 5))
    assert [r.labels.tolist() for r in rows] == [[0, 2], [1], [], [4]]
    for i, row in enumerate(rows):
        lo, hi = X.indptr[i], X.indptr[i + 1]
        assert row.feat_idx.tolist() == X.indices[lo:hi].tolist()
        assert row.feat_val.tobytes() == X.data[lo:hi].tobytes()
    assert [y.tolist() for y in shared_matrix.label_lists(Y2)] == [[0, 2], [1], [], [4]]


def test_score_of_a_prediction_file_uses_mach_metrics(tmp_path):
    test_labels = [np.array([0, 2]), np.array([1]), np.array([], np.int64)]
    np.save(
        tmp_path / "topk.npy", np.array([[2, 3, 0, 1, 4], [1, -1, -1, -1, -1], [0, 1, 2, 3, 4]])
    )
    inv = compare_report.inverse_propensities(
        [np.array([0, 1]), np.array([0]), np.array([2, 3, 4])], 5, 0.55, 1.5
    )
    got = compare_report.score(np.load(tmp_path / "topk.npy"), test_labels, inv)
    assert got["P@1"] == pytest.approx(
        100 * 2 / 3
    )  # rows 0 and 1 hit at rank 1; row 2 has no labels
    assert got["P@3"] == pytest.approx(100 * (2 / 3 + 1 / 3) / 3)
    assert got["PSP@5"] == pytest.approx(100.0)  # every true label is within the top 5
    assert got["nDCG@5"] == metrics.ndcg_at_k(np.load(tmp_path / "topk.npy"), test_labels, 5)


def test_table_marks_a_failed_install_instead_of_crashing():
    measured = {m: 50.0 for m in compare_report.METRICS}
    measured.update(
        train_s=12.3,
        predict_ms_per_sample=0.02,
        latency_ms_median=0.17,
        model_mb=2.0,
        peak_rss_mb=164,
    )
    table = compare_report.format_table(
        {
            "mach": {**measured, "latency_ms_median": None},
            "pecos_xrlinear": {
                "error": "not installed: pip install libpecos==1.2.8: ERROR: No matching | distribution"
            },
        }
    )
    lines = table.splitlines()
    assert len({line.count("|") for line in lines}) == 1  # every row has the header's columns
    assert (
        "| PECOS XR-Linear | not installed: pip install libpecos==1.2.8: ERROR: No matching / distribution |"
        in table
    )
    assert (
        "| MACH (this repo) | 50.00 | 50.00 | 50.00 | 50.00 | 50.00 | 12.3 | 0.020 | – | 2.0 | 164 |"
        in table
    )


def test_splits_table_gives_mean_and_std():
    runs = [{m: v for m in compare_report.METRICS} for v in (60.0, 62.0)]
    assert "| napkinXC PLT | 2 | 61.00 ± 1.41 |" in compare_report.format_splits(
        {"napkinxc_plt": runs}
    )
    assert parse_ranges("1-3,7,2", "--splits") == [1, 2, 3, 7]


def test_topk_array_pads_short_predictions():
    got = peers_runner.topk_array([[4, 2], [1, 2, 3, 0, 5, 6], []], 5)
    assert got.tolist() == [[4, 2, -1, -1, -1], [1, 2, 3, 0, 5], [-1] * 5] and got.dtype == np.int64


def test_a_failed_process_is_an_error_naming_its_exit_code_and_log(tmp_path):
    step = compare.run_logged(
        "peer",
        [sys.executable, "-c", "import sys; print('hi'); sys.exit(3)"],
        tmp_path / "x.log",
        1,
        60,
    )
    assert step.returncode == 3 and step.peak_rss_bytes > 2**20
    assert (tmp_path / "x.log").read_text().endswith("hi\n")
    error = compare.failure(step)["error"]
    assert error.startswith("peer failed (exit 3") and f": hi [log: {tmp_path / 'x.log'}]" in error
    ok = compare.run_logged("peer", [sys.executable, "-c", "pass"], tmp_path / "y.log", 1, 60)
    assert compare.failure(ok) is None


def test_compare_without_peers_venv_reports_not_installed(tiny_files, tmp_path):
    out_dir = tmp_path / "out"
    code = compare.main(
        [
            "--dataset",
            "tiny",
            "--train",
            str(tiny_files["train"]),
            "--test",
            str(tiny_files["test"]),
            "--methods",
            "napkinxc_plt,pecos_xrlinear",
            "--no-install",
            "--peers-venv",
            str(tmp_path / "no-venv"),
            "--work-dir",
            str(tmp_path / "work"),
            "--out-dir",
            str(out_dir),
        ]
    )
    assert code == 0
    table = (out_dir / "compare_tiny.md").read_text()
    assert (
        "| napkinXC PLT | not installed: no peers venv at" in table
        and "| PECOS XR-Linear | not installed:" in table
    )
    saved = json.loads((out_dir / "compare_tiny.json").read_text())
    assert saved["results"]["napkinxc_plt"]["error"].startswith("not installed")
    # The shared files were still written once, normalised, for every method to read.
    X, Y = shared_matrix.load_split(tmp_path / "work" / "tiny" / "split01" / "train.npz")
    assert X.shape == (64, 30) and Y.shape == (64, 50)
    np.testing.assert_allclose(
        np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel()), 1.0, rtol=1e-6
    )


@pytest.mark.slow
def test_compare_runs_mach_through_the_chain_and_reads_its_files(tiny_files, tmp_path, capsys):
    """MACH's four processes on the chain runner; figures from train.json, metrics.json, result.json."""
    flags = ["--dataset", "tiny", "--train", str(tiny_files["train"]), "--test"]
    flags += [str(tiny_files["test"]), "--methods", "mach", "--threads", "1", "--latency-rows", "3"]
    for pair in ["R=2", "epochs=1", "hidden=(8,)", "B=8", "eval_batch_size=16"]:
        flags += ["--mach-set", pair]
    flags += ["--work-dir", str(tmp_path / "work"), "--out-dir", str(tmp_path / "out")]
    assert compare.main(flags) == 0
    assert capsys.readouterr().out.count("table=") == 1  # one line naming the outputs
    mach = json.loads((tmp_path / "out" / "compare_tiny.json").read_text())["results"]["mach"]
    assert "error" not in mach, mach.get("error")
    # mach_timing's predictions, scored by the shared scorer, equal evaluate.py's (compare asserts it).
    assert mach["P@1"] == pytest.approx(mach["evaluate_metrics"]["P@1"])
    assert 0 < mach["train_loop_s"] < mach["train_s"]
    assert set(mach["peak_rss_mb_by_step"]) == {"preprocess", "train", "evaluate", "timing"}
    assert mach["latency_rows"] == 3 and mach["model_variable_bytes"] == 4 * 2 * (
        30 * 8 + 8 + 8 * 8 + 8
    )


def test_bad_flags_are_user_errors(capsys):
    assert compare.main(["--methods", "mach,liblinear"]) == 2
    assert "unknown liblinear" in capsys.readouterr().err
    assert compare.main(["--train", "a.txt"]) == 2
    assert "--train with --test" in capsys.readouterr().err


def test_a_malformed_file_is_one_line_naming_it(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("2 30 50\n1,2 0:1\n3 4:x\n")
    flags = ["--dataset", "tiny", "--train", str(bad), "--test", str(bad), "--methods", "mach"]
    flags += ["--work-dir", str(tmp_path / "work"), "--out-dir", str(tmp_path / "out")]
    assert compare.main(flags) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"error: {bad}:3: feature value 'x' is not a number" in err


def test_mach_settings_are_pinned_once_with_overrides(monkeypatch):
    args = compare.parse_args(["--mach-set", "B=32", "--mach-set", "hidden=(8,)"])
    pinned = compare.pin_mach_settings(args)
    assert "B=32" in pinned and "hidden=(8,)" in pinned and any(p.startswith("R=") for p in pinned)
    assert not any(
        p.startswith(("train_file=", "data_file=", "threads=", "work_dir=")) for p in pinned
    )
    assert compare.main(["--mach-set", "no_such_field=1"]) == 2


def test_a_failed_split_is_left_out_not_fatal(monkeypatch, tmp_path):
    def fake_run_methods(args, methods, cfg, split, split_dir, peer_status, log):
        if split == 3:
            return {"mach": {"error": "train failed"}, "pecos_xrlinear": {"P@1": 1.0}}, 0
        return {m: {k: float(split) for k in compare_report.METRICS} for m in methods}, 0

    monkeypatch.setattr(compare, "run_methods", fake_run_methods)
    args = compare.parse_args(["--splits", "1-4", "--work-dir", str(tmp_path)])
    results = {m: {k: 1.0 for k in compare_report.METRICS} for m in ["mach", "pecos_xrlinear"]}
    results["napkinxc_plt"] = {"error": "not installed: no venv"}
    got = compare.run_splits(args, config.DATASETS["delicious"], results, {}, print)
    assert got["best_peer"] == "pecos_xrlinear" and list(got["failed"]) == [3]
    assert [run["split"] for run in got["per_split"]["mach"]] == [1, 2, 4]
    assert "| 3 | 2.33 ± 1.53 |" in compare_report.format_splits(got["per_split"])


def test_training_rows_without_labels_or_features_are_left_out_for_every_method(tmp_path):
    # omikuji refuses such rows ("Failed to load data"); every method gets the same usable rows.
    train = tmp_path / "train.txt"
    train.write_text("4 6 3\n0,2 1:1 4:2\n 3:1\n1 \n2 0:1 5:1\n")
    test = tmp_path / "test.txt"
    test.write_text("2 6 3\n 1:1\n1 2:1\n")
    cfg = dataclasses.replace(config.BASE, train_file=str(train), test_file=str(test))
    labels = compare.write_shared_data(cfg, 1, tmp_path / "shared")
    assert labels["dropped_train_rows"] == 2
    assert [y.tolist() for y in labels["train"]] == [[0, 2], [2]]
    assert [y.tolist() for y in labels["test"]] == [[], [1]]  # test rows are all scored
    X, _ = shared_matrix.load_split(tmp_path / "shared" / "train.npz")
    assert X.shape == (2, 6)
    assert "left out, as usual: 2 here" in compare_report.format_notes({}, 2)
