"""What a trained repetition is: the config fields that shape its weights, saved beside its checkpoints.

Training writes `ckpt/rNN/config.json`; resuming and evaluation refuse a checkpoint whose identity differs
from the config at hand, so no run ever merges or continues weights of another model.
"""

from __future__ import annotations

import json

from mach.files import read_json

# Fields that shape a repetition's weights: a checkpoint is only resumed or merged when they agree.
MODEL_FIELDS = [
    "n_features",
    "n_classes",
    "B",
    "hash_seed",
    "feat_hash_dim",
    "hidden",
    "loss",
    "normalize",
    "seed",
    "recipe",
]


def model_identity(cfg, lookup_sha256: str) -> dict:
    identity = {field: getattr(cfg, field) for field in MODEL_FIELDS}
    identity["hidden"] = list(cfg.hidden)
    identity["label_lookup_sha256"] = lookup_sha256
    return identity


def identity_differences(saved: dict, expected: dict) -> str:
    """'' when equal, else 'field: checkpoint X vs now Y, ...'."""
    return ", ".join(
        f"{k}: checkpoint {saved.get(k)!r} vs now {v!r}"
        for k, v in expected.items()
        if saved.get(k) != v
    )


def read_checkpoint_config(cfg, r: int) -> dict:
    """The config.json saved with repetition r, or a FileNotFoundError/ValueError saying what to do."""
    path = cfg.ckpt_dir(r) / "config.json"
    if not path.exists():
        raise FileNotFoundError(
            f"no trained repetition r={r} at {cfg.ckpt_dir(r)}; "
            f"run `python train.py --dataset {cfg.name} --repetitions {r}`"
        )
    try:
        saved = read_json(path)
        saved["identity"]["B"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise ValueError(
            f"{path} is corrupt (not the JSON that train.py writes); restore it from a backup, or "
            f"retrain repetition {r} with `python train.py --dataset {cfg.name} --repetitions {r} --overwrite`"
        ) from None
    return saved


def check_checkpoint_config(cfg, r: int, lookup_sha256: str, action: str) -> dict:
    """The saved config.json of repetition r, refused when it disagrees with cfg or the lookup."""
    saved = read_checkpoint_config(cfg, r)
    details = identity_differences(saved["identity"], model_identity(cfg, lookup_sha256))
    if details:
        raise ValueError(
            f"cannot {action} {cfg.ckpt_dir(r)}: it was trained with a different setup ({details}); "
            "use the matching --set options, or --set tag=NAME to keep another model beside it"
        )
    return saved
