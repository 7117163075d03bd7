"""Evaluate trained MACH repetitions: merge their bucket scores into class scores and report P@k, nDCG@k, PSP@k.

    python evaluate.py --dataset delicious                        # all R, the last epoch
    python evaluate.py --dataset delicious --set R=4 --set epochs=2   # the run trained with those settings
    python evaluate.py --dataset delicious --list                 # every run of the dataset
    python evaluate.py --dataset delicious --R 8 --sweep-R        # P@k for R = 1, 2, 4, 8, and a plot
    python evaluate.py --dataset delicious --epoch 3              # the models after epoch 3
    python evaluate.py --dataset delicious --merge candidates --merge-buckets 4
    python evaluate.py --dataset delicious --merge approx         # the official code's approx_eval
    python evaluate.py --dataset delicious --set eval_group_size=4 --set R_per_device=2
    python evaluate.py --dataset delicious --ray auto --set eval_group_size=4  # groups on a Ray cluster

Writes metrics.json in the run directory (<work_dir>/<dataset>/<hashing>/<run>/) for the exact merge of
all R after the last epoch; other evaluations are named by what differs (metrics-R8.json,
metrics-probs.json, metrics-candidates-m4-f2.json, metrics-epoch3.json, ...); --sweep-R adds sweep_R.png.
"""

import argparse
import sys

import config
from mach.cli import (
    add_config_flags,
    add_merge_flags,
    config_from_args,
    merge_from_args,
    parse_args,
    run_main,
    setup_logging,
)
from mach.files import write_json_atomic


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_flags(parser)
    parser.add_argument(
        "--list", action="store_true", help="list the dataset's runs, their epochs and metrics"
    )
    parser.add_argument(
        "--R", type=int, help="merge only the first R repetitions (default: Config.R)"
    )
    parser.add_argument(
        "--sweep-R", action="store_true", help="also report R = 1, 2, 4, ... and plot P@k vs R"
    )
    add_merge_flags(parser)
    parser.add_argument(
        "--epoch", type=int, metavar="N", help="evaluate the models after epoch N (default: last)"
    )
    parser.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run each repetition group's forward pass as a Ray actor on the cluster at HOST:PORT "
        "('auto': this node's); the logits come back in chunks and are merged here",
    )
    args = parse_args(parser, argv)
    log = setup_logging().info
    return run_main(lambda: _evaluate(args, log))


def _evaluate(args, log) -> int:
    cfg = config_from_args(args, config.BASE, config.DATASETS)
    if args.list:
        from mach.report import format_runs, run_rows

        print(format_runs(run_rows(cfg.dataset_dir()), cfg.dataset_dir()))
        return 0
    merge, impl = merge_from_args(args)
    if args.ray:
        from mach.distributed.launch import import_ray

        import_ray()  # fail now, with the fix, rather than after loading the data
    from mach import evaluation
    from mach.data.prepare import load_data_manifest, with_data_sizes
    from mach.merge import check_request
    from mach.weights import resolve_epoch

    data_manifest = load_data_manifest(cfg)
    cfg = with_data_sizes(cfg, data_manifest)
    R = cfg.R if args.R is None else args.R
    check_request(cfg, R, merge, impl)  # fail now, with the fix, rather than after the forward pass
    epoch, epoch_note = resolve_epoch(cfg, R, args.epoch)
    from mach import devices

    devices.configure_devices(cfg, log)  # before TensorFlow starts: threads, GPU memory
    R_values = evaluation.sweep_sizes(R) if args.sweep_R else [R]
    topk_of = None
    if args.ray:
        from mach.distributed.evaluation import grouped_topk_on_ray

        topk_of = grouped_topk_on_ray(args.ray)
    out = evaluation.evaluate_run(cfg, data_manifest, R, R_values, merge, impl, epoch, log, topk_of)
    results = out["metrics"]
    print(
        f"\n{cfg.name}: R={R} B={cfg.B} score={cfg.score} merge={merge.name(cfg.B)} ({out['impl']}) "
        f"epoch={epoch}{f' ({epoch_note})' if epoch_note else ''} test_rows={results['rows']} "
        f"rows_without_labels={results['rows_without_labels']}"
    )
    from mach.report import format_table, plot_sweep

    print(format_table(results))
    if args.sweep_R:
        sweep = (
            {int(Rv): m for Rv, m in out["sweep_R"].items()} if "sweep_R" in out else {R: results}
        )
        for Rv, m in sweep.items():
            shown = " ".join(f"{k}={m[k]:.2f}" for k in ["P@1", "P@3", "P@5"] if k in m)
            log(f"sweep R={Rv} {shown}")
        plot_sweep(sweep, cfg.run_dir() / "sweep_R.png", f"{cfg.name}: B={cfg.B}")
        log(f"plot={cfg.run_dir() / 'sweep_R.png'}")
    metrics_path = cfg.run_dir() / evaluation.metrics_name(cfg, R, merge, epoch)
    write_json_atomic(metrics_path, out)
    timings = " ".join(
        f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in out["timings"].items()
    )
    log(f"metrics={metrics_path} {timings}")
    log(" ".join(f"{k}={v}".replace(" ", "") for k, v in out["resources"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
