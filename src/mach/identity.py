"""What a trained repetition is: the settings and data that shaped its weights, saved beside them.

Training writes `ckpt/rNN/config.json`; resuming and evaluation refuse a repetition whose identity
differs from the config and data at hand, so no run ever merges or continues weights of another model.
R and epochs are not part of it: repetition r after epoch e is the same whatever they are.
"""

from __future__ import annotations

import hashlib
import json

from mach.config import HASHING, MODEL, fields_of, to_dict
from mach.files import read_json, write_json_atomic

MODEL_FIELDS = ["n_features", "n_classes", *fields_of(HASHING)]
MODEL_FIELDS += [name for name in fields_of(MODEL) if name not in ("R", "epochs")]


def data_fingerprint(data_manifest: dict) -> str:
    """A short checksum of the training data: the source files' contents, format, split and sizes
    (not their paths, so moving the files keeps it)."""
    inputs = {
        key: value["sha256"] if isinstance(value, dict) and "sha256" in value else value
        for key, value in data_manifest["inputs"].items()
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def model_identity(cfg, lookup_sha256: str, data: str) -> dict:
    identity = {name: getattr(cfg, name) for name in MODEL_FIELDS}
    identity["hidden"] = list(cfg.hidden)
    identity["label_lookup_sha256"] = lookup_sha256
    identity["data"] = data
    return identity


def identity_differences(saved: dict, expected: dict) -> str:
    """'' when equal, else 'field: trained with X, now Y, ...'."""
    return ", ".join(
        f"{k}: trained with {saved.get(k)!r}, now {v!r}"
        for k, v in expected.items()
        if saved.get(k) != v
    )


def write_repetition_config(cfg, lookup_sha256: str, data: str, ckpt_dir) -> None:
    """config.json of a repetition's directory: its identity and the whole resolved config."""
    identity = model_identity(cfg, lookup_sha256, data)
    write_json_atomic(ckpt_dir / "config.json", {"identity": identity, "config": to_dict(cfg)})


def read_repetition_config(cfg, r: int) -> dict:
    """The config.json saved with repetition r, or a FileNotFoundError/ValueError saying what to do."""
    path = cfg.ckpt_dir(r) / "config.json"
    if not path.exists():
        raise FileNotFoundError(
            f"no trained repetition r={r} at {cfg.ckpt_dir(r)}; train it with "
            f"`python train.py --dataset {cfg.name} --repetitions {r}` and the same --set options"
        )
    try:
        saved = read_json(path)
        saved["identity"]["B"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise ValueError(
            f"{path} is damaged (not the JSON that train.py writes): restore it from a backup, or "
            f"retrain repetition {r} with `python train.py --dataset {cfg.name} --repetitions {r} "
            "--overwrite` and the same --set options"
        ) from None
    return saved


def check_repetition(cfg, r: int, lookup_sha256: str, data: str | None, action: str) -> dict:
    """The saved config.json of repetition r, refused when it disagrees with cfg, lookup or data
    (data None: whatever data it was trained on, as prediction needs no training data)."""
    saved = read_repetition_config(cfg, r)
    expected = model_identity(cfg, lookup_sha256, data)
    if data is None:
        expected["data"] = saved["identity"].get("data")
    details = identity_differences(saved["identity"], expected)
    if not details:
        return saved
    if [k for k, v in expected.items() if saved["identity"].get(k) != v] == ["data"]:
        raise ValueError(
            f"cannot {action} {cfg.ckpt_dir(r)}: it was trained on other data than "
            f"{cfg.tfrecord_dir()} now holds (the source files changed since). Train the new data "
            f"under another dataset name (--dataset NEW --set train_file=...), restore the old files "
            f"and re-run preprocess.py, or retrain this run with --overwrite"
        )
    raise ValueError(
        f"cannot {action} {cfg.ckpt_dir(r)}: it was trained with other settings ({details}); "
        "pass the settings it was trained with, or --overwrite to retrain it"
    )
