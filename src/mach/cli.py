"""Command-line plumbing shared by the entry scripts: --dataset, --set key=value, logging."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import logging
import sys
import types
import typing

CHOICES = {
    "loss": ("softmax", "bce"),
    "merge": ("logits", "probs"),
    "normalize": ("l2", "max", "none"),
    "format": ("xc", "libsvm", "vw"),
    "recipe": ("improved", "official"),
}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        default="delicious",
        help="a preset from config.py, or a new name with --set *_file=...",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a Config field for this run (repeatable), e.g. --set B=128 --set 'hidden=(1024,512)'",
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


def check_config(cfg):
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise ValueError(f"{key}={getattr(cfg, key)!r}: expected one of {', '.join(allowed)}")
    for key in [
        "B",
        "R",
        "batch_size",
        "epochs",
        "top_k",
        "eval_batch_size",
        "rows_per_shard",
        "split",
    ]:
        if getattr(cfg, key) < 1:
            raise ValueError(f"{key}={getattr(cfg, key)}: expected a positive integer")
    if cfg.B < 2:
        raise ValueError(f"B={cfg.B}: MACH needs at least 2 buckets")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ValueError(f"dropout={cfg.dropout}: expected 0 <= dropout < 1")
    if not 0.0 <= cfg.valid_fraction < 1.0:
        raise ValueError(f"valid_fraction={cfg.valid_fraction}: expected 0 <= valid_fraction < 1")
    if cfg.feat_hash_dim is not None and cfg.feat_hash_dim < 1:
        raise ValueError(f"feat_hash_dim={cfg.feat_hash_dim}: expected a positive integer or None")
    return cfg


def config_from_args(args: argparse.Namespace, base, datasets: dict):
    """The preset named by --dataset (or a new dataset on the base config), with flags applied."""
    if args.dataset in datasets:
        cfg = datasets[args.dataset]
    else:
        cfg = dataclasses.replace(base, name=args.dataset)
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


def setup_logging() -> logging.Logger:
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s", force=True)
    return logging.getLogger("mach")
