"""Command-line plumbing shared by the entry scripts: --dataset, --set key=value, logging."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import errno
import logging
import re
import sys
import types
import typing

CHOICES = {
    "loss": ("softmax", "bce"),
    "merge": ("logits", "probs"),
    "normalize": ("l2", "max", "none"),
    "format": ("xc", "libsvm", "vw"),
    "recipe": ("improved", "official", "precursor"),
    "sparse_first_layer": ("auto", "on", "off"),
}


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


def _type_matches(value, hint) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is tuple:
        return isinstance(value, tuple) and all(
            _type_matches(v, typing.get_args(hint)[0]) for v in value
        )
    return isinstance(value, hint)


def _parse_value(text: str, hint):
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text  # a bare word such as loss=bce is a string
    if typing.get_origin(hint) is tuple and isinstance(value, (int, list)):
        value = tuple(value) if isinstance(value, list) else (value,)
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and _type_matches(1.0, hint)
        and not _type_matches(1, hint)
    ):
        value = float(value)
    return value


def apply_overrides(cfg, pairs: list[str]):
    """cfg with each `key=value` applied, values checked against the field types."""
    hints = typing.get_type_hints(type(cfg))
    valid = ", ".join(sorted(hints))
    changes = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE; valid keys: {valid}")
        if key not in hints:
            raise ValueError(f"--set {key}: unknown key; valid keys: {valid}")
        value = _parse_value(text.strip(), hints[key])
        if not _type_matches(value, hints[key]):
            raise ValueError(
                f"--set {key}={text}: expected a value of type {hints[key]}, got {value!r}; valid keys: {valid}"
            )
        changes[key] = value
    return check_config(dataclasses.replace(cfg, **changes))


INT32_MAX = 2**31 - 1  # ids and sizes are hashed as 32-bit integers
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")  # names that become directory names

# (field, test, what is allowed): every numeric field checked once, the message names key and range.
RANGES = [
    ("split", lambda v: v >= 1, "a positive integer (1-based split column)"),
    ("n_features", lambda v: v is None or 1 <= v <= INT32_MAX, f"None or 1..{INT32_MAX}"),
    ("n_classes", lambda v: v is None or 1 <= v <= INT32_MAX, f"None or 1..{INT32_MAX}"),
    ("rows_per_shard", lambda v: v >= 1, "a positive integer"),
    ("valid_fraction", lambda v: 0.0 <= v < 1.0, "0 <= valid_fraction < 1"),
    ("valid_seed", lambda v: v >= 0, "a non-negative integer"),
    (
        "B",
        lambda v: v is None or 2 <= v <= INT32_MAX,
        "None (chosen from K) or at least 2 (MACH needs at least 2 buckets)",
    ),
    ("R", lambda v: v >= 1, "a positive integer"),
    ("hash_seed", lambda v: 0 <= v <= INT32_MAX - 10_000, "0..2^31-10001 (seed hash_seed + r)"),
    ("feat_hash_dim", lambda v: v is None or 1 <= v <= INT32_MAX, "None or a positive integer"),
    (
        "hidden",
        lambda v: all(1 <= w <= 1 << 20 for w in v),
        "layer widths 1..1048576, e.g. (500, 500)",
    ),
    ("dropout", lambda v: 0.0 <= v < 1.0, "0 <= dropout < 1"),
    ("lr", lambda v: 0.0 < v < float("inf"), "a positive learning rate"),
    ("adam_epsilon", lambda v: 0.0 < v < float("inf"), "a positive number"),
    ("batch_size", lambda v: v >= 1, "a positive integer"),
    ("epochs", lambda v: v is None or v >= 1, "None (chosen from the rows) or a positive integer"),
    ("seed", lambda v: 0 <= v <= INT32_MAX, "0..2^31-1"),
    ("shuffle_buffer", lambda v: v >= 1, "a positive integer (1 = no shuffling)"),
    ("keep_checkpoints", lambda v: v >= 0, "0 (keep every epoch) or a positive integer"),
    ("checkpoint_interval_s", lambda v: v >= 0, "0 (every epoch) or a number of seconds"),
    ("top_k", lambda v: v >= 1, "a positive integer"),
    ("eval_batch_size", lambda v: v >= 1, "a positive integer"),
    ("eval_group_size", lambda v: v >= 0, "0 (all R at once) or a positive integer"),
    ("R_per_device", lambda v: v >= 0, "0 (all on one device) or a positive integer"),
    ("psp_A", lambda v: v > 0, "a positive number"),
    ("psp_B", lambda v: v > 0, "a positive number"),
    ("threads", lambda v: v >= 0, "0 (all cores) or a positive integer"),
    ("gpu_memory_mb", lambda v: v is None or v >= 1, "None (memory growth) or a positive integer"),
]


def check_config(cfg):
    """cfg, or a ValueError naming the first field out of its range and what is allowed."""
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise ValueError(f"{key}={getattr(cfg, key)!r}: expected one of {', '.join(allowed)}")
    for key, ok, allowed in RANGES:
        if not ok(getattr(cfg, key)):
            raise ValueError(f"{key}={getattr(cfg, key)!r}: expected {allowed}")
    for key in ["name", "tag"]:
        value = getattr(cfg, key)
        if (value or key == "name") and not SAFE_NAME.match(value):
            raise ValueError(
                f"{key}={value!r}: expected letters, digits and . _ + - (it names a directory)"
            )
    if not cfg.work_dir:
        raise ValueError("work_dir='': expected a directory")
    if None not in (cfg.n_classes, cfg.B) and cfg.B > cfg.n_classes:
        raise ValueError(
            f"B={cfg.B} is larger than the number of classes K={cfg.n_classes}: "
            f"expected 2 <= B <= K (MACH hashes K classes into B < K buckets)"
        )
    return cfg


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


def preset_or_new(name: str, base, datasets: dict):
    """The preset called name, or a new dataset of that name on the base config."""
    return datasets[name] if name in datasets else dataclasses.replace(base, name=name)


def config_from_args(args: argparse.Namespace, base, datasets: dict):
    """The preset named by --dataset (or a new dataset on the base config), with flags applied."""
    cfg = preset_or_new(args.dataset, base, datasets)
    pairs = list(args.overrides)
    pairs += [f"work_dir={args.work_dir!r}"] if args.work_dir else []
    pairs += [f"data_dir={args.data_dir!r}"] if args.data_dir else []
    cfg = apply_overrides(cfg, pairs)
    if args.dataset not in datasets and cfg.train_file is None and cfg.data_file is None:
        raise ValueError(
            f"unknown dataset {args.dataset!r}: presets are {', '.join(sorted(datasets))}; "
            "for another dataset pass --set train_file=PATH --set test_file=PATH"
        )
    return cfg


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
