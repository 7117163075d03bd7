"""Grouped, placed evaluation equals the all-at-once one bit for bit; --epoch; metrics files named by
what they measure; resources in metrics.json."""

import dataclasses
import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_flags, format_rows, make_rows, quiet, run_dir_of

import config

REPO = Path(__file__).resolve().parents[1]
R = 4


# The tests that use this fixture train, so they are marked slow (left out by `make test-fast`).
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny data, preprocessed and trained in-process: R=4, 2 epochs, both checkpoints kept."""
    import preprocess
    import train

    root = tmp_path_factory.mktemp("evaluation")
    files = {"train": root / "train.txt", "test": root / "test.txt.gz"}
    files["train"].write_text(format_rows(make_rows(64, seed=1)))
    with gzip.open(files["test"], "wt") as f:
        f.write(format_rows(make_rows(40, seed=2)))  # 40 rows: batches of 16, 16 and 8
    flags = cli_flags(files, "tinyeval", root / "work", R=R, epochs=2, threads=1)
    assert preprocess.main(flags) == 0 and train.main(flags) == 0
    run_dir = run_dir_of(root / "work", "tinyeval")
    return flags, run_dir


def config_of(flags):
    import argparse

    from mach.cli import add_config_flags, config_from_args
    from mach.data.prepare import load_data_manifest, with_data_sizes

    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    cfg = config_from_args(parser.parse_args(flags), config.BASE, config.DATASETS)
    manifest = load_data_manifest(cfg)
    return with_data_sizes(cfg, manifest), manifest


def assert_same_predictions(got, want, R_values):
    for Rv in R_values:
        np.testing.assert_array_equal(got["topk"][Rv], want["topk"][Rv])
        np.testing.assert_array_equal(
            got["scores"][Rv].view(np.int32), want["scores"][Rv].view(np.int32)
        )
    assert len(got["true_labels"]) == len(want["true_labels"])
    for a, b in zip(got["true_labels"], want["true_labels"]):
        np.testing.assert_array_equal(a, b)


def test_repetition_groups():
    from mach.evaluation import repetition_groups

    assert repetition_groups(4, 0) == [range(4)]
    assert repetition_groups(4, 9) == [range(4)]
    assert repetition_groups(5, 2) == [range(2), range(2, 4), range(4, 5)]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["exact", "candidates", "approx"])
def test_groups_equal_all_at_once(trained, kind, monkeypatch):
    """Groups of 3 + 1 and of 1: the spill files give the one-group path's labels and scores."""
    from mach import evaluation
    from mach.merge import Merge

    # The budgets below are a few rows' logits: nothing else is counted against them.
    monkeypatch.setattr(evaluation, "held_besides_logits", lambda *args, **kw: {})

    cfg, manifest = config_of(trained[0])
    R_values = [1, 2, 4]

    def run(group, budget_gb=4.0, log=quiet):
        c = dataclasses.replace(
            cfg, eval_group_size=group, eval_budget_gb=budget_gb, eval_batch_size=16
        )
        return evaluation.grouped_topk(
            c, R, manifest, R_values, "compiled", log, Merge(kind, 2, 2), cfg.epochs
        )

    plain = run(0)
    assert plain["groups"] == 1 and plain["topk"][4].shape == (40, 5)
    for group in (3, 1):
        got = run(group)
        assert got["groups"] == -(-R // group) and got["n_params"] == plain["n_params"]
        assert_same_predictions(got, plain, R_values)
    # A budget for 16 rows' logits (R x B x 4 bytes a row): chunks of 16, 16 and 8 rows.
    row_bytes = R * cfg.B * 4
    # In memory a merge step holds its rows' logits three times: 16.5 / 3 -> merge steps of 5 rows.
    lines = []
    chunked = run(1, budget_gb=16.5 * row_bytes / 2**30, log=lines.append)
    assert chunked["chunk_rows"] == 16 and chunked["spill_bytes"] == 16 * row_bytes
    # 3 chunks of 4 groups, in alternating order: the last group of a chunk is not loaded again.
    assert sum(line.startswith("loaded repetitions") for line in lines) == 3 * (4 - 1) + 1
    assert chunked["merge_rows"] == 5
    assert_same_predictions(chunked, plain, R_values)
    with pytest.raises(ValueError, match="lower eval_batch_size or eval_group_size"):
        run(3, budget_gb=16.5 * row_bytes / 2**30)  # 16 rows x 3 repetitions, twice: 96 > 66
    with pytest.raises(ValueError, match="less than one batch of eval_batch_size=16"):
        run(1, budget_gb=15 * row_bytes / 2**30)


def test_memory_besides_the_logits_comes_off_the_budget():
    """The process, one group's networks and the lookups are counted against eval_budget_gb: what is
    left sizes the merge steps, and a forward step that does not fit is refused naming them."""
    from mach import evaluation
    from mach.config import Config
    from mach.merge import Merge

    cfg = dataclasses.replace(
        Config(), n_features=100, hidden=(8,), B=10, n_classes=1000, eval_batch_size=4
    )
    held = evaluation.held_besides_logits(cfg, 6, 2, Merge())
    params = 100 * 8 + 8 + 8 * 10 + 10
    assert held["networks"] == 4 * params * 4  # two networks plus one on its way in, twice
    assert held["lookups"] == 6 * 1000 * 4 + 2 * 2 * 1000 * 4
    assert held["process"] > 0
    assert evaluation.held_besides_logits(cfg, 6, 2, Merge(), on_host=False)["networks"] == 0
    candidates = evaluation.held_besides_logits(cfg, 6, 2, Merge("candidates", 2, 2))
    assert candidates["lookups"] > held["lookups"]

    row_bytes, GiB = 6 * 10 * 4, 2**30
    fixed = {"process": 1000, "networks": 500}
    tight = dataclasses.replace(cfg, eval_budget_gb=(1500 + 3 * 3 * row_bytes) / GiB)
    assert evaluation.merge_rows(tight, 6, 2, fixed) == 3  # 3 rows' logits, three times
    assert evaluation.merge_rows(tight, 6, 2) == 4  # nothing held besides: eval_batch_size
    with pytest.raises(ValueError, match=r"besides process .* networks .*: lower eval_batch_size"):
        evaluation.merge_rows(dataclasses.replace(cfg, eval_budget_gb=1800 / GiB), 6, 2, fixed)


def test_the_largest_group_that_fits_the_budget(monkeypatch):
    from mach import evaluation
    from mach.config import Config
    from mach.merge import Merge

    monkeypatch.setattr(evaluation, "resident_bytes", lambda: 10_000)
    cfg = dataclasses.replace(
        Config(), n_features=100, hidden=(8,), B=10, n_classes=1000, eval_batch_size=4
    )
    params, K, b = cfg.params_per_repetition(), 1000, 4

    def need(g):  # the process, g + 2 networks, the lookups and a forward step's logits twice
        return 10_000 + (g + 2) * params * 4 + 6 * K * 4 + 2 * g * K * 4 + 2 * b * g * 10 * 4

    for g in (1, 3, 6):
        fits = dataclasses.replace(cfg, eval_budget_gb=need(g) / 2**30)
        assert evaluation.fitting_group_size(fits, 6, Merge()) == g
    assert (
        evaluation.fitting_group_size(dataclasses.replace(cfg, eval_budget_gb=1e-6), 6, Merge())
        == 0
    )


@pytest.mark.slow
@pytest.mark.parametrize("score", ["logits", "probs"])
def test_the_merge_on_the_device_equals_the_kernel(trained, score):
    """The exact merge in the graph (merge_device=device, as on a GPU; forced here on the CPU) gives
    the compiled kernel's labels and scores on the same logits."""
    from mach import evaluation
    from mach.merge import Merge

    cfg, manifest = config_of(trained[0])
    R_values = [1, 2, 4]

    def run(where):
        c = dataclasses.replace(cfg, merge_device=where, score=score)
        return evaluation.grouped_topk(c, R, manifest, R_values, "compiled", quiet, Merge(), 2)

    host, device = run("host"), run("device")
    assert device["merged_on"].endswith("CPU:0") and "merged_on" not in host
    for Rv in R_values:
        np.testing.assert_array_equal(device["topk"][Rv], host["topk"][Rv])
        np.testing.assert_allclose(device["scores"][Rv], host["scores"][Rv], rtol=1e-6, atol=1e-7)
    assert not list(trained[1].glob(".eval-logits*"))  # the spill files are gone


LOGICAL_CPUS = r"""
import dataclasses, json, sys
import numpy as np
import tensorflow as tf

# Four logical CPU devices stand in for four GPUs; they must exist before TensorFlow initialises.
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 4)
sys.path.insert(0, sys.argv[1])
import evaluate
from test_evaluation import R, config_of
from mach import devices, evaluation
from mach.merge import Merge

flags = sys.argv[2:]
cfg, manifest = config_of(flags)
devices.configure_devices(cfg, print)
out = {}
plain = None
for group, per_device in [(0, 0), (2, 1), (0, 1), (3, 2), (0, 4)]:
    logs = []
    c = dataclasses.replace(cfg, eval_group_size=group, R_per_device=per_device)
    placed = []
    real = evaluation.load_repetition
    def spy(*args, **kwargs):
        rep = real(*args, **kwargs)
        placed.append(rep.device[-5:])
        return rep
    evaluation.load_repetition = spy
    got = evaluation.grouped_topk(c, R, manifest, [2, R], "compiled", logs.append, Merge(), cfg.epochs)
    evaluation.load_repetition = real
    plain = plain or got
    same = all(
        np.array_equal(got["topk"][Rv], plain["topk"][Rv])
        and np.array_equal(got["scores"][Rv].view(np.int32), plain["scores"][Rv].view(np.int32))
        for Rv in (2, R)
    )
    out[f"{group},{per_device}"] = {"same": same, "placed": placed, "devices": got["devices"]}
out["rc"] = evaluate.main([*flags, "--set", "eval_group_size=2", "--set", "R_per_device=1"])
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_placed_on_logical_cpus_equals_plain(trained):
    """R=4 over 4 logical CPU devices: placement happens, and the predictions do not change."""
    import evaluate

    flags, run_dir = trained
    assert evaluate.main(flags) == 0
    plain = json.loads((run_dir / "metrics.json").read_text())
    done = subprocess.run(  # noqa: PLW1510 (the return code is asserted below)
        [sys.executable, "-c", LOGICAL_CPUS, str(REPO / "tests"), *flags],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ")[1])
    assert all(run["same"] for key, run in result.items() if key != "rc"), result
    assert result["0,0"]["placed"] == ["CPU:0"] * 4
    assert result["2,1"]["placed"] == ["CPU:0", "CPU:1", "CPU:0", "CPU:1"]
    assert result["0,1"]["placed"] == ["CPU:0", "CPU:1", "CPU:2", "CPU:3"]
    assert result["3,2"]["placed"] == ["CPU:0", "CPU:0", "CPU:1", "CPU:0"]
    assert len(result["0,1"]["devices"]) == 4 and len(result["3,2"]["devices"]) == 2
    assert result["rc"] == 0
    grouped = json.loads((run_dir / "metrics.json").read_text())
    assert grouped["metrics"] == plain["metrics"]
    assert grouped["placement"]["groups"] == 2 and len(grouped["placement"]["devices"]) == 2


@pytest.mark.slow
def test_too_few_devices_for_R_per_device(trained, capsys):
    import evaluate

    assert evaluate.main([*trained[0], "--set", "R_per_device=1"]) == 2
    assert "only 1 are visible" in capsys.readouterr().err


@pytest.mark.slow
def test_every_evaluation_writes_its_own_metrics(trained, capsys):
    """Any epoch is there by default; R, score, merge and epoch name the file; none replaces another."""
    import evaluate

    flags, run_dir = trained
    assert evaluate.main(flags) == 0
    latest = json.loads((run_dir / "metrics.json").read_text())
    assert latest["epoch"] == 2 and latest["epochs"] == 2
    assert evaluate.main([*flags, "--epoch", "1"]) == 0
    assert "epoch=1 (epoch 1 of 2)" in capsys.readouterr().out
    first = json.loads((run_dir / "metrics-epoch1.json").read_text())
    assert first["epoch"] == 1
    from mach import weights

    ckpt = run_dir / "ckpt" / "r00"
    assert not np.array_equal(
        weights.load_epoch(ckpt, 1, "")[0], weights.load_epoch(ckpt, 2, "")[0]
    )
    for extra, name in [
        (
            ["--epoch", "1", "--merge", "candidates", "--merge-buckets", "2"],
            "candidates-m2-f2-epoch1",
        ),
        (["--R", "2"], "R2"),
        (["--set", "score=probs"], "probs"),
        (["--set", "merge=probs"], "probs"),  # the field's old name, with a note
    ]:
        assert evaluate.main([*flags, *extra]) == 0
        assert (run_dir / f"metrics-{name}.json").is_file()
    assert json.loads((run_dir / "metrics.json").read_text()) == latest  # never overwritten
    assert evaluate.main([*flags, "--epoch", "2"]) == 0  # the last epoch is metrics.json itself
    assert json.loads((run_dir / "metrics.json").read_text())["metrics"] == latest["metrics"]
    assert evaluate.main([*flags, "--epoch", "7"]) == 2
    err = capsys.readouterr().err
    assert (
        "repetition r=0 of " in err
        and "has no weights of epoch 7: it is trained to epoch 2 of 2" in err
    )


@pytest.mark.slow
def test_metrics_report_model_size_and_peak_memory(trained):
    import evaluate

    flags, run_dir = trained
    assert evaluate.main(flags) == 0
    out = json.loads((run_dir / "metrics.json").read_text())
    per_network = 30 * 16 + 16 + 16 * 8 + 8  # D x hidden + bias, hidden x B + bias
    assert out["resources"]["n_params"] == R * per_network
    assert out["resources"]["model_bytes"] == 4 * R * per_network
    assert out["resources"]["peak_host_memory_bytes"] > 10 * 2**20
    assert out["placement"] == {
        "eval_group_size": 0,
        "groups": 1,
        "R_per_device": 0,
        "devices": out["placement"]["devices"],
        "chunk_rows": None,  # one group: nothing is spilled
        "spill_bytes": 0,
        "merge_rows": None,
    }
    # One group: the networks' time, the reading of the rows and the trace, each apart.
    assert all(out["timings"][k] > 0 for k in ("forward_s", "read_s", "trace_s"))


def test_an_epoch_loads_the_weights_of_that_epoch(tmp_path):
    """--epoch N: repetition r's network holds the weights saved after epoch N, not the latest."""
    from conftest import fake_run

    from mach import evaluation
    from mach.weights import resolve_epoch

    cfg, saved = fake_run(tmp_path, epochs=3)
    assert resolve_epoch(cfg, 2, None) == (3, "")
    for epoch in (1, 2, 3):
        rep = evaluation.load_repetition(cfg, 1, epoch, "DATA")
        for got, want in zip(rep.model.arrays(), saved[1, epoch]):
            np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="trained on other data"):
        evaluation.load_repetition(cfg, 1, 1, "OTHER DATA")


def test_evaluation_runs_the_networks_without_dropout(tmp_path):
    """evaluate.py's forward pass (dropout 0.5 in training) equals the plain product, every time."""
    from conftest import fake_run, parsed_rows, random_rows

    from mach import evaluation
    from mach.serving.forward import Networks

    cfg, saved = fake_run(tmp_path, dropout=0.5)
    reps = evaluation.load_repetitions(cfg, range(2), 2, "DATA", quiet)
    forward = evaluation.make_forward(cfg, reps)
    rows = random_rows(1, 9)
    first, second = forward(parsed_rows(*rows)).numpy(), forward(parsed_rows(*rows)).numpy()
    np.testing.assert_array_equal(first, second)
    plain = Networks([saved[r, 2] for r in range(2)], None, cfg.normalize).logits_matmul(*rows)
    np.testing.assert_allclose(first, plain, rtol=1e-5, atol=1e-5)
