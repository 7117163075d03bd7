"""The settings of a MACH run: one frozen Config dataclass, validated when it is made, and its paths.

Each field is defined once, with its meaning, what it shapes and what values it allows:

    R: int = setting(16, "repetitions (independent models)", MODEL, at_least(1))

`kind` says what a field shapes, and so where its outputs live: DATA fields shape the TFRecords
(<work_dir>/<name>/tfrecords/), HASHING fields the lookups (<name>/<hashing>/lookups/), MODEL fields
the trained weights (<name>/<hashing>/<run>/), EVAL fields only the metrics, SYSTEM fields nothing.
The presets live in the repository's config.py; `Config()` holds the defaults a new dataset starts from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path

DATA, HASHING, MODEL, TRAIN, EVAL, SYSTEM = "data", "hashing", "model", "train", "eval", "system"
INT32_MAX = 2**31 - 1  # ids and sizes are hashed as 32-bit integers
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")  # names that become directory names


def setting(default, doc: str, kind: str, allowed=None):
    """A Config field: its default, meaning (with unit), what it shapes and its allowed values.

    allowed: a tuple of choices, or a Check; None when the type says it all.
    """
    return dataclasses.field(
        default=default, metadata={"doc": doc, "kind": kind, "allowed": allowed}
    )


@dataclass(frozen=True)
class Check:
    """A range test and its wording for the error message."""

    test: typing.Callable
    says: str


def at_least(low, none: str = ""):
    """low <= v (None allowed when `none` says what it means)."""
    if none:
        return Check(lambda v: v is None or v >= low, f"None ({none}) or at least {low}")
    return Check(lambda v: v >= low, f"at least {low}")


def between(low, high, none: str = "", open_high: bool = False):
    """low <= v <= high (or < high), None allowed when `none` says what it means."""
    says = f"{low} <= value {'<' if open_high else '<='} {high}"

    def test(v):
        return (none and v is None) or (
            v is not None and low <= v and (v < high if open_high else v <= high)
        )

    return Check(test, f"None ({none}) or {says}" if none else says)


@dataclass(frozen=True)
class Config:
    # data
    name: str = setting("custom", "dataset name; outputs go to <work_dir>/<name>/", DATA)
    data_dir: str = setting("data", "relative data file names are resolved against this", DATA)
    train_file: str | None = setting(None, "text file of training rows (.gz is fine)", DATA)
    test_file: str | None = setting(None, "text file of test rows", DATA)
    data_file: str | None = setting(
        None, "single XC-repository file, split by the two split files below", DATA
    )
    train_split_file: str | None = setting(
        None, "*_trSplit.txt: 1-based row numbers, one column per split", DATA
    )
    test_split_file: str | None = setting(None, "*_tstSplit.txt", DATA)
    split: int = setting(1, "which column of the split files (1-based)", DATA, at_least(1))
    format: str = setting(
        "xc",
        "text format: xc (repository), libsvm (1-based features), vw (label | idx:val)",
        DATA,
        ("xc", "libsvm", "vw"),
    )
    label_base: int = setting(
        0,
        "the id of the first label in the files (1 where classes are numbered from 1, as in "
        "Vowpal Wabbit's recall_tree files); ids are stored from 0",
        DATA,
        at_least(0),
    )
    feature_base: int | None = setting(
        None,
        "the id of the first feature in the files; None = the format's (xc 0, libsvm 1, vw 0)",
        DATA,
        at_least(0, "the format's"),
    )
    n_features: int | None = setting(
        None, "D, input dimension", DATA, between(1, INT32_MAX, "read from the data")
    )
    n_classes: int | None = setting(
        None, "K, number of labels", DATA, between(1, INT32_MAX, "read from the data")
    )
    rows_per_shard: int = setting(200_000, "TFRecord shard size, rows", DATA, at_least(1))
    valid_fraction: float = setting(
        0.0,
        "> 0: tuning mode, this share of the training rows replaces the test set",
        DATA,
        between(0.0, 1.0, open_high=True),
    )
    valid_seed: int = setting(
        0, "which training rows are held out in tuning mode", DATA, at_least(0)
    )

    # hashing
    B: int | None = setting(
        None,
        "buckets per repetition; None = chosen from K (mach.sizing)",
        HASHING,
        between(2, INT32_MAX, "chosen from K"),
    )
    hash_seed: int = setting(
        0,
        "repetition r hashes with murmurhash3_32 seed hash_seed + r (0 = official code)",
        HASHING,
        between(0, INT32_MAX - 10_000),
    )
    feat_hash_dim: int | None = setting(
        None,
        "hash input features to this many slots (seed hash_seed + r)",
        HASHING,
        between(1, INT32_MAX, "no feature hashing"),
    )

    # model
    R: int | None = setting(
        None,
        "repetitions (independent models); None = chosen from the rows (mach.sizing)",
        MODEL,
        at_least(1, "chosen from the rows"),
    )
    hidden: tuple[int, ...] = setting(
        (1024, 512),
        "hidden layer widths (ReLU), input -> hidden... -> B logits; () = linear",
        MODEL,
        Check(
            lambda v: all(1 <= w <= 1 << 20 for w in v), "layer widths 1..1048576, e.g. (500, 500)"
        ),
    )
    dropout: float = setting(
        0.5,
        "dropout rate after each hidden layer (training only)",
        MODEL,
        between(0.0, 1.0, open_high=True),
    )
    loss: str = setting(
        "softmax",
        "softmax: CE vs the normalised bucket multi-hot (paper); bce: sigmoid CE (official code)",
        MODEL,
        ("softmax", "bce"),
    )
    normalize: str = setting(
        "max",
        "input rows: l2 = unit length, max = largest |value| 1, none = as in the file",
        MODEL,
        ("l2", "max", "none"),
    )
    recipe: str = setting(
        "improved",
        "initialisation and loss averaging: improved (Glorot, zero biases, BCE summed over buckets), "
        "official (Tharun24/MACH: truncated normal 0.05, BCE mean over batch x B), precursor "
        "(tinytinyeye/MACH: truncated normal 0.01 weights, zero biases)",
        MODEL,
        ("improved", "official", "precursor"),
    )
    lr: float = setting(
        2e-3, "Adam learning rate", MODEL, Check(lambda v: 0 < v < math.inf, "a positive number")
    )
    adam_epsilon: float = setting(
        1e-7,
        "Adam epsilon (TF1 default 1e-8)",
        MODEL,
        Check(lambda v: 0 < v < math.inf, "a positive number"),
    )
    batch_size: int = setting(256, "rows per step", MODEL, at_least(1))
    epochs: int | None = setting(
        None,
        "passes over the training rows; None = chosen from the rows (mach.sizing)",
        MODEL,
        at_least(1, "chosen from the rows"),
    )
    seed: int = setting(
        0,
        "initialisation, shuffling and dropout seed (combined with r)",
        MODEL,
        between(0, INT32_MAX),
    )
    shuffle_buffer: int = setting(
        100_000,
        "rows held for shuffling before batching (1 = file order); when it holds every training row, "
        "the rows are parsed once, held in memory for all repetitions, and each epoch is a full "
        "permutation",
        MODEL,
        at_least(1),
    )
    sparse_first_layer: str = setting(
        "auto",
        "lazy Adam on the first layer (only the rows of the batch's features change): on, off (dense "
        "Adam, as the official code), auto = on above 50,000 inputs",
        MODEL,
        ("auto", "on", "off"),
    )

    # train: how training runs and what it keeps, not what it learns
    keep_checkpoints: int = setting(
        2,
        "full checkpoints (with Adam's state, for --resume) kept per repetition; 0 = all",
        TRAIN,
        at_least(0),
    )
    checkpoint_interval_s: float = setting(
        60.0,
        "seconds between full checkpoints (the last epoch always has one); 0 = every epoch",
        TRAIN,
        at_least(0),
    )
    keep_epoch_weights: str = setting(
        "auto",
        "weights of every epoch (for evaluate.py --epoch): all, last, auto = every epoch while they take "
        "at most 10% of the free disk and 4 GiB, past 10 epochs every n-th and the last (at most 10)",
        TRAIN,
        ("auto", "all", "last"),
    )

    # eval
    top_k: int = setting(
        5, "labels kept per row; metrics at 1, 3, 5 (those <= top_k) and top_k", EVAL, at_least(1)
    )
    score: str = setting(
        "logits",
        "what the merge adds up: logits (official code) or probs (the paper's unbiased estimator)",
        EVAL,
        ("logits", "probs"),
    )
    eval_batch_size: int = setting(1024, "test rows per forward/merge step", SYSTEM, at_least(1))
    eval_group_size: int = setting(
        0, "repetitions held in memory at once when evaluating; 0 = all R", SYSTEM, at_least(0)
    )
    merge_device: str = setting(
        "auto",
        "where the exact merge runs: host (the compiled kernel), device (in the graph, on the logits' "
        "device: only [rows, k] come back), auto = device when the logits are on a GPU",
        SYSTEM,
        ("auto", "host", "device"),
    )
    eval_budget_gb: float = setting(
        4.0,
        "disk and host memory of grouped evaluation (eval_group_size > 0), GiB: rows are evaluated "
        "in chunks whose [rows, R, B] float32 logits fit on disk, and merged in blocks whose logits "
        "fit in memory beside the process, one group's networks and the lookups",
        SYSTEM,
        Check(lambda v: 0 < v < math.inf, "a positive number of GiB"),
    )
    R_per_device: int = setting(
        0,
        "repetitions placed on each visible GPU (or logical device); 0 = all on one",
        SYSTEM,
        at_least(0),
    )
    psp_A: float = setting(
        0.55,
        "propensity model A (Jain et al. 2016)",
        EVAL,
        Check(lambda v: v > 0, "a positive number"),
    )
    psp_B: float = setting(
        1.5, "propensity model B", EVAL, Check(lambda v: v > 0, "a positive number")
    )

    # system
    work_dir: str = setting(
        "work", "all outputs; relative paths are taken from the current directory", SYSTEM
    )
    tag: str = setting("", "optional name added to the run directory's", SYSTEM)
    run: str = setting(
        "",
        "run directory under the hashing directory; '' = named by the model settings that differ "
        "from the preset (mach.config.run_name)",
        SYSTEM,
    )
    threads: int = setting(
        0, "CPU threads for TensorFlow and the kernels; 0 = all cores", SYSTEM, at_least(0)
    )
    gpu_memory_mb: int | None = setting(
        None,
        "per-process GPU memory cap (several jobs per GPU)",
        SYSTEM,
        at_least(1, "memory growth"),
    )

    def __post_init__(self):
        validate(self)

    # Paths are derived, never typed.
    def resolve(self, path: str | None) -> Path | None:
        """A data path as given, or under data_dir when relative."""
        if path is None:
            return None
        p = Path(path).expanduser()
        return p if p.is_absolute() else Path(self.data_dir).expanduser() / p

    def dataset_dir(self) -> Path:
        return Path(self.work_dir) / self.name

    def holdout_name(self) -> str:
        """'' normally; 'valid0.2-s0' in tuning mode, so tuning never touches the real test outputs."""
        return f"valid{self.valid_fraction:g}-s{self.valid_seed}" if self.valid_fraction > 0 else ""

    def tfrecord_dir(self) -> Path:
        """TFRecords depend only on the source data, so every hashing and model shares them."""
        suffix = f"-{self.holdout_name()}" if self.valid_fraction > 0 else ""
        return self.dataset_dir() / f"tfrecords{suffix}"

    def hashing_dir(self) -> Path:
        """The lookups of one hashing (B, hash seed, feature hashing) and every model trained on them."""
        fh = "none" if self.feat_hash_dim is None else str(self.feat_hash_dim)
        name = f"B{self.B}-hs{self.hash_seed}-fh{fh}"
        if self.valid_fraction > 0:
            name = f"{self.holdout_name()}-{name}"
        return self.dataset_dir() / name

    def run_dir(self) -> Path:
        """Checkpoints, weights, logs and metrics of one model."""
        return self.hashing_dir() / (self.run or "default")

    def lookup_dir(self) -> Path:
        return self.hashing_dir() / "lookups"

    def label_lookup_path(self, r: int) -> Path:
        return self.lookup_dir() / f"label_r{r:02d}.npy"

    def inverse_lookup_path(self, r: int) -> Path:
        return self.lookup_dir() / f"inverse_r{r:02d}.npz"

    def feature_lookup_path(self, r: int) -> Path:
        return self.lookup_dir() / f"feature_r{r:02d}.npy"

    def ckpt_dir(self, r: int) -> Path:
        return self.run_dir() / "ckpt" / f"r{r:02d}"

    def log_dir(self) -> Path:
        return self.run_dir() / "logs"

    def hash_seed_for(self, r: int) -> int:
        return self.hash_seed + r

    def id_bases(self) -> tuple[int, int]:
        """(first label id, first feature id) of the data files."""
        from mach.data.formats import id_bases

        return id_bases(self.format, self.label_base, self.feature_base)

    def input_dim(self) -> int:
        """Width of the model's input layer: D, or the feature-hash dimension."""
        return self.feat_hash_dim if self.feat_hash_dim is not None else self.n_features

    def params_per_repetition(self) -> int:
        """Weights and biases of one repetition's network (sizes resolved)."""
        sizes = [self.input_dim(), *self.hidden, self.B]
        return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


FIELDS = {f.name: f for f in dataclasses.fields(Config)}
# Old spellings, still accepted with a note: {old: new}.
RENAMED = {"merge": "score"}


def fields_of(kind: str) -> list[str]:
    return [name for name, f in FIELDS.items() if f.metadata["kind"] == kind]


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


HINTS = typing.get_type_hints(Config)


def validate(cfg: Config) -> None:
    """A ValueError naming the first field of the wrong type or out of its range, and what is allowed."""
    for name, f in FIELDS.items():
        value, allowed = getattr(cfg, name), f.metadata["allowed"]
        if not _type_matches(value, HINTS[name]):
            raise ValueError(f"{name}={value!r}: expected a value of type {HINTS[name]}")
        if isinstance(allowed, tuple) and value not in allowed:
            raise ValueError(f"{name}={value!r}: expected one of {', '.join(allowed)}")
        if isinstance(allowed, Check) and not allowed.test(value):
            raise ValueError(f"{name}={value!r}: expected {allowed.says}")
    for name in ["name", "tag", "run"]:
        value = getattr(cfg, name)
        if (value or name == "name") and not SAFE_NAME.match(value):
            raise ValueError(
                f"{name}={value!r}: expected letters, digits and . _ + - (it names a directory)"
            )
    if not cfg.work_dir:
        raise ValueError("work_dir='': expected a directory")
    if None not in (cfg.n_classes, cfg.B) and cfg.B > cfg.n_classes:
        raise ValueError(
            f"B={cfg.B} is larger than the number of classes K={cfg.n_classes}: "
            "expected 2 <= B <= K (MACH hashes K classes into B < K buckets)"
        )


def parse_value(text: str, hint):
    """A --set value: a Python literal (ast.literal_eval), else the bare word as a string."""
    import ast

    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text  # a bare word such as loss=bce is a string
    tuple_hint = any(
        typing.get_origin(h) is tuple for h in (hint, *typing.get_args(hint))
    )  # tuple[...] or tuple[...] | None
    if tuple_hint and isinstance(value, (int, list)):
        value = tuple(value) if isinstance(value, list) else (value,)
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and _type_matches(1.0, hint)
        and not _type_matches(1, hint)
    ):
        value = float(value)
    return value


def renamed_key(key: str, value, notes: list[str]) -> str:
    """The current name of a field given by its old spelling (with a note), or key itself."""
    if key == "merge" and value in ("exact", "candidates", "approx"):
        return key  # the merge kind is a flag of evaluate.py/export.py, not a field: unknown below
    if key in RENAMED:
        notes.append(f"note: the field {key} is now called {RENAMED[key]}")
        return RENAMED[key]
    return key


def apply_overrides(cfg: Config, pairs: list[str], notes: list[str] | None = None) -> Config:
    """cfg with each `key=value` applied, values parsed and checked against the field's type and range."""
    notes = [] if notes is None else notes
    valid = ", ".join(sorted(FIELDS))
    changes = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE; valid keys: {valid}")
        key = renamed_key(key, text.strip(), notes)
        if key not in FIELDS:
            raise ValueError(f"--set {key}: unknown key; valid keys: {valid}")
        value = parse_value(text.strip(), HINTS[key])
        if not _type_matches(value, HINTS[key]):
            raise ValueError(
                f"--set {key}={text}: expected a value of type {HINTS[key]}, got {value!r}; valid keys: {valid}"
            )
        changes[key] = value
    return dataclasses.replace(cfg, **changes)


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(values: dict) -> Config:
    """A Config from to_dict's output (or a config.json, older spellings included); unknown keys are
    left out, tuples restored."""
    values = {RENAMED.get(k, k): v for k, v in values.items()}
    fields = {k: v for k, v in values.items() if k in FIELDS}
    if isinstance(fields.get("hidden"), list):
        fields["hidden"] = tuple(fields["hidden"])
    return Config(**fields)


def _short(value) -> str:
    if isinstance(value, tuple):
        return "x".join(map(str, value)) or "linear"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def run_name(cfg: Config, preset: Config) -> str:
    """A readable name of what makes cfg's model differ from the preset's: 'default', or e.g.
    'R4-epochs2-lossbce' (field order), with cfg.tag appended. Over 80 characters, the tail is a hash.
    """
    parts = [
        f"{name}{_short(getattr(cfg, name))}"
        for name in fields_of(MODEL)
        if getattr(cfg, name) != getattr(preset, name)
    ]
    parts += [cfg.tag] if cfg.tag else []
    name = "-".join(parts) or "default"
    if len(name) > 80:
        name = name[:70] + "-" + hashlib.sha256(name.encode()).hexdigest()[:9]
    return name


def with_run_name(cfg: Config, preset: Config) -> Config:
    """cfg with its run directory named (unless already named), from its differences to the preset."""
    return cfg if cfg.run else dataclasses.replace(cfg, run=run_name(cfg, preset))


def describe_fields(kind: str | None = None) -> str:
    """One line per field: name, default and meaning (for --help-config and docs)."""
    lines = []
    for name, f in FIELDS.items():
        if kind is None or f.metadata["kind"] == kind:
            lines.append(f"{name:<22} {f.default!r:<14} {f.metadata['doc']}")
    return "\n".join(lines)
