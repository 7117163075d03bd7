"""Rehearse a paper preset at its true K and D on synthetic rows: does every step fit, and how long would it take?

    python bench/rehearse.py --preset amazon670k                 # 20k train / 2k test rows, R=2, 2 epochs
    python bench/rehearse.py --preset amazon3m --R 1             # one repetition of the largest preset
    python bench/rehearse.py --preset wiki10_31k --train-rows 5000 --out /tmp/rehearse

Synthetic data with the preset's exact K and D and its labels and features per row (mach.datasets; rows
scaled down), then preprocess, train R repetitions for two epochs with the preset's network, and evaluate
with the exact merge, the candidate merge and the official approx_eval, each step in its own process
(mach.experiments.chain: wall time and peak RSS per step). Training's rate comes from train.json (rows x
epochs / the training loop's seconds, both epochs, so the first epoch's tracing is in it); TFRecord and
checkpoint bytes are measured on disk. The projection of the full run (the preset's rows, epochs and R)
on this CPU comes from that rate and is labelled projected; memory is compared with the model 4 bytes x
params x 4 (weights, gradient, two Adam slots) a repetition. Appends one JSON line per run to --jsonl
and prints a markdown row. Recorded rehearsals: experiments/rehearsals.
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from common import cpu_name

from mach.datasets import DATASETS as FACTS
from mach.experiments import chain
from mach.presets import load_presets

OUT = Path("work/bench/rehearse")
# Where mach.datasets has no published figure, the rehearsal assumes one of the right order.
ASSUMED = {"amazon3m": {"features_per_row": 40.0}, "odp": {"features_per_row": 100.0}}
ASSUMED_TRAIN_ROWS = {"odp": 1_084_320}  # the precursor code's ODP training file


def shape_of(name: str) -> dict:
    """Labels and features per row and the full training rows, with a note on what was assumed."""
    facts = dataclasses.asdict(FACTS[name])
    assumed = {**ASSUMED.get(name, {})}
    if facts["train_rows"] is None:
        assumed["train_rows"] = ASSUMED_TRAIN_ROWS[name]
    shape = {key: facts[key] for key in ("labels_per_row", "features_per_row", "train_rows")}
    shape.update(assumed)
    note = ", ".join(f"{key} assumed" for key in assumed)
    return {**shape, "note": note}


def spec_for(shape: dict, cfg):
    """Prototype features (kept with probability 0.8) plus uniform noise give the features per row."""
    from mach.data.synthetic import SyntheticSpec

    labels, features = shape["labels_per_row"], shape["features_per_row"]
    per_label = max(1, round(0.6 * features / labels / 0.8))
    noise = max(0, round(features - 0.8 * per_label * labels))
    return SyntheticSpec(
        n_classes=cfg.n_classes,
        n_features=cfg.n_features,
        labels_per_row=labels,
        multiclass=labels == 1.0,
        max_labels_per_row=max(16, int(2.5 * labels)),
        features_per_label=per_label,
        noise_features=noise,
    )


def write_data(spec, preset, data_dir: Path, train_rows: int, test_rows: int) -> dict[str, Path]:
    """The synthetic train and test files in the preset's format (xc, or vw for multiclass presets)."""
    from mach.data.synthetic import write_dataset

    write_dataset(spec, data_dir, train_rows, test_rows, log=lambda *_: None)
    if preset.format != "vw":
        return {split: data_dir / f"{split}.txt" for split in ("train", "test")}
    for split in ("train", "test"):
        chain.xc_to_vw(data_dir / f"{split}.txt", data_dir / f"{split}.vw", preset.id_bases())
    return {split: data_dir / f"{split}.vw" for split in ("train", "test")}


def step_record(step: chain.Step) -> dict:
    return {"wall_s": round(step.wall_s, 1), "peak_rss_gib": step.as_dict()["peak_rss_gib"]}


def main(argv=None) -> int:
    _, presets = load_presets()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", required=True, choices=sorted(set(presets) & set(FACTS)))
    parser.add_argument("--train-rows", type=int, default=20_000)
    parser.add_argument("--test-rows", type=int, default=2_000)
    parser.add_argument("--R", type=int, default=2, help="repetitions trained (default 2)")
    parser.add_argument(
        "--out", type=Path, default=OUT, help=f"data, runs and logs (default {OUT})"
    )
    parser.add_argument(
        "--jsonl", type=Path, help="append the record here (default <out>/rehearse.jsonl)"
    )
    args = parser.parse_args(argv)
    out = (
        args.out.resolve() / args.preset
    )  # absolute: the scripts resolve data paths against data_dir
    jsonl = args.jsonl or args.out / "rehearse.jsonl"
    preset, shape = presets[args.preset], shape_of(args.preset)
    spec = spec_for(shape, preset)
    start = time.time()
    files = write_data(spec, preset, out / "data", args.train_rows, args.test_rows)
    steps = {"data": {"wall_s": round(time.time() - start, 1)}}
    sets = [f"{split}_file={str(path)!r}" for split, path in files.items()]
    if preset.data_file is not None:  # a preset read from one file and its splits (delicious)
        sets += ["data_file=None", "train_split_file=None", "test_split_file=None"]
    sets += [f"R={args.R}", "epochs=2", "threads=0"]
    flags = chain.config_flags(args.preset, out / "work", sets)
    runs = {"preprocess": [*chain.script("preprocess"), *flags]}
    runs["train"] = [*chain.script("train"), *flags, "--overwrite"]
    for kind in ("exact", "candidates", "approx"):
        merge = ["--merge", kind]
        merge += ["--merge-buckets", str(min(50, preset.B or 50))] if kind != "exact" else []
        runs[f"evaluate_{kind}"] = [*chain.script("evaluate"), *flags, *merge]
    for name, cmd in runs.items():
        steps[name] = step_record(chain.run_step(name, cmd, out / f"{name}.log"))

    from mach.model import use_sparse_first_layer  # imports TensorFlow

    cfg = chain.chain_config(args.preset, out / "work", sets)
    summaries = chain.train_summaries(cfg)
    steps["preprocess"]["tfrecord_bytes"] = chain.dir_bytes(cfg.tfrecord_dir())
    steps["train"].update(
        checkpoint_bytes=chain.dir_bytes(cfg.run_dir() / "ckpt"),
        ex_per_s_per_rep=round(min(chain.examples_per_s(s) for s in summaries)),
        loop_s=max(s["wall_s"] for s in summaries),
        first_layer_update=(
            "lazy_adam"
            if use_sparse_first_layer(cfg.sparse_first_layer, cfg.input_dim())
            else "dense_adam"
        ),
    )
    params = cfg.params_per_repetition()
    # The R repetitions trained here share one process, so the rate above is per repetition with R
    # sharing the cores; a full run trains preset.R repetitions for preset.epochs epochs.
    rate = steps["train"]["ex_per_s_per_rep"] or 0
    rows = shape["train_rows"] * preset.epochs * preset.R / args.R
    projected_h = rows / max(rate, 1e-9) / 3600
    if args.train_rows < 3 * preset.batch_size:
        print(
            f"note: {args.train_rows} rows are under 3 batches of {preset.batch_size}: a noisy rate"
        )
    record = {
        "preset": args.preset,
        "cpu": cpu_name(),
        "K": cfg.n_classes,
        "D": cfg.n_features,
        "input_dim": cfg.input_dim(),
        "hidden": list(cfg.hidden),
        "B": cfg.B,
        "R_trained": args.R,
        "train_rows": args.train_rows,
        "test_rows": args.test_rows,
        "synthetic": dataclasses.asdict(spec),
        "shape_note": shape["note"],
        "params_per_rep": params,
        "model_gib_per_rep": round(4 * params / 2**30, 2),
        "train_memory_model_gib": round(16 * params * args.R / 2**30, 2),
        "steps": steps,
        "projected_full_run_hours_this_cpu": round(projected_h, 1),
    }
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    with open(jsonl, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(markdown_row(record))
    return 0


def markdown_row(rec: dict) -> str:
    s = rec["steps"]
    return (
        f"| {rec['preset']} | {rec['K']:,} | {rec['input_dim']:,} | {rec['params_per_rep'] / 1e6:.0f} M | "
        f"{rec['R_trained']} | {s['preprocess']['wall_s']} s / {s['preprocess']['peak_rss_gib']} GiB | "
        f"{s['train']['wall_s']} s / {s['train']['peak_rss_gib']} GiB (model {rec['train_memory_model_gib']} GiB) | "
        f"{s['train']['ex_per_s_per_rep']} | {s['evaluate_exact']['wall_s']} s / {s['evaluate_exact']['peak_rss_gib']} GiB | "
        f"{s['evaluate_candidates']['wall_s']} s | {s['evaluate_approx']['wall_s']} s | "
        f"{s['train']['checkpoint_bytes'] / 2**30:.2f} GiB | {rec['projected_full_run_hours_this_cpu']} h |"
    )


if __name__ == "__main__":
    sys.exit(main())
