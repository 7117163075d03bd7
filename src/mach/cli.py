"""Command-line plumbing shared by the entry scripts: --dataset, --set key=value, logging."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import os
import sys

from mach.config import Config, apply_overrides, describe_fields, with_run_name


def add_set_flag(parser: argparse.ArgumentParser, help: str, *aliases: str) -> None:
    """The repeatable `--set KEY=VALUE` Config override, collected in args.overrides."""
    parser.add_argument(
        "--set",
        *aliases,
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=help,
    )


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        default="delicious",
        help="a preset from config.py, or a new name with --set *_file=...",
    )
    add_set_flag(
        parser,
        "override a Config field for this run (repeatable), e.g. --set B=128 --set 'hidden=(1024,512)'",
    )
    parser.add_argument("--work-dir", help="where outputs go (Config.work_dir)")
    parser.add_argument(
        "--data-dir", help="where relative data paths are looked up (Config.data_dir)"
    )
    parser.add_argument(
        "--help-config", action="store_true", help="list every Config field and exit"
    )
    add_verbose_flag(parser)


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--verbose", action="store_true", help="also show TensorFlow's own log lines"
    )


def parse_args(parser: argparse.ArgumentParser, argv) -> argparse.Namespace:
    """parser.parse_args, then --help-config (prints the fields, exits) and --verbose."""
    args = parser.parse_args(argv)
    if getattr(args, "help_config", False):
        print(describe_fields())
        raise SystemExit(0)
    show_tensorflow_logs(getattr(args, "verbose", False))
    return args


def show_tensorflow_logs(show: bool) -> None:
    """TensorFlow's C++ and Python log lines on (--verbose) or off; must run before TensorFlow loads."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if show else "3"
    if not show:
        # absl's Python logger (TensorFlow's "Sharding callback duration" and the like).
        logging.getLogger("absl").setLevel(logging.ERROR)
        logging.getLogger("tensorflow").setLevel(logging.ERROR)


def add_merge_flags(
    parser: argparse.ArgumentParser, kinds=("exact", "candidates", "approx"), with_impl=True
) -> None:
    """--merge KIND, --merge-buckets M, --min-freq F and --impl, as evaluate.py, export.py and
    predict.py take them (the older --merge-candidates M, --merge-approx [M] and --merge-impl are
    still read, with a note)."""
    parser.add_argument(
        "--merge",
        choices=kinds,
        default=kinds[0],
        help="which labels are scored: exact (all K), candidates (those of each repetition's top-M "
        "buckets, scored by all R), approx (the official approx_eval: scored by the repetitions that "
        f"chose them){'; auto: exact up to 50,000 classes, candidates above' if 'auto' in kinds else ''}",
    )
    parser.add_argument(
        "--merge-buckets",
        type=int,
        metavar="M",
        help="buckets per repetition for candidates/approx "
        "(default 10 for candidates, 50 for approx)",
    )
    parser.add_argument(
        "--min-freq",
        type=int,
        default=2,
        metavar="F",
        help="candidates/approx: keep labels found in at least F repetitions, lowered until top_k "
        "remain (default 2)",
    )
    if with_impl:
        parser.add_argument(
            "--impl",
            choices=["compiled", "numpy"],
            default="compiled",
            help="the compiled OpenMP kernels (default) or their NumPy specification",
        )
    old = parser.add_argument_group()
    old.add_argument("--merge-candidates", type=int, help=argparse.SUPPRESS)
    old.add_argument("--merge-approx", type=int, nargs="?", const=0, help=argparse.SUPPRESS)
    old.add_argument("--merge-impl", choices=["kernel", "numpy"], help=argparse.SUPPRESS)


def merge_from_args(args: argparse.Namespace):
    """(mach.merge.Merge or "auto", impl) of add_merge_flags' flags, old spellings included."""
    from mach.merge import Merge

    kind, buckets = args.merge, args.merge_buckets
    if args.merge_candidates is not None:
        print(
            "note: --merge-candidates M is now --merge candidates --merge-buckets M",
            file=sys.stderr,
        )
        kind, buckets = "candidates", args.merge_candidates
    if args.merge_approx is not None:
        print("note: --merge-approx M is now --merge approx --merge-buckets M", file=sys.stderr)
        kind, buckets = "approx", args.merge_approx or buckets
    impl = getattr(args, "impl", "compiled")
    if args.merge_impl is not None:
        print("note: --merge-impl is now --impl (kernel is now called compiled)", file=sys.stderr)
        impl = "compiled" if args.merge_impl == "kernel" else args.merge_impl
    if kind == "auto":
        return "auto", impl
    return Merge(kind, buckets, args.min_freq), impl


def parse_ranges(text: str, flag: str) -> list[int]:
    """'0-3,8' -> [0, 1, 2, 3, 8] (sorted, distinct); a ValueError naming `flag` otherwise."""
    numbers = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        try:
            numbers += list(range(int(first), int(last or first) + 1))
        except ValueError:
            raise ValueError(
                f"{flag} {text!r}: expected numbers and ranges such as 0-3,8"
            ) from None
    return sorted(set(numbers))


def config_from_args(args: argparse.Namespace, base: Config, presets: dict[str, Config]) -> Config:
    """The preset named by --dataset (or a new dataset on the base config) with the flags applied, its
    run directory named by the model settings that differ from the preset."""
    preset = presets.get(args.dataset) or dataclasses.replace(base, name=args.dataset)
    pairs = list(args.overrides)
    pairs += [f"work_dir={args.work_dir!r}"] if args.work_dir else []
    pairs += [f"data_dir={args.data_dir!r}"] if args.data_dir else []
    notes: list[str] = []
    cfg = apply_overrides(preset, pairs, notes)
    for note in notes:
        print(note, file=sys.stderr)
    if args.dataset not in presets and cfg.train_file is None and cfg.data_file is None:
        raise ValueError(
            f"unknown dataset {args.dataset!r}: presets are {', '.join(sorted(presets))}; "
            "for another dataset pass --set train_file=PATH --set test_file=PATH"
        )
    return with_run_name(cfg, preset)


def user_error(err: BaseException) -> str | None:
    """The message for an error the user can fix (bad input, full disk), or None for a bug."""
    if isinstance(err, (ValueError, FileNotFoundError, ImportError)):
        return str(err)
    text = str(err)
    if isinstance(err, OSError) and err.errno == errno.ENOSPC or "No space left on device" in text:
        where = getattr(err, "filename", None) or text.split("No space left on device")[0].strip(
            " :;,"
        )
        return (
            f"no space left on the device while writing {where or 'the outputs'}; nothing half-written "
            "was kept: free some space (or pass --work-dir on a larger disk) and run the same command again"
        )
    if isinstance(err, OSError) and err.errno == errno.EROFS or "Read-only file system" in text:
        where = getattr(err, "filename", None) or text.split(";")[0].split(":")[0]
        return (
            f"read-only file system: cannot write {where}; nothing was changed there: pass "
            "--work-dir (or --output) on a writable disk, or make that one writable"
        )
    if isinstance(err, (PermissionError, IsADirectoryError, NotADirectoryError)):
        return f"{err.strerror}: {err.filename}"
    return None


def run_main(body) -> int:
    """body() -> exit code, with user errors printed as one `error:` line and exit code 2."""
    try:
        return body()
    except Exception as err:  # noqa: BLE001 - anything else is re-raised below
        message = user_error(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


def setup_logging() -> logging.Logger:
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s", force=True)
    return logging.getLogger("mach")
