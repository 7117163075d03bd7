"""MACH experiment settings: one Config dataclass and one preset per dataset.

Edit a preset here to change an experiment for good; override one run from the command line:

    python train.py --dataset delicious --set B=128 --set R=32 --set "hidden=(1024,)"

A dataset that is not listed runs from flags alone (sizes are read from the file header):

    python preprocess.py --dataset mydata --set train_file=/data/x_train.txt --set test_file=/data/x_test.txt

The paper presets (wiki10_31k, delicious200k, amazon670k, amazon3m, odp, imagenet22k) carry the settings
of the official code, each with its source; `python reproduce.py --dataset NAME` runs one end to end and
compares with REFERENCES below.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Config:
    # data
    # dataset name; outputs go to <work_dir>/<name>/
    name: str = "custom"
    # relative file names below are resolved against this
    data_dir: str = str(REPO_DIR / "data")
    # text file of training rows (.gz is fine)
    train_file: str | None = None
    # text file of test rows
    test_file: str | None = None
    # single XC-repo file, split by the two split files below instead
    data_file: str | None = None
    # *_trSplit.txt: 1-based row numbers, one column per split
    train_split_file: str | None = None
    # *_tstSplit.txt
    test_split_file: str | None = None
    # which column of the split files (1-based, as in the repository)
    split: int = 1
    # text format: "xc" (repository), "libsvm" (label idx:val, 1-based), "vw" (label | idx:val)
    format: str = "xc"
    # D, input dimension; None = read from the file header
    n_features: int | None = None
    # K, number of labels; None = read from the file header
    n_classes: int | None = None
    # TFRecord shard size, rows
    rows_per_shard: int = 200_000
    # > 0: tuning mode, this share of the training rows replaces the test set
    valid_fraction: float = 0.0
    # which training rows are held out in tuning mode
    valid_seed: int = 0

    # hashing
    # buckets per repetition; None = chosen from K by mach.hashing.default_buckets (K up to 128,
    # else about 4 sqrt(K) rounded to a power of two, at least 128: Delicious' K=983 -> 128)
    B: int | None = None
    # repetitions (independent models)
    R: int = 16
    # repetition r hashes with murmurhash3_32 seed hash_seed + r (0 = official code)
    hash_seed: int = 0
    # hash input features to this many slots; None = no feature hashing
    feat_hash_dim: int | None = None

    # model
    # hidden layer widths (ReLU), input -> hidden... -> B logits; () = linear
    hidden: tuple[int, ...] = (1024, 512)
    # dropout rate after each hidden layer (training only)
    dropout: float = 0.5
    # "softmax": CE vs normalised bucket multi-hot (paper); "bce": sigmoid CE (official code)
    loss: str = "softmax"
    # input rows: "l2" = unit length, "max" = largest |value| 1, "none" = as in the file
    normalize: str = "max"

    # train
    # initialisation and loss averaging: "improved" (Glorot, zero biases, BCE summed over buckets),
    # "official" (Tharun24/MACH: truncated normal 0.05 for weights and biases, BCE mean over batch x B),
    # "precursor" (tinytinyeye/MACH: truncated normal 0.01 weights, zero biases)
    recipe: str = "improved"
    # Adam learning rate
    lr: float = 2e-3
    # Adam epsilon (TF1 default 1e-8; the precursor's ImageNet demo used 1.0)
    adam_epsilon: float = 1e-7
    # rows per step
    batch_size: int = 256
    # passes over the training rows; None = 10, or more on small data so that training takes at least
    # 100 steps (mach.prepare.default_epochs)
    epochs: int | None = None
    # initialisation, shuffling and dropout seed (combined with r)
    seed: int = 0
    # rows held for shuffling before batching (1 = file order)
    shuffle_buffer: int = 100_000
    # checkpoints kept per repetition; 0 = every epoch
    keep_checkpoints: int = 2
    # seconds between checkpoints: an epoch ending sooner after the last one is not saved (the last
    # epoch always is; with keep_checkpoints=0 every epoch is); 0 = save every epoch
    checkpoint_interval_s: float = 60.0
    # lazy Adam on the first layer: only the rows of features in the batch change (its gradient is
    # sparse); "on", "off" (dense gradient and Adam, as the official code), "auto" = on above 50,000 inputs
    sparse_first_layer: str = "auto"

    # eval
    # k of the top-k kept by the merge; metrics are reported at 1, 3, 5 (those <= top_k) and top_k
    top_k: int = 5
    # "logits": sum raw logits (official); "probs": paper's unbiased estimator
    merge: str = "logits"
    # test rows per forward/merge step
    eval_batch_size: int = 1024
    # repetitions held in memory at once when evaluating; 0 = all R
    eval_group_size: int = 0
    # repetitions placed on each visible GPU (or logical device); 0 = all on one
    R_per_device: int = 0
    # propensity model A (Jain et al. 2016); 0.55 is the repository's default
    psp_A: float = 0.55
    # propensity model B
    psp_B: float = 1.5

    # system
    # all outputs; relative paths are taken from the current directory
    work_dir: str = "work"
    # optional run name, to keep variants of the same hashing apart
    tag: str = ""
    # CPU threads for TF and the merge kernel; 0 = all cores
    threads: int = 0
    # per-process GPU memory cap (several jobs per GPU); None = growth
    gpu_memory_mb: int | None = None

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


# What a dataset without a preset gets: the recipe tuned on Delicious (two hidden layers, dropout 0.5,
# lr 2e-3, rows scaled to max 1), B from K and epochs from the rows, checked against the peers on the
# development suite (README, "Defaults on new data").
BASE = Config()

# What all of the official code trains with: sigmoid BCE, TF1 Adam (lr 1e-3, epsilon 1e-8), raw feature
# values, no dropout, truncated-normal initialisation (README, "Reproducing the paper", lists what differs).
OFFICIAL = dict(
    recipe="official", loss="bce", normalize="none", dropout=0.0, lr=1e-3, adam_epsilon=1e-8
)
# The precursor code (tinytinyeye/MACH @ cfeeab5): softmax over B, Adam defaults, linear models.
PRECURSOR = dict(
    recipe="precursor", loss="softmax", normalize="none", dropout=0.0, hidden=(), lr=1e-3
)
XC_PSP = dict(psp_A=0.55, psp_B=1.5)  # the repository's propensity model, Amazon sets excepted
AMAZON_PSP = dict(psp_A=0.6, psp_B=2.6)


def _xc_files(folder: str) -> dict:
    """The file names the repository's downloads unpack to (README, "Reproducing the paper")."""
    return dict(train_file=f"{folder}/train.txt", test_file=f"{folder}/test.txt")


DATASETS: dict[str, Config] = {
    # Bundled demo: Delicious (Tsoumakas et al. 2008) from the Extreme Classification Repository.
    # Chosen on a validation split of the training rows (README, "Tuning on Delicious").
    "delicious": dataclasses.replace(
        BASE,
        name="delicious",
        data_file="delicious/Delicious_data.txt.gz",
        train_split_file="delicious/delicious_trSplit.txt.gz",
        test_split_file="delicious/delicious_tstSplit.txt.gz",
        n_features=500,
        n_classes=983,
        B=128,
        R=16,
        hidden=(1024, 512),
        dropout=0.5,
        lr=2e-3,
        normalize="max",
        epochs=10,
        **XC_PSP,
    ),
    # Source: Tharun24/MACH @ 0fda7db, wiki10_31k/src/run.sh and train_single.py (32 runs, B=2000,
    # batch 100, 60 epochs; two hidden layers of 500; feature_dim 101938).
    "wiki10_31k": dataclasses.replace(
        BASE,
        name="wiki10_31k",
        **_xc_files("Wiki10-31K"),
        n_features=101_938,
        n_classes=30_938,
        B=2000,
        R=32,
        hidden=(500, 500),
        batch_size=100,
        epochs=60,
        **OFFICIAL,
        **XC_PSP,
    ),
    # Source: Tharun24/MACH @ 0fda7db, delicious_200k/src/run.sh and train_single.py (B=5000, batch 1000,
    # 20 epochs, (500, 500), the full 782,585 features: no feature hashing).
    "delicious200k": dataclasses.replace(
        BASE,
        name="delicious200k",
        **_xc_files("Delicious-200K"),
        n_features=782_585,
        n_classes=205_443,
        B=5000,
        R=32,
        hidden=(500, 500),
        batch_size=1000,
        epochs=20,
        **OFFICIAL,
        **XC_PSP,
    ),
    # Source: Tharun24/MACH @ 0fda7db, amazon_670k/src/run.sh and train_single.py (B=10000, batch 1000,
    # 40 epochs, (500, 500), feature_dim 135909).
    "amazon670k": dataclasses.replace(
        BASE,
        name="amazon670k",
        **_xc_files("Amazon-670K"),
        n_features=135_909,
        n_classes=670_091,
        B=10_000,
        R=32,
        hidden=(500, 500),
        batch_size=1000,
        epochs=40,
        **OFFICIAL,
        **AMAZON_PSP,
    ),
    # Source: Tharun24/MACH @ 430fd9f, src/config.py (train_config and eval_config: B=10000, R=16,
    # feat_hash_dim 100000, hidden 4096, batch 2000, 10 epochs).
    "amazon3m": dataclasses.replace(
        BASE,
        name="amazon3m",
        **_xc_files("Amazon-3M"),
        n_features=337_067,
        n_classes=2_812_281,
        B=10_000,
        R=16,
        feat_hash_dim=100_000,
        hidden=(4096,),
        batch_size=2000,
        epochs=10,
        **OFFICIAL,
        **AMAZON_PSP,
    ),
    # Source: tinytinyeye/MACH @ cfeeab5, src/odp/ (odp_demo.py: D 422713, K 105033; sparse_multiclf.py:
    # linear softmax classifiers, batch 64, 5 epochs, AdamOptimizer() defaults). B and R are command-line
    # arguments there; B=32, R=50 are the paper's ODP setting. Data: Vowpal Wabbit text (`label | idx:val`).
    "odp": dataclasses.replace(
        BASE,
        name="odp",
        train_file="ODP/train.vw",
        test_file="ODP/test.vw",
        format="vw",
        n_features=422_713,
        n_classes=105_033,
        B=32,
        R=50,
        batch_size=64,
        epochs=5,
        **PRECURSOR,
        adam_epsilon=1e-8,
    ),
    # Source: tinytinyeye/MACH @ cfeeab5, src/imagenet/ (imagenet_demo.py: D 6144 dense features, K 21841;
    # dense_multiclf.py: linear softmax, batch 256, 3 epochs, Adam epsilon 1.0). B and R are command-line
    # arguments there and the paper's ImageNet setting is not recorded here: B=512, R=20 are our choice.
    "imagenet22k": dataclasses.replace(
        BASE,
        name="imagenet22k",
        train_file="ImageNet-22K/train.vw",
        test_file="ImageNet-22K/test.vw",
        format="vw",
        n_features=6144,
        n_classes=21_841,
        B=512,
        R=20,
        batch_size=256,
        epochs=3,
        **PRECURSOR,
        adam_epsilon=1.0,
    ),
}

# Results each paper preset should be compared with, by source. Values are the published figures, not ours;
# None where this repository has not verified one (README, "Reproducing the paper").
XC_REPO = "Extreme Classification Repository, benchmarked results (manikvarma.org/downloads/XC)"
REFERENCES: dict[str, dict] = {
    # Repository rows: the benchmarked-results tables of XC_REPO as published at
    # http://manikvarma.org/downloads/XC/XMLRepository.html (read from its source,
    # manikvarma/manikvarma.github.io @ 41a3c44, 2025-02-28). "*": BoW features on a 24-core CPU;
    # "as published": the page copies the method's own paper (other features or splits).
    # "paper": the MACH paper's own (P@1, P@3, P@5); not verified here, so None.
    "wiki10_31k": {
        "source": "Tharun24/MACH @ 0fda7db, wiki10_31k/",
        "paper": None,
        "results": [
            {"method": "DiSMEC*", "source": XC_REPO, "P@1": 85.20, "P@3": 74.60, "P@5": 65.90},
            {"method": "Parabel*", "source": XC_REPO, "P@1": 84.17, "P@3": 72.46, "P@5": 63.37},
            {
                "method": "AnnexML* (best BoW P@1)",
                "source": XC_REPO,
                "P@1": 86.49,
                "P@3": 74.27,
                "P@5": 64.20,
            },
            {
                "method": "MatchXML (best P@1, as published)",
                "source": XC_REPO,
                "P@1": 89.74,
                "P@3": 81.51,
                "P@5": 72.18,
            },
            {
                "method": "MACH (third-party PyTorch)",
                "source": "github.com/Odaimoko/MACH-Pytorch, exp-sota.xlsx, sheet Wiki",
                "P@1": 86.09,
                "P@3": 73.76,
                "P@5": 64.31,
            },
        ],
    },
    "delicious200k": {
        "source": "Tharun24/MACH @ 0fda7db, delicious_200k/",
        "paper": None,
        "results": [
            {"method": "DiSMEC*", "source": XC_REPO, "P@1": 45.50, "P@3": 38.70, "P@5": 35.50},
            # The page lists Parabel twice; the other row reads 46.97 / 40.08 / 36.63.
            {"method": "Parabel*", "source": XC_REPO, "P@1": 46.86, "P@3": 40.08, "P@5": 36.70},
            {"method": "AnnexML*", "source": XC_REPO, "P@1": 46.79, "P@3": 40.72, "P@5": 37.67},
            {
                "method": "SLEEC* (best P@1)",
                "source": XC_REPO,
                "P@1": 47.85,
                "P@3": 42.21,
                "P@5": 39.43,
            },
        ],
    },
    "amazon670k": {
        "source": "Tharun24/MACH @ 0fda7db, amazon_670k/",
        "paper": None,
        "results": [
            {"method": "DiSMEC*", "source": XC_REPO, "P@1": 44.70, "P@3": 39.70, "P@5": 36.10},
            {"method": "Parabel*", "source": XC_REPO, "P@1": 44.89, "P@3": 39.80, "P@5": 36.00},
            {"method": "AnnexML*", "source": XC_REPO, "P@1": 42.39, "P@3": 36.89, "P@5": 32.98},
            {
                "method": "Bonsai* (best BoW P@1)",
                "source": XC_REPO,
                "P@1": 45.58,
                "P@3": 40.39,
                "P@5": 36.60,
            },
            {
                "method": "Renee (best P@1)",
                "source": XC_REPO,
                "P@1": 54.23,
                "P@3": 48.22,
                "P@5": 43.83,
            },
        ],
    },
    "amazon3m": {
        "source": "Tharun24/MACH @ 430fd9f, src/config.py",
        "paper": None,
        "results": [
            {"method": "DiSMEC*", "source": XC_REPO, "P@1": 47.34, "P@3": 44.96, "P@5": 42.80},
            {"method": "Parabel*", "source": XC_REPO, "P@1": 47.48, "P@3": 44.65, "P@5": 42.53},
            {
                "method": "AnnexML* (best BoW P@1)",
                "source": XC_REPO,
                "P@1": 49.30,
                "P@3": 45.55,
                "P@5": 43.11,
            },
            {
                "method": "MatchXML (best P@1, as published)",
                "source": XC_REPO,
                "P@1": 55.88,
                "P@3": 52.39,
                "P@5": 49.80,
            },
        ],
    },
    # Top-1 accuracy (%). The precursor paper (Huang, Wang, Medini, Shrivastava, "Extreme
    # Classification in Log Memory", 2018), abstract: MACH 19.28 on ODP; the best earlier baseline,
    # one-vs-all with 40 billion parameters (160 GB), 9. The NeurIPS paper's own values are not verified.
    "odp": {
        "source": "tinytinyeye/MACH @ cfeeab5, src/odp/",
        "paper": None,
        "results": [
            {
                "method": "MACH (precursor paper)",
                "source": "paperswithcode.com/paper/extreme-classification-in-log-memory, abstract",
                "accuracy": 19.28,
            },
            {
                "method": "one-vs-all (precursor paper)",
                "source": "paperswithcode.com/paper/extreme-classification-in-log-memory, abstract",
                "accuracy": 9.0,
            },
        ],
    },
    "imagenet22k": {
        "source": "tinytinyeye/MACH @ cfeeab5, src/imagenet/",
        "paper": None,
        "results": [],
    },
}
