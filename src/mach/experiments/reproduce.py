"""Reproducing a paper preset: check the downloads, plan a quick run, report the results.

reproduce.py is the entry script; this module holds what it needs: the download check against the
published sizes (mach.datasets), the --quick reductions (rows, R, epochs, and what must shrink to fit
a small machine), slices and synthetic stand-ins of a dataset, and the results files. The chain itself
runs through mach.experiments.chain.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
import time
from pathlib import Path

from mach.config import SYSTEM, TRAIN, fields_of
from mach.datasets import XC_PAGE, Dataset
from mach.experiments.chain import dir_bytes, xc_to_vw
from mach.files import open_text, read_json, write_json_atomic, write_text_atomic

# --quick: a run that checks the set-up in minutes on a 2-core, 24 GiB machine without a GPU.
QUICK_R = 2
QUICK_EPOCHS = 1
QUICK_ROWS = (2000, 500)  # train, test
# Parameters per repetition; training holds weights, two Adam slots and a dense gradient (16 bytes
# each), so 60M parameters are about 1 GiB per repetition.
QUICK_MAX_PARAMS = 60_000_000
QUICK_INPUT_DIMS = (100_000, 50_000, 20_000, 10_000)  # feature-hash widths tried, widest first
QUICK_MIN_HIDDEN = 64


class DataCheckError(ValueError):
    """The downloaded files are missing or are not the published ones."""


def _tree(root: Path, paths: list[str], notes: dict[str, str]) -> str:
    """An indented directory tree of relative file paths under root, each file with its note."""
    tree: dict = {}
    for path in paths:
        node = tree
        for part in Path(path).parts:
            node = node.setdefault(part, {})
    lines = [f"{root}/"]

    def walk(node: dict, prefix: str, path: str) -> None:
        names = sorted(node)
        for i, name in enumerate(names):
            last = i == len(names) - 1
            full = f"{path}/{name}" if path else name
            child = node[name]
            label = f"{name}/" if child else f"{name:<14}{notes.get(full, '')}"
            lines.append(f"{prefix}{'└── ' if last else '├── '}{label}".rstrip())
            walk(child, prefix + ("    " if last else "│   "), full)

    walk(tree, "", "")
    return "\n".join(lines)


def expected_layout(cfg, known: Dataset) -> str:
    """What data_dir should hold for this preset, and where the files come from."""
    notes = {}
    for name, rows in [("train_file", known.train_rows), ("test_file", known.test_rows)]:
        if cfg.format == "xc" and rows is not None:
            notes[getattr(cfg, name)] = (
                f'first line "{rows} {known.n_features} {known.n_classes}" (rows, D, K)'
            )
        else:
            notes[getattr(cfg, name)] = (
                f"{cfg.format} text, labels < {known.n_classes}, features < {known.n_features}"
            )
    tree = _tree(Path(cfg.data_dir), [cfg.train_file, cfg.test_file], notes)
    if known.download == XC_PAGE:
        where = (
            f"download the BoW features of {Path(cfg.train_file).parent} from {XC_PAGE} and unpack "
            f"them into {cfg.data_dir}"
        )
    else:
        where = (
            f"download the files named in the Makefile of {known.download} (Vowpal Wabbit's recall_tree "
            f"demo) and save them as above (gzip is fine; labels and features 0-based, `label | i:v ...`)"
        )
    return (
        f"expected layout:\n{tree}\n{where}; or check the set-up without a download: "
        f"python reproduce.py --dataset {cfg.name} --quick --synthetic"
    )


def check_downloads(cfg, known: Dataset) -> list[str]:
    """Check train_file and test_file before any work: present, header counts as published, first
    row readable.  Returns one line per file; raises DataCheckError with the expected layout."""
    from mach.data.formats import iter_rows, read_header

    found = []
    for name, split, rows in [
        ("train_file", "train", known.train_rows),
        ("test_file", "test", known.test_rows),
    ]:
        path = cfg.resolve(getattr(cfg, name))
        if not path.is_file():
            raise DataCheckError(f"{split} file not found: {path}\n{expected_layout(cfg, known)}")
        try:
            header = read_header(path, cfg.format)
            if cfg.format == "xc":
                got = (
                    None if header is None else (header.n_rows, header.n_features, header.n_labels)
                )
                want = (rows, known.n_features, known.n_classes)
                if got is None or any(w is not None and g != w for g, w in zip(got, want)):
                    said = "no header" if got is None else "header N D L = {} {} {}".format(*got)
                    raise DataCheckError(
                        f"{path}: {said}; expected {' '.join(str(w) for w in want)} (rows, D, K "
                        f"of the published {split} file); is this the right dataset and file?\n"
                        f"{expected_layout(cfg, known)}"
                    )
            rows_iter = iter_rows(
                path, known.n_features, known.n_classes, cfg.format, cfg.id_bases()
            )
            next(rows_iter)  # the first row parses with the published D and K
            rows_iter.close()
        except DataCheckError:
            raise
        except ValueError as err:
            raise DataCheckError(f"{err}\n{expected_layout(cfg, known)}") from None
        counts = f"rows={header.n_rows} " if header is not None else "rows=unchecked "
        found.append(
            f"check file={path} {counts}D={known.n_features} K={known.n_classes} format={cfg.format} ok"
        )
    return found


def quick_plan(cfg, keep: set[str]) -> tuple[dict, list[str]]:
    """Config changes of --quick, and one line per change.  Keys in `keep` (set by the user) stay.

    R and epochs always shrink. A network of more than QUICK_MAX_PARAMS per repetition then gets a
    narrower input (feature hashing, the official code's own remedy for wide inputs), then narrower
    hidden layers, then fewer buckets, until it fits.
    """
    changes: dict = {}
    notes: list[str] = []

    def change(key: str, value, why: str) -> None:
        if key in keep or getattr(cfg, key) == value:
            return
        changes[key] = value
        notes.append(f"{key}: {getattr(cfg, key)} -> {value} ({why})")

    change("R", min(cfg.R, QUICK_R), "repetitions trained")
    change("epochs", min(cfg.epochs, QUICK_EPOCHS), "passes over the slice")
    input_dim, hidden, B = cfg.input_dim(), cfg.hidden, cfg.B

    def _params(input_dim, hidden, B):
        return dataclasses.replace(
            cfg, feat_hash_dim=input_dim, hidden=hidden, B=B
        ).params_per_repetition()

    before = _params(input_dim, hidden, B)
    if "feat_hash_dim" not in keep:
        for width in QUICK_INPUT_DIMS:
            if _params(input_dim, hidden, B) <= QUICK_MAX_PARAMS:
                break
            input_dim = min(input_dim, width)
    if "hidden" not in keep:
        while _params(input_dim, hidden, B) > QUICK_MAX_PARAMS and any(
            w > QUICK_MIN_HIDDEN for w in hidden
        ):
            hidden = tuple(max(QUICK_MIN_HIDDEN, w // 2) for w in hidden)
    if "B" not in keep:
        while _params(input_dim, hidden, B) > QUICK_MAX_PARAMS and B > 2:
            B //= 2
    why = (
        f"{before / 1e6:.0f}M parameters per repetition, over the quick limit of "
        f"{QUICK_MAX_PARAMS / 1e6:.0f}M; now {_params(input_dim, hidden, B) / 1e6:.1f}M"
    )
    if input_dim != cfg.input_dim():
        change("feat_hash_dim", input_dim, f"input width; {why}")
    change("hidden", hidden, f"hidden widths; {why}")
    change("B", B, f"buckets; {why}")
    return changes, notes


def _stamp_matches(stamp_path: Path, stamp: dict) -> bool:
    try:
        return read_json(stamp_path) == stamp
    except (OSError, ValueError):
        return False


def write_slice(src: Path, dst: Path, n_rows: int, fmt: str) -> int:
    """The first n_rows rows of src streamed into dst (an xc header is rewritten to the new N).

    Skipped when dst was already cut from the same source file with the same n_rows. Returns the rows.
    """
    st = src.stat()
    stamp = {"source": str(src), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "rows": n_rows}
    stamp_path = dst.with_name(dst.name + ".slice.json")
    if dst.is_file() and _stamp_matches(stamp_path, stamp):
        return read_json(stamp_path)["rows_written"]
    dst.parent.mkdir(parents=True, exist_ok=True)
    header, rows = None, []
    with open_text(src) as f:
        for line in f:
            if not line.strip():
                continue
            tokens = line.split()
            # The xc header is the first non-blank line of exactly three plain integers.
            if (
                fmt == "xc"
                and header is None
                and not rows
                and len(tokens) == 3
                and all(t.isdigit() for t in tokens)
            ):
                header = tokens
                continue
            rows.append(line.rstrip("\r\n"))
            if len(rows) == n_rows:
                break
    lines = ([f"{len(rows)} {header[1]} {header[2]}"] if header else []) + rows
    write_text_atomic(dst, "\n".join(lines) + "\n")
    write_json_atomic(stamp_path, {**stamp, "rows_written": len(rows)})
    return len(rows)


def write_synthetic(cfg, known: Dataset, out_dir: Path, rows: tuple[int, int], log) -> dict:
    """A synthetic stand-in shaped like the preset: its K and D, its labels per row, fewer rows.

    Written in the preset's format (xc, or vw for the multiclass presets). Skipped when up to date.
    Returns {"train": path, "test": path}.
    """
    from mach.data.synthetic import SyntheticSpec, write_dataset

    multiclass = known.labels_per_row == 1.0
    spec = SyntheticSpec(
        n_classes=cfg.n_classes,
        n_features=cfg.n_features,
        labels_per_row=known.labels_per_row,
        multiclass=multiclass,
        max_labels_per_row=max(16, math.ceil(2 * known.labels_per_row)),
    )
    ext = "vw" if cfg.format == "vw" else "txt"
    paths = {split: out_dir / f"{split}.{ext}" for split in ("train", "test")}
    stamp = {"spec": dataclasses.asdict(spec), "rows": list(rows), "format": cfg.format}
    stamp_path = out_dir / "synthetic.json"
    if all(p.is_file() for p in paths.values()) and _stamp_matches(stamp_path, stamp):
        log(f"step=data synthetic up_to_date dir={out_dir}")
        return paths
    start = time.time()
    xc_dir = out_dir / "xc" if cfg.format == "vw" else out_dir
    write_dataset(spec, xc_dir, rows[0], rows[1], log=log)
    if cfg.format == "vw":
        for split, path in paths.items():
            xc_to_vw(xc_dir / f"{split}.txt", path, cfg.id_bases())
    write_json_atomic(stamp_path, stamp)
    log(
        f"step=data synthetic K={spec.n_classes} D={spec.n_features} labels_per_row={spec.labels_per_row} "
        f"train_rows={rows[0]} test_rows={rows[1]} format={cfg.format} dir={out_dir} "
        f"seconds={time.time() - start:.1f}"
    )
    return paths


def evaluation_up_to_date(cfg) -> bool:
    """metrics.json exists, is newer than every repetition's train.json, and was made with this config."""
    path = cfg.run_dir() / "metrics.json"
    try:
        metrics = read_json(path)
        newest = max((cfg.ckpt_dir(r) / "train.json").stat().st_mtime for r in range(cfg.R))
    except (OSError, ValueError):
        return False
    # Through JSON, as evaluate.py wrote it: tuples become lists.
    current = json.loads(json.dumps(dataclasses.asdict(cfg)))
    return path.stat().st_mtime > newest and metrics.get("config") == current


def collect_results(cfg, run: dict, known: Dataset) -> dict:
    """Everything the results files show: metrics, training time, size, memory, and the references."""
    from mach.data.prepare import load_data_manifest

    manifest = load_data_manifest(cfg)
    evaluation = read_json(cfg.run_dir() / "metrics.json")
    metrics = evaluation["metrics"]
    resources = evaluation.get("resources", {})
    reps = [read_json(cfg.ckpt_dir(r) / "train.json") for r in range(cfg.R)]
    wall = [float(s["wall_s"]) for s in reps]
    ckpt_bytes = sum(dir_bytes(cfg.ckpt_dir(r)) for r in range(cfg.R))
    memory = {"peak_evaluate_host_bytes": resources.get("peak_host_memory_bytes")}
    train_peaks = [s["peak_host_memory_bytes"] for s in reps if "peak_host_memory_bytes" in s]
    memory["peak_train_host_bytes"] = max(train_peaks) if train_peaks else None
    memory["peak_steps_host_bytes"] = run["peak_rss"]
    if resources.get("peak_gpu_memory_bytes"):
        memory["peak_gpu_bytes"] = resources["peak_gpu_memory_bytes"]
    return {
        "dataset": cfg.name,
        "quick": run["quick"],
        "synthetic": run["synthetic"],
        "comparable": not run["quick"] and not changed_settings(run["overrides"]),
        "changed_settings": changed_settings(run["overrides"]),
        "command": run["command"],
        "shrunk": run["shrunk"],
        "data": {
            "source": run["data_source"],
            "train_rows": manifest["train"]["rows"],
            "test_rows": manifest["test"]["rows"],
            "labels_per_train_row": round(manifest["train"]["labels_per_row"], 2),
            "n_features": cfg.n_features,
            "n_classes": cfg.n_classes,
        },
        "config": {
            k: getattr(cfg, k)
            for k in [
                "B",
                "R",
                "hidden",
                "feat_hash_dim",
                "loss",
                "recipe",
                "lr",
                "batch_size",
                "epochs",
            ]
        },
        "metrics": metrics,
        "train": {
            "per_repetition_s": wall,
            "mean_repetition_s": sum(wall) / len(wall),
            "sum_repetitions_s": sum(wall),
            "step_wall_s": run["seconds"].get("train"),
        },
        "steps_s": run["seconds"],
        "model": {
            "params": resources.get("n_params", sum(int(s["params"]) for s in reps)),
            "params_per_repetition": int(reps[0]["params"]),
            "weight_bytes": resources.get("model_bytes"),
            "checkpoint_bytes": ckpt_bytes,
        },
        "memory": memory,
        "references": compare(metrics, known.results),
        "source": known.code,
        "reference_note": "the MACH paper's own values are not recorded here (not verified)",
    }


# --set keys that change how a run is executed, not what it computes.
SYSTEM_KEYS = {*fields_of(SYSTEM), *fields_of(TRAIN), "data_dir", "rows_per_shard"}


def changed_settings(overrides: list[str]) -> list[str]:
    """The keys of --set overrides that change the experiment itself."""
    keys = [pair.partition("=")[0].strip() for pair in overrides]
    return [key for key in keys if key not in SYSTEM_KEYS]


REFERENCE_KEYS = {"P@1": "P@1", "P@3": "P@3", "P@5": "P@5", "accuracy": "top1_accuracy"}


def compare(metrics: dict, references: list[dict]) -> list[dict]:
    """Each reference row with our value and the difference (ours - theirs) per metric it reports."""
    rows = []
    for ref in references:
        row = {k: v for k, v in ref.items() if k not in REFERENCE_KEYS}
        for key, ours_key in REFERENCE_KEYS.items():
            if ref.get(key) is None:
                continue
            ours = metrics.get(ours_key)
            row[key] = {
                "reference": ref[key],
                "ours": ours,
                "difference": None if ours is None else round(ours - ref[key], 2),
            }
        rows.append(row)
    return rows


def _fmt_bytes(n) -> str:
    if n is None:
        return "not measured"
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def format_markdown(res: dict) -> str:
    """The results as a Markdown page: metrics, references with differences, cost."""
    m = res["metrics"]
    lines = [f"# MACH on {res['dataset']}", ""]
    if res["quick"]:
        kind = "a synthetic stand-in" if res["synthetic"] else "a slice of the data"
        lines += [
            f"**Quick run on {kind}: not comparable with the references below.** It checks the set-up only.",
            "",
        ]
        lines += [f"- shrunk: {note}" for note in res["shrunk"]] + [""]
    elif not res["comparable"]:
        lines += [
            f"**Settings differ from the preset ({', '.join(res['changed_settings'])}): compare with "
            "the references below with care.**",
            "",
        ]
    d = res["data"]
    lines += [
        f"Command: `{shlex.join(res['command'])}`",
        "",
        f"Data: {d['train_rows']} train rows, {d['test_rows']} test rows, D={d['n_features']}, "
        f"K={d['n_classes']}. Settings: " + ", ".join(f"{k}={v}" for k, v in res["config"].items()),
        "",
        "| metric | @1 | @3 | @5 |",
        "| --- | --- | --- | --- |",
    ]
    for name, key in [
        ("P (repository: hits / k)", "P@{}"),
        ("P (official code: hits / min(|y|, k))", "P@{}_official"),
        ("nDCG", "nDCG@{}"),
        ("PSP", "PSP@{}"),
    ]:
        if key.format(1) in m:
            cells = [f"{m[key.format(k)]:.2f}" if key.format(k) in m else "" for k in (1, 3, 5)]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "top1_accuracy" in m:
        lines.append(f"| top-1 accuracy | {m['top1_accuracy']:.2f} | | |")
    lines += ["", "## References", ""]
    keys = [k for k in REFERENCE_KEYS if any(k in ref for ref in res["references"])]
    if keys:
        # One row per method: its published value and ours minus it.
        lines.append("| method | " + " | ".join(f"{k} | diff" for k in keys) + " | source |")
        lines.append("| --- " * (2 * len(keys) + 2) + "|")
        ours = []
        for k in keys:
            v = m.get(REFERENCE_KEYS[k])
            ours += ["-" if v is None else f"{v:.2f}", ""]
        lines.append("| this run | " + " | ".join(ours) + " | |")
        for ref in res["references"]:
            cells = []
            for k in keys:
                v = ref.get(k)
                if v is None:
                    cells += ["", ""]
                else:
                    diff = "" if v["difference"] is None else f"{v['difference']:+.2f}"
                    cells += [f"{v['reference']:.2f}", diff]
            lines.append(
                f"| {ref['method']} | " + " | ".join(cells) + f" | {ref.get('source', '')} |"
            )
    else:
        lines.append("No verified reference values are recorded for this dataset (mach.datasets).")
    if res["reference_note"]:
        lines += ["", f"Note: {res['reference_note']}."]
    t, model, mem = res["train"], res["model"], res["memory"]
    lines += [
        "",
        "## Cost",
        "",
        f"- training: {t['mean_repetition_s']:.1f} s per repetition (mean of {len(t['per_repetition_s'])}), "
        f"{t['sum_repetitions_s']:.1f} s summed over repetitions, {t['step_wall_s'] or 0:.1f} s wall clock",
        "- steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in res["steps_s"].items()),
        f"- parameters: {model['params']:,} ({model['params_per_repetition']:,} per repetition)",
        f"- model on disk: {_fmt_bytes(model['checkpoint_bytes'])} of checkpoints (weights and Adam "
        f"slots); float32 weights {_fmt_bytes(model['weight_bytes'])}",
        f"- peak host memory: training {_fmt_bytes(mem['peak_train_host_bytes'])} (the largest "
        "job), per step "
        + ", ".join(f"{k} {_fmt_bytes(v)}" for k, v in mem["peak_steps_host_bytes"].items()),
    ]
    if "peak_gpu_bytes" in mem:
        lines.append(
            "- peak GPU memory (evaluate): "
            + ", ".join(f"{k} {_fmt_bytes(v)}" for k, v in mem["peak_gpu_bytes"].items())
        )
    return "\n".join(lines) + "\n"


def write_results(results_dir: Path, stem: str, res: dict) -> tuple[Path, Path]:
    """results_dir/<stem>.json and .md, each written atomically."""
    json_path, md_path = results_dir / f"{stem}.json", results_dir / f"{stem}.md"
    write_text_atomic(json_path, json.dumps(res, indent=2, sort_keys=True, default=list) + "\n")
    write_text_atomic(md_path, format_markdown(res))
    return json_path, md_path
