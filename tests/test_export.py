"""export.py and mach.serving.export: the in-graph merges against the NumPy specs, the text parser, and the
SavedModel of a tiny trained model against evaluate.py's merge, loaded where no project code is."""

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import cli_flags, evaluate_topk, format_rows, load_trained, make_rows

import config
import export as export_script
from mach import hashing, merge, merge_graph
from mach.cli import add_config_flags, config_from_args
from mach.data.formats import iter_rows
from mach.data.prepare import load_data_manifest, with_data_sizes
from mach.merge import DEFAULT_BUCKETS, Merge
from mach.serving import export

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = dict(rtol=1e-5, atol=1e-6)  # float32 sums of the same logits, computed by other ops

# Run with `python -I` (no user site, no PYTHONPATH) from a directory outside the repository: the
# project's own paths (the editable install's src/) leave sys.path too, so nothing of it can load.
CLEAN_LOADER = """
import importlib.util, json, sys
sys.path[:] = [p for p in sys.path if p.rstrip("/") not in ({repo!r}, {src!r})]
assert importlib.util.find_spec("mach") is None and importlib.util.find_spec("config") is None
import numpy as np
import tensorflow as tf

requests = json.load(open(sys.argv[1]))
out = {{}}
for name, req in requests.items():
    model = tf.saved_model.load(req["model"])
    rows = model.signatures["serving_default"](
        indices=tf.constant(req["indices"], tf.int64),
        values=tf.constant(req["values"], tf.float32),
        row_splits=tf.constant(req["row_splits"], tf.int64),
    )
    lines = model.signatures["predict_lines"](lines=tf.constant(req["lines"]))
    out[name] = {{
        "metadata": json.loads(model.metadata.numpy()),
        "labels": rows["labels"].numpy().tolist(),
        "scores": rows["scores"].numpy().tolist(),
        "line_labels": lines["labels"].numpy().tolist(),
        "line_scores": lines["scores"].numpy().tolist(),
    }}
json.dump(out, open(sys.argv[2], "w"))
"""


def random_case(rng, batch, R, B, K, integer_logits):
    """Logits [batch, R, B] (small integers make many ties), lookups [R, K] and their CSR inverses."""
    if integer_logits:
        logits = rng.integers(-3, 3, (batch, R, B)).astype(np.float32)
    else:
        logits = rng.normal(size=(batch, R, B)).astype(np.float32)
    label_to_bucket = np.stack([rng.integers(0, B, K).astype(np.int32) for _ in range(R)])
    inverse = [hashing.invert_lookup(label_to_bucket[r], B) for r in range(R)]
    offsets, labels = np.stack([o for o, _ in inverse]), np.stack([b for _, b in inverse])
    return logits, label_to_bucket, offsets, labels


@pytest.mark.parametrize(
    "batch,R,B,K,k,integer_logits",
    [
        (1, 3, 16, 50, 5, True),
        (7, 4, 8, 50, 5, True),
        (9, 2, 32, 300, 10, False),
        (5, 1, 4, 6, 6, True),
    ],
)
def test_exact_topk_equals_the_numpy_spec(batch, R, B, K, k, integer_logits):
    rng = np.random.default_rng(batch * 100 + R)
    logits, label_to_bucket, _, _ = random_case(rng, batch, R, B, K, integer_logits)
    want_labels, want_scores = merge.merge_topk_numpy(logits, label_to_bucket, k)
    lookups = [tf.constant(x) for x in label_to_bucket]
    eager = merge_graph.exact_topk([tf.constant(logits[:, r]) for r in range(R)], lookups, k)
    np.testing.assert_array_equal(eager[0].numpy(), want_labels)
    np.testing.assert_array_equal(eager[1].numpy(), want_scores)  # same float32 adds, same order
    # In a graph, grappler may regroup the adds (AddN): the same labels, scores to the last bit or so.
    graph = tf.function(lambda x: merge_graph.exact_topk(tf.unstack(x, axis=1), lookups, k))
    labels, scores = graph(tf.constant(logits))
    np.testing.assert_array_equal(labels.numpy(), want_labels)
    np.testing.assert_allclose(scores.numpy(), want_scores, **TOLERANCE)


@pytest.mark.parametrize(
    "batch,R,B,K,k,m,min_freq,integer_logits",
    [
        (7, 3, 16, 50, 5, 2, 2, True),
        (5, 4, 16, 20, 5, 1, 3, True),  # buckets of ~1 label: m doubles until k labels are found
        (1, 2, 16, 20, 5, 1, 1, False),  # batch of 1, widening
        (9, 2, 8, 50, 5, 1, 1, False),
        (4, 5, 32, 300, 10, 3, 2, False),
        (6, 3, 8, 40, 7, 8, 3, True),  # m = B: the exact merge
    ],
)
def test_candidate_topk_equals_the_numpy_spec(batch, R, B, K, k, m, min_freq, integer_logits):
    rng = np.random.default_rng(batch * 1000 + K)
    logits, label_to_bucket, offsets, bucket_labels = random_case(
        rng, batch, R, B, K, integer_logits
    )
    want_labels, want_scores = merge.merge_candidates_numpy(
        logits, label_to_bucket, offsets, bucket_labels, k, m, min_freq
    )
    flat_offsets, flat_labels = export.global_inverse(offsets, bucket_labels)
    fn = tf.function(
        lambda x: merge_graph.candidate_topk(
            x,
            [tf.constant(v) for v in label_to_bucket],
            tf.constant(flat_offsets),
            tf.constant(flat_labels),
            k,
            m,
            min_freq,
        )
    )
    labels, scores = fn(tf.constant(logits))
    np.testing.assert_array_equal(labels.numpy(), want_labels)
    np.testing.assert_allclose(scores.numpy(), want_scores, **TOLERANCE)


def test_top_k_ranks_equal_values_by_lower_index():
    """The merge's tie rule rests on tf.math.top_k returning the lower index first among equals."""
    rng = np.random.default_rng(0)
    values = rng.integers(0, 4, (3, 20_000)).astype(np.float32)  # thousands of ties per value
    top = tf.math.top_k(values, 50)
    for row, indices in zip(values, top.indices.numpy()):
        want = np.lexsort((np.arange(len(row)), -row))[:50]
        np.testing.assert_array_equal(indices, want)


def test_choose_merge_uses_the_measured_threshold():
    assert export.choose_merge(export.EXACT_MERGE_MAX_K, 128, 16, "auto") == Merge("exact")
    big = export.choose_merge(export.EXACT_MERGE_MAX_K + 1, 1000, 16, "auto")
    assert big == Merge("candidates") and big.m(1000) == DEFAULT_BUCKETS["candidates"]
    with pytest.raises(ValueError, match="--merge-buckets 9: expected at most B=8"):
        export.choose_merge(10, 8, 2, Merge("candidates", 9))
    with pytest.raises(ValueError, match="export takes exact or candidates"):
        export.choose_merge(10, 8, 2, Merge("approx"))


def test_parse_lines_reads_the_training_formats():
    lines = tf.constant(["1,2 3:1 4:0.5", " 7:2", "5", "", "0:1e-1 2:3", "9 1:-2.5"])
    indices, values, row_splits = export.parse_lines(lines, "xc", 10)
    assert row_splits.numpy().tolist() == [0, 2, 3, 3, 3, 5, 6]
    assert indices.numpy().tolist() == [3, 4, 7, 0, 2, 1]
    np.testing.assert_allclose(values.numpy(), [1, 0.5, 2, 0.1, 3, -2.5])
    indices, _, _ = export.parse_lines(tf.constant(["3 1:1 10:2"]), "libsvm", 10)
    assert indices.numpy().tolist() == [0, 9]  # libsvm indices are 1-based


@pytest.mark.parametrize("bad", ["1,2 3:x", "a 3:1", "1 3", "1 3:1:2", "1,,2 3:1", "1 3:nan"])
def test_parse_lines_names_the_bad_line(bad):
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="(?s)line index.*2.*" + re.escape(bad)
    ):
        export.parse_lines(tf.constant(["1 0:1", " 2:1", bad]), "xc", 10)


def config_for(files, work, **overrides):
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    args = parser.parse_args(cli_flags(files, "tinyexp", work, **overrides))
    cfg = config_from_args(args, config.BASE, config.DATASETS)
    return with_data_sizes(cfg, load_data_manifest(cfg))


def run_script(script, files, work, *flags, **overrides):
    cmd = [sys.executable, str(REPO / script), *cli_flags(files, "tinyexp", work, **overrides)]
    done = subprocess.run(
        [*cmd, *flags], capture_output=True, text=True, timeout=300, cwd=work.parent
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny dataset, trained twice (R=2, 1 epoch): plain and with feature hashing (16 slots)."""
    root = tmp_path_factory.mktemp("export")
    files = {"train": root / "train.txt", "test": root / "test.txt"}
    files["train"].write_text(format_rows(make_rows(64, seed=1)))
    files["test"].write_text(format_rows(make_rows(32, seed=2)))
    work = root / "work"
    for overrides in [{}, {"feat_hash_dim": 16}]:
        run_script("preprocess.py", files, work, **overrides)
        run_script("train.py", files, work, **overrides)
    return files, work


def reference(cfg, merge=None) -> dict:
    """evaluate.py's top-k of the test split: its forward pass and merge (the compiled kernel)."""
    pred = evaluate_topk(cfg, merge)
    return {"labels": pred["topk"][cfg.R], "scores": pred["scores"][cfg.R]}


@pytest.mark.slow
def test_savedmodel_equals_evaluate_exact_candidates_and_hashing(trained, tmp_path):
    files, work = trained
    models = tmp_path / "models"
    # Through the script as a user runs it, then in-process for the other variants.
    run_script("export.py", files, work, "--out", str(models / "exact"))
    flags = cli_flags(files, "tinyexp", work)
    assert (
        export_script.main(
            [*flags, "--out", str(models / "cand"), "--merge", "candidates", "--merge-buckets", "2"]
        )
        == 0
    )
    hashed = cli_flags(files, "tinyexp", work, feat_hash_dim=16)
    assert export_script.main([*hashed, "--out", str(models / "hashed")]) == 0

    rows = list(iter_rows(files["test"], 30, 50))
    lines = [line for line in files["test"].read_text().splitlines()[1:]]
    request = {
        "indices": np.concatenate([r.feat_idx for r in rows]).tolist(),
        "values": np.concatenate([r.feat_val for r in rows]).tolist(),
        "row_splits": np.cumsum([0] + [len(r.feat_idx) for r in rows]).tolist(),
        "lines": lines,
    }
    names = ["exact", "cand", "hashed"]
    requests = {name: {**request, "model": str(models / name / "1")} for name in names}
    (tmp_path / "requests.json").write_text(json.dumps(requests))
    loader = CLEAN_LOADER.format(repo=str(REPO), src=str(REPO / "src"))
    (tmp_path / "loader.py").write_text(loader)
    done = subprocess.run(
        [sys.executable, "-I", "loader.py", "requests.json", "answers.json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    answers = json.loads((tmp_path / "answers.json").read_text())

    cfg = config_for(files, work)
    want = {
        "exact": reference(cfg),
        "cand": reference(cfg, Merge("candidates", 2, 2)),
        "hashed": reference(config_for(files, work, feat_hash_dim=16)),
    }
    assert answers["exact"]["metadata"]["merge"] == {"kind": "exact", "name": "exact"}
    assert answers["cand"]["metadata"]["merge"] == {
        "kind": "candidates",
        "name": "candidates-m2-f2",
        "m": 2,
        "min_freq": 2,
    }
    assert answers["hashed"]["metadata"]["feat_hash_dim"] == 16
    for name in names:
        got = answers[name]
        np.testing.assert_array_equal(got["labels"], want[name]["labels"], err_msg=name)
        np.testing.assert_allclose(got["scores"], want[name]["scores"], **TOLERANCE)
        np.testing.assert_array_equal(got["line_labels"], got["labels"], err_msg=name)
        np.testing.assert_array_equal(got["line_scores"], got["scores"], err_msg=name)
    assert json.loads((models / "exact" / "1" / "assets.extra" / "mach.json").read_text())["k"] == 5


@pytest.mark.slow
def test_probs_merge_equals_evaluate(trained):
    """The paper's probability estimate (score="probs"), from the same weights."""
    files, work = trained
    cfg = config_for(files, work, score="probs")
    module = export.build(cfg, load_trained(cfg), 5, Merge(), None, cfg.epochs)
    rows = list(iter_rows(files["test"], 30, 50))
    out = module.serve(
        tf.constant(np.concatenate([r.feat_idx for r in rows])),
        tf.constant(np.concatenate([r.feat_val for r in rows])),
        tf.constant(np.cumsum([0] + [len(r.feat_idx) for r in rows]), tf.int64),
    )
    want = reference(cfg)
    np.testing.assert_array_equal(out["labels"].numpy(), want["labels"])
    np.testing.assert_allclose(out["scores"].numpy(), want["scores"], **TOLERANCE)


@pytest.mark.slow
def test_bfloat16_export_holds_half_the_weight_bytes_and_serves_the_rounded_weights(
    trained, tmp_path
):
    """--precision bfloat16 stores every weight matrix as bfloat16 in the SavedModel, and serves what
    a float32 model of the same weights rounded to bfloat16 serves."""
    from mach.serving.forward import from_bfloat16, to_bfloat16

    files, work = trained
    cfg = config_for(files, work)
    flags = [*cli_flags(files, "tinyexp", work), "--out", str(tmp_path / "m")]
    assert export_script.main([*flags, "--precision", "bfloat16"]) == 0
    assert export_script.main(flags) == 0  # version 2: float32
    half, full = (tf.saved_model.load(str(tmp_path / "m" / v)) for v in ("1", "2"))
    assert json.loads(half.metadata.numpy())["weights_dtype"] == "bfloat16"
    for a, b in zip(half.nets, full.nets):
        assert [w.dtype for w in a.weights_] == [tf.bfloat16] * len(a.weights_)
        assert [w.dtype for w in b.weights_] == [tf.float32] * len(b.weights_)
        assert sum(w.numpy().nbytes for w in a.weights_) * 2 == sum(
            w.numpy().nbytes for w in b.weights_
        )

    reps = load_trained(cfg)
    for rep in reps:  # the same networks, their weights rounded as bfloat16 stores them
        for w in rep.model.weights_:
            w.assign(from_bfloat16(to_bfloat16(w.numpy())))
    rounded = export.build(cfg, reps, 5, Merge(), None, cfg.epochs)
    rows = list(iter_rows(files["test"], 30, 50))
    request = (
        tf.constant(np.concatenate([r.feat_idx for r in rows])),
        tf.constant(np.concatenate([r.feat_val for r in rows])),
        tf.constant(np.cumsum([0] + [len(r.feat_idx) for r in rows]), tf.int64),
    )
    got, want = half.signatures["serving_default"](
        indices=request[0], values=request[1], row_splits=request[2]
    ), rounded.serve(*request)
    np.testing.assert_array_equal(got["labels"].numpy(), want["labels"].numpy())
    np.testing.assert_allclose(got["scores"].numpy(), want["scores"].numpy(), **TOLERANCE)


@pytest.mark.slow
def test_versions_and_saved_model_cli(trained, tmp_path, capsys):
    files, work = trained
    flags = [*cli_flags(files, "tinyexp", work), "--out", str(tmp_path / "m")]
    assert export_script.main(flags) == 0
    assert ".tmp-" not in capsys.readouterr().out  # no temporary directory's name in the log
    assert export_script.main(flags) == 0  # the next free version
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1", "2"]
    assert export_script.main([*flags, "--version", "2"]) == 2  # exists: a user error
    cli = Path(sys.executable).with_name("saved_model_cli")
    shown = subprocess.run(
        [str(cli), "show", "--dir", str(tmp_path / "m" / "2"), "--all"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert shown.returncode == 0, shown.stderr
    for signature in ["serving_default", "predict_lines"]:
        assert f"signature_def['{signature}']" in shown.stdout
    for name in ["indices", "values", "row_splits", "lines", "labels", "scores"]:
        assert f"['{name}']" in shown.stdout


@pytest.mark.slow
def test_serving_default_refuses_bad_rows(trained, tmp_path):
    files, work = trained
    cfg = config_for(files, work)
    module = export.build(cfg, load_trained(cfg, 2), 5, Merge(), None, cfg.epochs)
    with pytest.raises(tf.errors.InvalidArgumentError, match="n_features=30"):
        module.serve(
            tf.constant([3, 30], tf.int64), tf.constant([1.0, 1.0]), tf.constant([0, 2], tf.int64)
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match="finite"):
        module.serve(
            tf.constant([3], tf.int64), tf.constant([np.inf]), tf.constant([0, 1], tf.int64)
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match="batch \\+ 1 >= 1"):
        module.serve(tf.zeros([0], tf.int64), tf.zeros([0]), tf.zeros([0], tf.int64))
    empty = module.serve(tf.zeros([0], tf.int64), tf.zeros([0]), tf.constant([0], tf.int64))
    assert empty["labels"].shape == (0, 5)  # an empty batch is answered, not sent to the networks


@pytest.mark.parametrize("kind", ["exact", "candidates"])
def test_exported_merge_adds_each_repetitions_logits_through_its_own_lookup(tmp_path, kind):
    """The SavedModel's graph: R networks -> their logits -> each through its own lookup -> top-k,
    equal to the merge's NumPy specification on the same logits."""
    from conftest import fake_run, quiet, random_rows

    from mach import evaluation
    from mach.data.prepare import load_inverse_lookups
    from mach.merge import merge_candidates_numpy, merge_topk_numpy
    from mach.serving.forward import Networks

    cfg, saved = fake_run(tmp_path, R=3, epochs=1)
    reps = evaluation.load_repetitions(cfg, range(3), 1, "DATA", quiet)
    label_to_bucket = np.stack([rep.label_to_bucket for rep in reps])
    inverse = load_inverse_lookups(cfg, label_to_bucket) if kind == "candidates" else None
    module = export.build(cfg, reps, 5, Merge(kind, 2, 2), inverse, 1)
    rows = random_rows(2, 12)
    out = module.serve(*(tf.constant(a) for a in rows))
    logits = Networks([saved[r, 1] for r in range(3)], None, cfg.normalize).logits_matmul(*rows)
    if kind == "exact":
        want, _ = merge_topk_numpy(logits, label_to_bucket, 5)
    else:
        want, _ = merge_candidates_numpy(logits, label_to_bucket, *inverse, 5, 2, 2)
    np.testing.assert_array_equal(out["labels"].numpy(), want)
