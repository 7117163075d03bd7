"""Evaluation: run R trained repetitions over the test rows, merge their bucket scores, score the top-k.

Memory model: g = eval_group_size (0 = R), G = ceil(R / g) groups, n test rows, b = eval_batch_size.
- One group (the default): the R models on their devices plus [b, R, B] float32 logits per step.
  Each batch is merged as soon as its logits exist; nothing goes to disk.
- G > 1 groups: rows in chunks of c rows, c the largest multiple of b whose logits, c*R*B*4 bytes, fit
  eval_budget_gb. Per chunk, one group at a time, each loaded once (the last group of a chunk stays
  loaded as the first of the next: the order alternates): g models plus [b, g, B] float32
  logits per step; each repetition's logits of the chunk go to a spill file of c*B*4 bytes, so the R
  files take at most the budget, in a temporary directory of the run directory (deleted at the end; the page
  cache keeps them in RAM when there is room). The merge then reads [m, R, B] at a time from them,
  m <= b rows such that everything in host memory stays within the budget too: what the process
  holds when evaluation starts, one group's models, the lookups and the logits (held_besides_logits,
  merge_rows). Whatever n, R and B, the spilled logits and the host memory stay within the budget; a
  test set of k chunks loads the G groups k(G - 1) + 1 times.
The merge sees the same logits in the same r order either way, so labels and float32 scores are
bit-identical. Repetition j of a group runs on device j // R_per_device of the visible GPUs (else
the logical CPUs); R_per_device = 0 puts the whole group on the first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import os
import shutil
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from mach import merge_graph, metrics, weights
from mach.data.prepare import damaged_shards, load_inverse_lookups, load_label_counts, load_lookups
from mach.data.tfrecords import PARSED_SPEC, read_batches, rows_to_model_input, tfrecord_files
from mach.devices import check_placement, device_for, peak_memory, placement_devices
from mach.files import remove_dead_leftovers
from mach.identity import check_repetition, data_fingerprint
from mach.merge import Merge, merge_scores
from mach.model import MachNet, csr_input


class TrainedRepetition:
    """Repetition r's trained network and lookups, for inference (on `device` when given)."""

    def __init__(self, cfg, r: int, arrays, label_to_bucket, feature_to_slot, device=None):
        self.r = r
        self.label_to_bucket = label_to_bucket  # [K] int32
        # Weights and lookups live on the device that computes this repetition's logits.
        with tf.device(device) if device else contextlib.nullcontext():
            self.model = MachNet(
                cfg.input_dim(), cfg.hidden, cfg.B, 0.0, cfg.seed, r, trained=arrays
            )
            self.feature_to_slot = None if feature_to_slot is None else tf.constant(feature_to_slot)
            self.lookup_tensor = tf.constant(label_to_bucket)
        self.device = self.model.weights_[0].device


def load_repetition(cfg, r: int, epoch: int, data: str, device=None) -> TrainedRepetition:
    """Repetition r after `epoch`: lookups and identity checked, weights verified."""
    label_to_bucket, feature_to_slot, lookup_sha256 = load_lookups(cfg, r)
    check_repetition(cfg, r, lookup_sha256, data, "evaluate")
    fix = (
        f"retrain repetition {r} with `python train.py --dataset {cfg.name} --repetitions {r} "
        "--overwrite` and the same --set options"
    )
    arrays = weights.load_epoch(cfg.ckpt_dir(r), epoch, fix)
    return TrainedRepetition(cfg, r, arrays, label_to_bucket, feature_to_slot, device)


def load_repetitions(
    cfg, rs, epoch: int, data: str, log, devices: list[str] | None = None
) -> list[TrainedRepetition]:
    """Repetitions rs after `epoch`, the j-th on device_for(j, devices, cfg.R_per_device) (TF's
    choice if no devices)."""
    reps = []
    for j, r in enumerate(rs):
        device = None if devices is None else device_for(j, devices, cfg.R_per_device)
        reps.append(load_repetition(cfg, r, epoch, data, device))
    log(
        f"loaded repetitions={rs[0]}-{rs[-1]} epoch={epoch} run={cfg.run_dir()} "
        f"devices={','.join(sorted({rep.device.rsplit('/', 1)[-1] for rep in reps}))}"
    )
    return reps


def repetition_groups(R: int, group_size: int) -> list[range]:
    """r = 0..R-1 in consecutive groups of group_size (0 = one group)."""
    size = R if group_size == 0 else min(group_size, R)
    return [range(start, min(R, start + size)) for start in range(0, R, size)]


def make_forward(cfg, reps: list[TrainedRepetition], merge_R_values=None, stacked: bool = True):
    """tf.function: parsed rows -> logits [batch, len(reps), B] float32, each rep on its device
    (stacked=False: a tuple of each rep's [batch, B], without the stack's copy); or, with
    merge_R_values, the exact merge's top-k of the first R repetitions for each R there, merged in the
    graph on the first repetition's device: ((labels [batch, top_k] int64, scores float32), ...).

    Traced once for all repetitions and every batch (relaxed shapes). The rows become a CSR matrix
    once per device and feature lookup: once in all without feature hashing. The networks run their
    inference path (MachNet.infer): the values of their training-time call, bit for bit.
    """
    if merge_R_values is not None:
        with tf.device(reps[0].device):
            lookups = [tf.constant(rep.label_to_bucket) for rep in reps]

    def forward(parsed):
        prepared, logits = {}, []
        for rep in reps:
            # Without feature hashing every repetition reads the same input.
            key = (rep.device, rep.r if rep.feature_to_slot is not None else None)
            with tf.device(rep.device):
                if key not in prepared:
                    inputs, _ = rows_to_model_input(
                        parsed,
                        rep.lookup_tensor,
                        cfg.B,
                        cfg.input_dim(),
                        rep.feature_to_slot,
                        cfg.normalize,
                        with_targets=False,
                    )
                    prepared[key] = csr_input(inputs, rep.model.gathers())
                logits.append(rep.model.infer(prepared[key]))
        if merge_R_values is not None:
            with tf.device(reps[0].device):
                return tuple(
                    merge_graph.merged_topk(logits[:R], lookups[:R], cfg.top_k, cfg.score, cfg.loss)
                    for R in merge_R_values
                )
        if not stacked:
            return tuple(logits)
        # Stacked on the host, where they go next, so no GPU holds the whole group's logits.
        with tf.device("/CPU:0"):
            return tf.stack(logits, axis=1)

    return tf.function(forward, input_signature=[PARSED_SPEC], autograph=False)


def merges_on_device(cfg, reps, merge: Merge) -> bool:
    """Whether the exact merge runs in the graph (merge_device, auto: the logits are on a GPU)."""
    if merge.kind != "exact" or cfg.merge_device == "host":
        return False
    return cfg.merge_device == "device" or "GPU" in reps[0].device.upper()


def row_labels(parsed) -> list[np.ndarray]:
    """The true labels of each row of a parsed batch, [n_i] int64 each."""
    ragged = tf.RaggedTensor.from_sparse(parsed["labels"])
    return np.split(ragged.values.numpy(), ragged.row_splits.numpy()[1:-1])


def first_row(parsed) -> dict:
    """The first row of a parsed batch, as a parsed batch of one row."""
    return {k: tf.sparse.slice(v, [0, 0], [1, v.dense_shape[1]]) for k, v in parsed.items()}


def test_batches(cfg, data_manifest: dict, rows: tuple[int, int] | None = None):
    """Parsed batches of the test TFRecords (rows=(first, stop): only those); a damaged shard is a
    ValueError naming it and the fix."""
    # The Python API evaluates arrays written to a directory of their own (test_dir).
    test_dir = Path(data_manifest.get("test_dir") or cfg.tfrecord_dir())
    files = tfrecord_files(test_dir, data_manifest["test"])
    try:
        yield from read_batches(files, cfg.eval_batch_size, rows=rows)
    except tf.errors.DataLossError:
        damaged = damaged_shards(test_dir, data_manifest) or files
        raise ValueError(
            f"{', '.join(map(str, damaged))}: the TFRecords are damaged; re-run `python "
            f"preprocess.py --dataset {cfg.name}` with the same options (it rewrites damaged shards)"
        ) from None


def collect_logits(cfg, reps, data_manifest: dict, max_rows: int):
    """logits [rows, R, B] float32 of the first max_rows test rows, and their true labels (benchmarks)."""
    forward = make_forward(cfg, reps)
    blocks, true_labels = [], []
    for parsed in test_batches(cfg, data_manifest):
        blocks.append(forward(parsed).numpy())
        true_labels += row_labels(parsed)
        if len(true_labels) >= max_rows:
            break
    return np.ascontiguousarray(np.concatenate(blocks)[:max_rows]), true_labels[:max_rows]


def sweep_sizes(R: int) -> list[int]:
    """1, 2, 4, ... and R itself."""
    sizes = [2**i for i in range(R.bit_length()) if 2**i < R]
    return sizes + [R]


def merge_blocks(
    cfg,
    blocks,
    label_to_bucket: np.ndarray,
    R_values: list[int],
    impl: str,
    log,
    merge: Merge,
    inverse=None,
) -> dict:
    """Top-k labels and scores of logit blocks [batch, R, B] float32 for each R in R_values (the first
    R repetitions). blocks: any iterable; the time spent producing them counts as forward_s.
    label_to_bucket: [R, K] int32. merge: which labels are scored (mach.merge.Merge). inverse: the
    inverse lookups a candidate merge reads (load_inverse_lookups), loaded here when not given.

    Returns {"topk": {R: [n, top_k] int64}, "scores": {R: [n, top_k] float32}, "forward_s", "merge_s"}.
    """
    if inverse is None and merge.kind != "exact":
        inverse = load_inverse_lookups(cfg, label_to_bucket)
    topk = {R: [] for R in R_values}
    scores = {R: [] for R in R_values}
    rows, forward_s, merge_s = 0, 0.0, 0.0
    blocks = iter(blocks)
    while True:
        start = time.time()
        logits = next(blocks, None)
        forward_s += time.time() - start
        if logits is None:
            break
        start = time.time()
        for R in R_values:
            labels, top_scores = merge_scores(
                np.ascontiguousarray(logits[:, :R]),
                label_to_bucket[:R],
                cfg.top_k,
                score=cfg.score,
                loss=cfg.loss,
                threads=cfg.threads,
                impl=impl,
                **merge.search(inverse, R),
            )
            topk[R].append(labels)
            scores[R].append(top_scores)
        merge_s += time.time() - start
        rows += len(logits)
        if rows % (20 * cfg.eval_batch_size) < cfg.eval_batch_size:
            log(f"progress=evaluate rows={rows}")
    return {
        "topk": {R: np.concatenate(v) for R, v in topk.items()},
        "scores": {R: np.concatenate(v) for R, v in scores.items()},
        "forward_s": forward_s,
        "merge_s": merge_s,
    }


def merged_topk(cfg, reps, data_manifest: dict, R_values, impl: str, log, merge: Merge) -> dict:
    """Top-k predictions of the test rows by loaded repetitions, each batch merged as it comes.

    Returns merge_blocks' dict plus "true_labels" (list of [n_i] int64) and "n_params" (all networks).
    """
    if merges_on_device(cfg, reps, merge):
        return _merged_on_device(cfg, reps, data_manifest, R_values, log)
    forward = make_forward(cfg, reps)
    start = time.time()
    forward.get_concrete_function()  # the one trace, before the rows (relaxed shapes fit them all)
    trace_s = time.time() - start
    label_to_bucket = np.stack([rep.label_to_bucket for rep in reps])  # [R, K] int32
    true_labels: list[np.ndarray] = []
    read_s = 0.0

    def blocks():
        nonlocal read_s, trace_s
        batches, first = iter(test_batches(cfg, data_manifest)), True
        while True:
            start = time.time()
            parsed = next(batches, None)
            if parsed is None:
                read_s += time.time() - start
                return
            true_labels.extend(row_labels(parsed))
            read_s += time.time() - start
            if first:
                # The graph's first run (its optimisation, its kernels) belongs with the trace.
                start, first = time.time(), False
                forward(first_row(parsed))
                trace_s += time.time() - start
            yield forward(parsed).numpy()  # [batch, R, B] float32

    out = merge_blocks(cfg, blocks(), label_to_bucket, R_values, impl, log, merge)
    # forward_s: the networks alone; reading and parsing the rows (and their labels), and the trace
    # with the graph's first run, are apart.
    out.update(forward_s=out["forward_s"] - read_s, read_s=read_s, trace_s=trace_s)
    out["true_labels"] = true_labels
    out["n_params"] = sum(rep.model.n_params() for rep in reps)
    return out


def _merged_on_device(cfg, reps, data_manifest: dict, R_values, log) -> dict:
    """merged_topk with the exact merge in the graph, on the logits' device: only the top-k of each
    batch comes to the host. forward_s holds the merge; merge_s is 0."""
    forward = make_forward(cfg, reps, R_values)
    topk = {R: [] for R in R_values}
    scores = {R: [] for R in R_values}
    true_labels: list[np.ndarray] = []
    start = time.time()
    for parsed in test_batches(cfg, data_manifest):
        true_labels.extend(row_labels(parsed))
        for R, (labels, top_scores) in zip(R_values, forward(parsed)):
            topk[R].append(labels.numpy())
            scores[R].append(top_scores.numpy())
        if len(true_labels) % (20 * cfg.eval_batch_size) < cfg.eval_batch_size:
            log(f"progress=evaluate rows={len(true_labels)} merge_device={reps[0].device}")
    return {
        "topk": {R: np.concatenate(v) for R, v in topk.items()},
        "scores": {R: np.concatenate(v) for R, v in scores.items()},
        "forward_s": time.time() - start,
        "merge_s": 0.0,
        "true_labels": true_labels,
        "n_params": sum(rep.model.n_params() for rep in reps),
        "merged_on": reps[0].device,
    }


def grouped_topk(
    cfg, R: int, data_manifest: dict, R_values, impl: str, log, merge: Merge, epoch: int
) -> dict:
    """merged_topk() of repetitions 0..R-1 after `epoch`, loaded eval_group_size at a time and placed
    R_per_device per device (memory model: the module docstring). Returns merged_topk's dict plus
    "devices" (those used) and "groups"."""
    data = data_fingerprint(data_manifest)
    devices = placement_devices()
    groups = repetition_groups(R, cfg.eval_group_size)
    check_placement(len(groups[0]), devices, cfg.R_per_device)
    used = devices[: 1 if cfg.R_per_device == 0 else -(-len(groups[0]) // cfg.R_per_device)]
    if len(groups) == 1:
        reps = load_repetitions(cfg, groups[0], epoch, data, log, devices)
        out = merged_topk(cfg, reps, data_manifest, R_values, impl, log, merge)
        return {**out, "devices": used, "groups": 1}
    # Rows in chunks whose logits ([rows, R, B] float32, spilled group by group) fit the budget,
    # each a whole number of batches, so every batch holds the same rows as in one pass.
    b, n_rows, row_bytes = cfg.eval_batch_size, data_manifest["test"]["rows"], R * cfg.B * 4
    chunk = int(cfg.eval_budget_gb * 2**30 // row_bytes) // b * b
    if chunk < b:
        raise ValueError(
            f"eval_budget_gb={cfg.eval_budget_gb:g} holds the logits of {int(cfg.eval_budget_gb * 2**30 // row_bytes)} "
            f"rows, less than one batch of eval_batch_size={b} ({b * row_bytes / 2**30:.2f} GiB): raise "
            "eval_budget_gb or lower eval_batch_size"
        )
    on_host = "GPU" not in used[0].upper()
    held = held_besides_logits(cfg, R, len(groups[0]), merge, on_host)
    try:
        m = merge_rows(cfg, R, len(groups[0]), held)
    except ValueError as refused:
        fits = fitting_group_size(cfg, R, merge, on_host)
        hint = f" (eval_group_size={fits} fits this budget)" if fits else ""
        raise ValueError(f"{refused}{hint}") from None
    log(
        "memory plan: "
        + " ".join(f"{k}={v / 2**30:.2f}GiB" for k, v in held.items())
        + f" logits<={left_bytes(cfg, held) / 2**30:.2f}GiB "
        f"merge_rows={m} chunk_rows={min(chunk, n_rows)}"
    )
    need, free = min(chunk, n_rows) * row_bytes, shutil.disk_usage(cfg.run_dir()).free
    if need > free:
        raise ValueError(
            f"eval_group_size={cfg.eval_group_size} spills up to {need / 2**30:.1f} GiB of logits in "
            f"{cfg.run_dir()}, which has {free / 2**30:.1f} GiB free: lower eval_budget_gb, free some "
            "space, or set eval_group_size=0 to hold all R models in memory"
        )
    remove_dead_leftovers(cfg.run_dir())  # spill directories of killed evaluations
    spill_dir = cfg.run_dir() / f".eval-logits.tmp-{os.getpid()}"
    spill_dir.mkdir()
    parts, true_labels, forward_s, started = [], [], 0.0, time.time()
    try:
        kept: dict = {}  # the last group of a chunk stays loaded as the first of the next
        load = functools.partial(
            load_repetitions, cfg, epoch=epoch, data=data, log=log, devices=devices
        )
        inverse = None  # a candidate merge's inverse lookups: the same for every chunk
        for c, first in enumerate(range(0, max(n_rows, 1), chunk)):
            start = time.time()
            order = list(range(len(groups)))[:: 1 if c % 2 == 0 else -1]
            paths, label_to_bucket, n_params, labels = _spill_groups(
                cfg,
                groups,
                order,
                kept,
                (first, first + chunk),
                spill_dir,
                data_manifest,
                load,
                log,
            )
            forward_s += time.time() - start
            true_labels += labels
            n = len(labels)
            # Rows in order, all R side by side, merge_rows at a time (the merge is row by row, so
            # any block gives the one-group path's labels and scores); the files are not mapped.
            blocks = (_read_rows(paths, cfg.B, i, min(m, n - i)) for i in range(0, n, m))
            if inverse is None and merge.kind != "exact":
                inverse = load_inverse_lookups(cfg, label_to_bucket)
            parts.append(
                merge_blocks(cfg, blocks, label_to_bucket, R_values, impl, log, merge, inverse)
            )
            del blocks
            if chunk < n_rows:
                log(
                    f"progress=evaluate rows={first + n}/{n_rows} (chunks of {chunk} rows) "
                    f"seconds={time.time() - started:.0f}"
                )
    finally:
        kept.clear()
        shutil.rmtree(spill_dir, ignore_errors=True)
    return {
        "topk": {Rv: np.concatenate([p["topk"][Rv] for p in parts]) for Rv in R_values},
        "scores": {Rv: np.concatenate([p["scores"][Rv] for p in parts]) for Rv in R_values},
        "forward_s": forward_s + sum(p["forward_s"] for p in parts),
        "merge_s": sum(p["merge_s"] for p in parts),
        "true_labels": true_labels,
        "n_params": n_params,
        "devices": used,
        "groups": len(groups),
        "chunk_rows": min(chunk, n_rows),
        "spill_bytes": min(chunk, n_rows) * row_bytes,
        "merge_rows": m,
    }


def merge_rows(cfg, R: int, g: int, held: dict[str, int] | None = None) -> int:
    """Rows per merge step of grouped evaluation: as many as eval_batch_size, fewer where their
    logits would not fit in memory within eval_budget_gb, less what is held besides (`held`, bytes by
    name: held_besides_logits).

    A merge step's [rows, R, B] float32 logits are counted three times: the block read from the
    files, the contiguous copy of the first R' repetitions for a sweep, and a margin for the reads'
    buffers and the allocator. A forward step's [eval_batch_size, g, B] are counted twice: the
    networks' outputs and TensorFlow's working memory beside them.
    """
    held = held or {}
    budget, row_bytes, step = left_bytes(cfg, held), R * cfg.B * 4, forward_step_bytes(cfg, g)
    b = cfg.eval_batch_size
    if step > budget:
        raise ValueError(
            f"eval_batch_size={b} rows of eval_group_size={g} repetitions take "
            f"{step / 2**30:.2f} GiB of logits in memory (held twice), more than the "
            f"{left_of_budget(cfg, held)}: lower eval_batch_size or eval_group_size, or raise "
            "eval_budget_gb"
        )
    return max(1, min(b, int(budget // (3 * row_bytes))))


def forward_step_bytes(cfg, g: int) -> int:
    """A forward step's [eval_batch_size, g, B] float32 logits, counted twice (merge_rows)."""
    return 2 * cfg.eval_batch_size * g * cfg.B * 4


def left_bytes(cfg, held: dict[str, int]) -> float:
    """What eval_budget_gb leaves for logits beside `held` (bytes by name), in bytes."""
    return cfg.eval_budget_gb * 2**30 - sum(held.values())


def left_of_budget(cfg, held: dict[str, int]) -> str:
    """'X GiB left of eval_budget_gb=N besides process ... GiB, ...', for refusals."""
    left = max(left_bytes(cfg, held), 0) / 2**30
    besides = ", ".join(f"{k} {v / 2**30:.2f} GiB" for k, v in held.items())
    return f"{left:.2f} GiB left of eval_budget_gb={cfg.eval_budget_gb:g}" + (
        f" besides {besides}" if besides else ""
    )


def held_besides_logits(cfg, R: int, g: int, merge: Merge, on_host: bool = True) -> dict[str, int]:
    """Host memory grouped evaluation holds besides its logits, in bytes: the process as it stands
    (TensorFlow, the interpreter, the test rows' reader), one group's g networks in float32 plus one
    more on its way in (two copies while it is built; none on the host when they sit on GPUs), and
    the lookups: [R, K] int32 for the merge, the group's own twice (NumPy and graph), and for a
    candidate merge the inverse lookups ([R, K] int64) with their check."""
    params, K = cfg.params_per_repetition(), cfg.n_classes
    lookups = (
        R * K * 4
        + 2 * g * K * 4
        + (R * K * 16 + R * (cfg.B + 1) * 8 if merge.kind != "exact" else 0)
    )
    return {
        "process": resident_bytes(),
        "networks": (g + 2) * params * 4 if on_host else 0,
        "lookups": lookups,
    }


def fitting_group_size(cfg, R: int, merge: Merge, on_host: bool = True) -> int:
    """The largest eval_group_size whose forward step fits eval_budget_gb beside what it holds
    (held_besides_logits); 0 when not even one repetition does."""
    for g in range(R, 0, -1):
        if forward_step_bytes(cfg, g) <= left_bytes(
            cfg, held_besides_logits(cfg, R, g, merge, on_host)
        ):
            return g
    return 0


def resident_bytes() -> int:
    """This process's resident memory now (where /proc is missing, its peak so far)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_memory()["peak_host_memory_bytes"]


def _spill_groups(cfg, groups, order, kept, rows, spill_dir, data_manifest, load, log):
    """The logits of test rows [first, stop) (a whole number of batches) of each group, in `order`,
    each loaded once: one file per repetition in spill_dir ([rows, B] float32 each, written as the
    forward gives them, with no [batch, g, B] stack to copy). kept: {group: (reps, forward)}, at most
    one group, loaded before and used again here; the last group is left in it. load: repetitions
    rs -> their TrainedRepetitions. Returns (the files in r order, label_to_bucket [R, K] in r order,
    parameters, the rows' true labels)."""
    lookups, labels, n_params = {}, [], 0
    for g in order:
        rs = groups[g]
        if g not in kept:
            # Drop the group held before the next is loaded: one group's models at a time.
            kept.clear()
            gc.collect()
            reps = load(rs)
            kept[g] = (reps, make_forward(cfg, reps, stacked=False))
        reps, forward = kept[g]
        lookups[g] = [rep.label_to_bucket for rep in reps]
        n_params += sum(rep.model.n_params() for rep in reps)
        with contextlib.ExitStack() as files:
            outs = [files.enter_context(open(_spill_path(spill_dir, r), "wb")) for r in rs]
            for parsed in test_batches(cfg, data_manifest, rows):
                for out, logits in zip(outs, forward(parsed)):
                    logits.numpy().tofile(out)  # [batch, B] float32, no copy
                if g == order[0]:
                    labels.extend(row_labels(parsed))
        del reps, forward
        log(f"progress=evaluate group={g + 1}/{len(groups)} r={rs.start}..{rs.stop - 1}")
    paths = [_spill_path(spill_dir, r) for rs in groups for r in rs]
    label_to_bucket = np.stack([lookup for g in range(len(groups)) for lookup in lookups[g]])
    return paths, label_to_bucket, n_params, labels


def _spill_path(spill_dir: Path, r: int) -> Path:
    return spill_dir / f"logits_r{r:04d}.f32"


def _read_rows(paths: list[Path], B: int, first: int, count: int) -> np.ndarray:
    """Rows first..first+count-1 of the repetitions' spill files ([rows, B] float32 each), side by
    side in one [count, R, B] array."""
    block = np.empty((count, len(paths), B), np.float32)
    for j, path in enumerate(paths):
        with open(path, "rb") as f:
            f.seek(first * B * 4)
            block[:, j] = np.fromfile(f, np.float32, count * B).reshape(count, B)
    return block


def metric_ks(top_k: int) -> tuple[int, ...]:
    """The k of the reported metrics: 1, 3 and 5 where they are <= top_k, and top_k itself."""
    return tuple(sorted({k for k in (1, 3, 5) if k <= top_k} | {top_k}))


def score(cfg, topk: np.ndarray, true_labels: list[np.ndarray], data_manifest: dict) -> dict:
    counts = load_label_counts(cfg, data_manifest)
    n_train_rows = data_manifest["train"]["rows"]
    inv_propensity = 1.0 / metrics.propensities(counts, n_train_rows, cfg.psp_A, cfg.psp_B)
    ks = metric_ks(cfg.top_k)
    return metrics.evaluate_topk(topk, true_labels, ks=ks, inv_propensity=inv_propensity)


def metrics_name(cfg, R: int, merge: Merge, epoch: int) -> str:
    """metrics.json for the full model's exact merge of logits after its last epoch; any other
    evaluation is named by what differs, e.g. metrics-R4-probs-candidates-m10-f2-epoch3.json."""
    parts = [f"R{R}"] if R != cfg.R else []
    parts += [cfg.score] if cfg.score != "logits" else []
    parts += [merge.name(cfg.B)] if merge.kind != "exact" else []
    parts += [f"epoch{epoch}"] if epoch != cfg.epochs else []
    return "-".join(["metrics", *parts]) + ".json"


def evaluate_run(
    cfg,
    data_manifest: dict,
    R: int,
    R_values,
    merge: Merge,
    impl: str,
    epoch: int,
    log,
    topk_of=None,
) -> dict:
    """Evaluate repetitions 0..R-1 after `epoch` on the test rows: what evaluate.py writes to its
    metrics file ({"metrics": ..., "R", "epoch", "timings", "resources", ...}), plus "sweep_R" when
    R_values holds more than R. topk_of: grouped_topk, or its Ray counterpart."""
    from mach import devices

    start = time.time()
    pred = (topk_of or grouped_topk)(cfg, R, data_manifest, R_values, impl, log, merge, epoch)
    seconds = time.time() - start
    if len(pred["true_labels"]) != data_manifest["test"]["rows"]:
        # A shard cut on a record boundary reads without error; the manifest's count catches it.
        raise ValueError(
            f"read {len(pred['true_labels'])} test rows but the TFRecords should hold "
            f"{data_manifest['test']['rows']}: a TFRecord shard is damaged; re-run preprocess.py"
        )
    sweep = {
        Rv: score(cfg, pred["topk"][Rv], pred["true_labels"], data_manifest) for Rv in R_values
    }
    n = sweep[R]["rows"]
    out = {
        "metrics": sweep[R],
        "R": R,
        "epoch": epoch,
        "epochs": cfg.epochs,
        "score": cfg.score,
        "merge": dataclasses.asdict(merge) | {"name": merge.name(cfg.B)},
        # approx_eval exists only as the NumPy spec, whatever impl says.
        "impl": "numpy" if merge.kind == "approx" else impl,
        "timings": {
            "forward_s": pred["forward_s"],
            # One group on the host: reading and parsing the test rows (and their labels), and the
            # forward's trace with the graph's first run (on one row).
            "read_s": pred.get("read_s"),
            "trace_s": pred.get("trace_s"),
            "merge_s": pred["merge_s"],
            "total_s": seconds,
            "samples_per_s": n / seconds,
            "merge_samples_per_s": (
                n * len(R_values) / max(pred["merge_s"], 1e-9) if pred["merge_s"] else None
            ),
            # The exact merge in the graph on this device (its time is in forward_s), or the host's.
            "merged_on": pred.get("merged_on", "host"),
        },
        "resources": {
            "n_params": pred["n_params"],
            "model_bytes": 4 * pred["n_params"],  # float32 weights of the R networks
            **devices.peak_memory(),
        },
        "placement": {
            "eval_group_size": cfg.eval_group_size,
            "groups": pred["groups"],
            "R_per_device": cfg.R_per_device,
            "devices": pred["devices"],
            # Grouped evaluation: rows per chunk and the most logits spilled at once (bytes).
            "chunk_rows": pred.get("chunk_rows"),
            "spill_bytes": pred.get("spill_bytes", 0),
            "merge_rows": pred.get("merge_rows"),
        },
        "config": dataclasses.asdict(cfg),
    }
    if len(R_values) > 1:
        out["sweep_R"] = {str(Rv): m for Rv, m in sweep.items()}
    return out
