"""MACH experiment settings: one Config dataclass and one preset per dataset.

Edit a preset here to change an experiment for good; override one run from the command line:

    python train.py --dataset delicious --set B=128 --set R=32 --set "hidden=(1024,)"

A dataset that is not listed runs from flags alone (sizes are read from the file header):

    python preprocess.py --dataset mydata --set train_file=/data/x_train.txt --set test_file=/data/x_test.txt
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Config:
    # data
    name: str = "custom"  # dataset name; outputs go to <work_dir>/<name>/
    data_dir: str = str(REPO_DIR / "data")  # relative file names below are resolved against this
    train_file: str | None = None  # XC-repo text file of training rows (.gz is fine)
    test_file: str | None = None  # XC-repo text file of test rows
    data_file: str | None = None  # single XC-repo file, split by the two split files below instead
    train_split_file: str | None = None  # *_trSplit.txt: 1-based row numbers, one column per split
    test_split_file: str | None = None  # *_tstSplit.txt
    split: int = 1  # which column of the split files (1-based, as in the repository)
    format: str = "xc"  # text format: "xc" (repository), "libsvm" (label idx:val, 1-based), "vw"
    n_features: int | None = None  # D, input dimension; None = read from the file header
    n_classes: int | None = None  # K, number of labels; None = read from the file header
    rows_per_shard: int = 200_000  # TFRecord shard size, rows
    valid_fraction: float = (
        0.0  # > 0: tuning mode, this share of the training rows replaces the test set
    )
    valid_seed: int = 0  # which training rows are held out in tuning mode

    # hashing
    B: int = 64  # buckets per repetition
    R: int = 16  # repetitions (independent models)
    hash_seed: int = (
        0  # repetition r hashes with murmurhash3_32 seed hash_seed + r (0 = official code)
    )
    feat_hash_dim: int | None = (
        None  # hash input features to this many slots; None = no feature hashing
    )

    # model
    hidden: tuple[int, ...] = (500,)  # hidden layer widths (ReLU), input -> hidden... -> B logits
    dropout: float = 0.0  # dropout rate after each hidden layer (training only)
    loss: str = (
        "softmax"  # "softmax": CE vs normalised bucket multi-hot (paper); "bce": sigmoid CE (official)
    )
    normalize: str = (
        "l2"  # input rows: "l2" = unit length, "max" = largest |value| 1, "none" = as in the file
    )

    # train
    recipe: str = "improved"  # "official": the official code's init, Adam epsilon and loss averaging
    lr: float = 1e-3  # Adam learning rate
    adam_epsilon: float = 1e-7  # Adam epsilon (TF1 default 1e-8; the ImageNet demo used 1.0)
    batch_size: int = 256  # rows per step
    epochs: int = 10  # passes over the training rows
    seed: int = 0  # initialisation, shuffling and dropout seed (combined with r)
    shuffle_buffer: int = 100_000  # rows held for shuffling before batching
    keep_checkpoints: int = 2  # per repetition

    # eval
    top_k: int = 5  # k of the top-k kept by the merge; metrics are reported at 1, 3, ..., top_k
    merge: str = (
        "logits"  # "logits": sum raw logits (official); "probs": paper's unbiased estimator
    )
    eval_batch_size: int = 1024  # test rows per forward/merge step
    eval_group_size: int = 0  # repetitions held in memory at once when evaluating; 0 = all R
    R_per_device: int = 0  # repetitions placed on each visible GPU (or logical device); 0 = all on one
    psp_A: float = 0.55  # propensity model A (Jain et al. 2016); 0.55 is the repository's default
    psp_B: float = 1.5  # propensity model B

    # system
    work_dir: str = "work"  # all outputs; relative paths are taken from the current directory
    tag: str = ""  # optional run name, to keep variants of the same hashing apart
    threads: int = 0  # CPU threads for TF and the merge kernel; 0 = all cores
    gpu_memory_mb: int | None = (
        None  # per-process GPU memory cap (several jobs per GPU); None = growth
    )

    def resolve(self, path: str | None) -> Path | None:
        """A data path as given, or under data_dir when relative."""
        if path is None:
            return None
        p = Path(path).expanduser()
        return p if p.is_absolute() else Path(self.data_dir) / p

    def dataset_dir(self) -> Path:
        return Path(self.work_dir) / self.name

    def holdout_name(self) -> str:
        """'' normally; 'valid0.2-s0' in tuning mode, so tuning never touches the real test outputs."""
        return f"valid{self.valid_fraction:g}-s{self.valid_seed}" if self.valid_fraction > 0 else ""

    def tfrecord_dir(self) -> Path:
        """TFRecords depend only on the source data, so every B/R/seed shares them."""
        return self.dataset_dir() / (
            "tfrecords" + (f"-{self.holdout_name()}" if self.valid_fraction > 0 else "")
        )

    def run_dir(self) -> Path:
        """Lookups, checkpoints and metrics of one hashing; another B/seed/feature hash lives apart."""
        fh = "none" if self.feat_hash_dim is None else str(self.feat_hash_dim)
        name = f"B{self.B}-hs{self.hash_seed}-fh{fh}" + (f"-{self.tag}" if self.tag else "")
        if self.valid_fraction > 0:
            name = f"{self.holdout_name()}-{name}"
        return self.dataset_dir() / name

    def lookup_dir(self) -> Path:
        return self.run_dir() / "lookups"

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

    def input_dim(self) -> int:
        """Width of the model's input layer: D, or the feature-hash dimension."""
        return self.feat_hash_dim if self.feat_hash_dim is not None else self.n_features


BASE = Config()

DATASETS: dict[str, Config] = {
    # Bundled demo: Delicious (Tsoumakas et al. 2008) from the Extreme Classification Repository.
    "delicious": dataclasses.replace(
        BASE,
        name="delicious",
        data_file="delicious/Delicious_data.txt.gz",
        train_split_file="delicious/delicious_trSplit.txt.gz",
        test_split_file="delicious/delicious_tstSplit.txt.gz",
        n_features=500,
        n_classes=983,
        # Chosen on a validation split of the training rows (README, "Tuning on Delicious").
        B=128,
        R=16,
        hidden=(1024, 512),
        dropout=0.5,
        lr=2e-3,
        normalize="max",
        epochs=10,
        psp_A=0.55,
        psp_B=1.5,
    ),
    # The paper's public datasets (real sizes; files from the Extreme Classification Repository).
    "wiki10_31k": dataclasses.replace(
        BASE,
        name="wiki10_31k",
        train_file="Wiki10-31K/train.txt",
        test_file="Wiki10-31K/test.txt",
        n_features=101_938,
        n_classes=30_938,
        B=2000,
        R=16,
        hidden=(1024,),
        psp_A=0.55,
        psp_B=1.5,
    ),
    "delicious200k": dataclasses.replace(
        BASE,
        name="delicious200k",
        train_file="Delicious-200K/train.txt",
        test_file="Delicious-200K/test.txt",
        n_features=782_585,
        n_classes=205_443,
        B=5000,
        R=16,
        feat_hash_dim=100_000,
        hidden=(1024,),
        batch_size=1000,
        psp_A=0.55,
        psp_B=1.5,
    ),
    "amazon670k": dataclasses.replace(
        BASE,
        name="amazon670k",
        train_file="Amazon-670K/train.txt",
        test_file="Amazon-670K/test.txt",
        n_features=135_909,
        n_classes=670_091,
        B=10_000,
        R=32,
        hidden=(1024,),
        batch_size=1000,
        psp_A=0.6,
        psp_B=2.6,
    ),
    # The setting the official MACH code ships for Amazon-3M.
    "amazon3m": dataclasses.replace(
        BASE,
        name="amazon3m",
        train_file="Amazon-3M/train.txt",
        test_file="Amazon-3M/test.txt",
        n_features=337_067,
        n_classes=2_812_281,
        B=10_000,
        R=16,
        feat_hash_dim=100_000,
        hidden=(4096,),
        loss="bce",
        batch_size=2000,
        epochs=10,
        psp_A=0.6,
        psp_B=2.6,
    ),
}
