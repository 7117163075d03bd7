"""reproduce.py: refuses wrong downloads without a traceback; --quick --synthetic runs the chain end to end."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

import config
from mach.datasets import DATASETS as FACTS
from mach.experiments import reproduce

REPO = Path(__file__).resolve().parents[1]


def run(tmp_path, *flags):
    cmd = [sys.executable, str(REPO / "reproduce.py"), "--work-dir", str(tmp_path / "work")]
    cmd += ["--results-dir", str(tmp_path / "results"), *flags]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)


def test_missing_file_is_refused_with_the_layout_and_download_page(tmp_path):
    done = run(tmp_path, "--dataset", "wiki10_31k", "--data-dir", str(tmp_path / "data"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert f"train file not found: {tmp_path / 'data' / 'Wiki10-31K' / 'train.txt'}" in done.stderr
    assert "└── Wiki10-31K/" in done.stderr and '"14146 101938 30938"' in done.stderr
    assert reproduce.XC_PAGE in done.stderr and "--quick --synthetic" in done.stderr
    assert not (tmp_path / "work").exists()

    odp = run(tmp_path, "--dataset", "odp", "--data-dir", str(tmp_path / "data"))
    assert odp.returncode == 2 and "Traceback" not in odp.stderr
    assert "recall_tree/odp" in odp.stderr and "ODP/" in odp.stderr


def test_wrong_header_counts_are_refused(tmp_path):
    folder = tmp_path / "data" / "Wiki10-31K"
    folder.mkdir(parents=True)
    (folder / "train.txt").write_text("14000 101938 30938\n1,2 0:1.5\n")
    (folder / "test.txt").write_text("6616 101938 30938\n3 4:1\n")
    done = run(tmp_path, "--dataset", "wiki10_31k", "--data-dir", str(tmp_path / "data"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "header N D L = 14000 101938 30938; expected 14146 101938 30938" in done.stderr
    assert "expected layout:" in done.stderr


def test_quick_plan_shrinks_only_what_does_not_fit():
    wiki, notes = reproduce.quick_plan(config.DATASETS["wiki10_31k"], set())
    assert wiki == {"R": 2, "epochs": 1} and len(notes) == 2
    big, notes = reproduce.quick_plan(config.DATASETS["amazon3m"], set())
    assert big["feat_hash_dim"] < 100_000 and "B" not in big
    shrunk = dataclasses.replace(config.DATASETS["amazon3m"], **big)
    assert shrunk.params_per_repetition() <= reproduce.QUICK_MAX_PARAMS
    assert any(n.startswith("hidden: (4096,) -> ") for n in notes)
    # A key the user set is left as it is.
    kept, _ = reproduce.quick_plan(config.DATASETS["amazon3m"], {"hidden", "R"})
    assert "hidden" not in kept and "R" not in kept


def test_slice_rewrites_the_header(tmp_path):
    src = tmp_path / "train.txt"
    src.write_text("5 10 7\n1 0:1\n\n2 1:1\n3 2:1\n4 3:1\n5 4:1\n")
    dst = tmp_path / "slice" / "train.txt"
    assert reproduce.write_slice(src, dst, 3, "xc") == 3
    assert dst.read_text() == "3 10 7\n1 0:1\n2 1:1\n3 2:1\n"
    assert reproduce.write_slice(src, dst, 3, "xc") == 3  # up to date: not rewritten


def test_synthetic_multiclass_stand_in_is_vw_and_passes_the_check(tmp_path):
    cfg = dataclasses.replace(
        config.DATASETS["odp"], n_classes=40, n_features=60, data_dir=str(tmp_path)
    )
    files = reproduce.write_synthetic(cfg, FACTS["odp"], tmp_path, (30, 10), print)
    first = files["train"].read_text().splitlines()[0]
    assert " | " in first and "," not in first.split(" | ")[0]  # one label per row
    cfg = dataclasses.replace(cfg, train_file=str(files["train"]), test_file=str(files["test"]))
    known = dataclasses.replace(FACTS["odp"], n_classes=40, n_features=60)
    assert len(reproduce.check_downloads(cfg, known)) == 2


@pytest.mark.slow
def test_quick_synthetic_end_to_end(tmp_path):
    """The chain on a stand-in shaped like wiki10_31k, shrunk through --set so that CI runs it fast."""
    small = ["--set", "n_classes=300", "--set", "n_features=500", "--set", "B=16"]
    small += ["--set", "hidden=(16,)", "--set", "batch_size=50", "--quick-rows", "200,50"]
    done = run(tmp_path, "--dataset", "wiki10_31k", "--quick", "--synthetic", *small)
    assert done.returncode == 0, done.stdout + done.stderr
    for step in ["plan", "data", "preprocess", "train", "evaluate", "report"]:
        assert f"step={step} " in done.stdout
    results = tmp_path / "results"
    out = json.loads((results / "wiki10_31k-quick-synthetic.json").read_text())
    assert out["quick"] and not out["comparable"] and out["config"]["R"] == 2
    assert 0 <= out["metrics"]["P@1"] <= 100 and len(out["train"]["per_repetition_s"]) == 2
    assert out["model"]["checkpoint_bytes"] > 0 and out["model"]["params_per_repetition"] > 0
    dismec = next(r for r in out["references"] if r["method"] == "DiSMEC*")
    assert dismec["P@1"]["reference"] == 85.20
    assert dismec["P@1"]["difference"] == round(out["metrics"]["P@1"] - 85.20, 2)
    page = (results / "wiki10_31k-quick-synthetic.md").read_text()
    assert "not comparable" in page and "| P (repository: hits / k) |" in page
    assert "| DiSMEC* | 85.20 |" in page and "peak host memory" in page

    # Run again: nothing is retrained or re-evaluated.
    again = run(tmp_path, "--dataset", "wiki10_31k", "--quick", "--synthetic", *small)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "step=data synthetic up_to_date" in again.stdout
    assert "step=evaluate up_to_date" in again.stdout


def test_only_experiment_settings_make_a_full_run_incomparable():
    assert reproduce.changed_settings(["threads=2", "eval_group_size=4", "B=8", " lr = 0.1"]) == [
        "B",
        "lr",
    ]
