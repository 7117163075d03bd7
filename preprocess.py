"""Preprocess a dataset: XC-repo text -> train/test TFRecords, plus R label (and feature) lookups.

    python preprocess.py --dataset delicious
    python preprocess.py --dataset mydata --set train_file=/data/train.txt --set test_file=/data/test.txt --set B=1000

Re-running with the same config finds everything up to date and rewrites nothing.
"""

import argparse
import dataclasses
import sys
import time

import config
from mach.cli import add_config_flags, config_from_args, parse_args, run_main, setup_logging
from mach.data.prepare import prepare_lookups, prepare_tfrecords, with_data_sizes
from mach.files import write_json_atomic


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_flags(parser)
    args = parse_args(parser, argv)
    log = setup_logging().info
    return run_main(lambda: _preprocess(args, log))


def _preprocess(args, log) -> int:
    cfg = config_from_args(args, config.BASE, config.DATASETS)
    start = time.time()
    data_manifest = prepare_tfrecords(cfg, log)
    # Sizes may come from the file header when the config leaves them open.
    cfg = with_data_sizes(cfg, data_manifest)
    prepare_lookups(cfg, log)
    write_json_atomic(cfg.hashing_dir() / "config.preprocess.json", dataclasses.asdict(cfg))
    train, test = data_manifest["train"], data_manifest["test"]
    log(
        f"summary dataset={cfg.name} train_rows={train['rows']} test_rows={test['rows']} "
        f"features={cfg.n_features} labels={cfg.n_classes} labels_per_row={train['labels_per_row']:.2f} "
        f"features_per_row={train['features_per_row']:.2f} train_rows_without_labels={train['rows_without_labels']} "
        f"test_rows_without_labels={test['rows_without_labels']} B={cfg.B} R={cfg.R} seconds={time.time() - start:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
