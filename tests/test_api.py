"""The Python API: fit/predict/evaluate/save/load/export on arrays, through the scripts' own code, so
that the same settings give the same lookups, weights and P@k as preprocess.py/train.py/evaluate.py.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import cli_flags, run_dir_of

import mach
from mach import MACH

REPO = Path(__file__).resolve().parents[1]
# The tiny model of conftest.cli_flags, as API settings.
SETTINGS = dict(
    B=8, R=2, hidden=(16,), epochs=1, batch_size=16, checkpoint_interval_s=0.0, threads=1
)


def test_settings_are_checked_when_the_model_is_made():
    with pytest.raises(ValueError, match="Bee: not a setting; valid settings: B, R,"):
        MACH(Bee=3)
    with pytest.raises(ValueError, match=r"loss='hinge': expected one of softmax, bce"):
        MACH(loss="hinge")
    with pytest.raises(ValueError, match="preset 'nope': expected one of amazon3m"):
        MACH(preset="nope")
    model = MACH(preset="delicious", R=4)
    assert model.get_params() == {"preset": "delicious", "work_dir": None, "verbose": True, "R": 4}
    assert model.set_params(R=8, verbose=False) is model
    assert model.get_params()["R"] == 8 and model.verbose is False
    with pytest.raises(ValueError, match="not fitted"):
        model.predict(sp.csr_matrix((1, 500)))


def test_arrays_are_checked_with_a_clear_error(tiny_files):
    X, Y = mach.read_xc(tiny_files["train"])
    model = MACH(**SETTINGS)
    for bad_X, bad_Y, message in [
        (X, Y[:5], r"Y has shape \(5, 50\); expected \[n_rows=64, K\]"),
        (X, [[1]] * 63, "Y has 63 rows of labels; X has 64 rows"),
        (X, [[1, -2]] * 64, "label id -2 in Y is out of range"),
        (X.astype(np.complex64), Y, "X has dtype complex64; expected real numbers"),
        (X.toarray()[0], Y, "X must be a 2-D"),
        (X, None, "Y is missing"),
    ]:
        with pytest.raises(ValueError, match=message):
            model.fit(bad_X, bad_Y)
    with pytest.raises(
        ValueError, match="label id 50 in Y is out of range; expected 0 <= label < K=50"
    ):
        MACH(**SETTINGS, n_classes=50).fit(X, [[50]] * 64)
    nan = X.copy()
    nan.data[0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.fit(nan, Y)


@pytest.mark.slow
def test_api_equals_the_scripts_and_saves_loads_and_exports(tiny_files, tmp_path, capsys):
    # The scripts, as a user runs them.
    work = tmp_path / "scripts"
    flags = cli_flags(tiny_files, "tinyapi", work, threads=1)
    for script in ["preprocess.py", "train.py", "evaluate.py"]:
        done = subprocess.run(
            [sys.executable, str(REPO / script), *flags],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
    run_dir = run_dir_of(work, "tinyapi")
    scripts_metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]

    # The API on the same rows, read into arrays.
    X, Y = mach.read_xc(tiny_files["train"])
    X_test, Y_test = mach.read_xc(tiny_files["test"])
    model = MACH(work_dir=tmp_path / "api", **SETTINGS)
    assert model.fit(X, Y) is model
    assert "epoch=1/1 loss=" in capsys.readouterr().out  # progress on the way
    cfg = model.config_
    assert cfg.run_dir().name == run_dir.name  # named by the same settings
    for r in range(2):
        script_lookup = run_dir.parent / "lookups" / f"label_r{r:02d}.npy"
        assert cfg.label_lookup_path(r).read_bytes() == script_lookup.read_bytes()
        api_weights = np.load(cfg.ckpt_dir(r) / "weights" / "epoch-001.npz")
        script_weights = np.load(run_dir / "ckpt" / f"r{r:02d}" / "weights" / "epoch-001.npz")
        for name in api_weights.files:
            np.testing.assert_array_equal(api_weights[name], script_weights[name])
    metrics = model.evaluate(X_test, Y_test)
    assert metrics == scripts_metrics

    # Label lists and a file path are the same data as the indicator.
    lists = [list(Y.indices[Y.indptr[i] : Y.indptr[i + 1]]) for i in range(Y.shape[0])]
    assert model.evaluate(X_test, [list(r.indices) for r in Y_test]) == metrics
    labels, scores = model.predict(X_test, k=3)
    assert labels.shape == scores.shape == (32, 3) and labels.dtype == np.int64
    again = MACH(work_dir=tmp_path / "again", **SETTINGS, verbose=False).fit(X, lists)
    np.testing.assert_array_equal(again.predict(X_test, k=3)[0], labels)
    from_file = MACH(work_dir=tmp_path / "file", **SETTINGS, verbose=False).fit(tiny_files["train"])
    np.testing.assert_array_equal(from_file.predict(X_test, k=3)[0], labels)

    # Saved, loaded elsewhere, exported: the same answers; predict.py reads the saved model too.
    saved = model.save(tmp_path / "saved")
    loaded = mach.load(tmp_path / "saved")
    np.testing.assert_array_equal(loaded.predict(X_test, k=3)[0], labels)
    assert loaded.evaluate(X_test, Y_test) == metrics
    done = subprocess.run(
        [sys.executable, str(REPO / "predict.py"), "--model", str(saved), "--top-k", "3",
         "--input", str(tiny_files["test"])],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["labels"] for line in done.stdout.splitlines()] == labels.tolist()
    version = loaded.export(tmp_path / "serving")
    assert (version / "saved_model.pb").is_file()
    with pytest.raises(ValueError, match="exists"):
        model.save(tmp_path / "saved")


@pytest.mark.slow
def test_the_readme_example_runs(tmp_path):
    """README's first Python code block trains on the bundled Delicious data and prints P@1/3/5."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", readme, re.S)
    assert block, "README.md has no python code block"
    done = subprocess.run(
        [sys.executable, "-c", block[1]], capture_output=True, text=True, timeout=900, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    printed = [line for line in done.stdout.splitlines() if re.search(r"P@1.*P@3.*P@5", line)]
    assert len(printed) == 1, done.stdout[-3000:]
    assert (
        float(re.findall(r"P@1'?: ?([0-9.]+)", printed[0])[0]) > 50
    )  # Delicious: far above chance
    assert (tmp_path / "models" / "delicious-r4-serving" / "1" / "saved_model.pb").is_file()
