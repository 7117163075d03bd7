"""MACH presets: one experiment per dataset, each with its source, command and expected result.

Edit a preset to change an experiment for good; override one run from the command line:

    python train.py --dataset delicious --set B=64 --set R=8

Each field is described in `mach.Config` (src/mach/config.py; `python train.py --help-config` lists
them). A dataset without a preset runs on the defaults from flags alone (sizes from the file header):

    python preprocess.py --dataset mydata --set train_file=/data/x_train.txt --set test_file=/data/x_test.txt

Dataset sizes and published results live in one table, mach.datasets.DATASETS.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mach import Config
from mach.datasets import DATASETS as FACTS

# What a dataset without a preset starts from: Config's defaults, with data under this repository.
# Its sizes are chosen from the data once preprocess has counted it (mach.sizing): B = K up to 128
# classes, else ~4 sqrt(K); R = 8 below 20,000 training rows, 16 above; epochs = 10, or enough for
# 100 optimiser steps; hidden stays (1024, 512). Chosen on 16 datasets: experiments/defaults-sized.
BASE = Config(data_dir=str(Path(__file__).resolve().parent / "data"))

# The official code's training recipe (Tharun24/MACH): sigmoid BCE averaged over batch x B, TF1 Adam
# (lr 1e-3, epsilon 1e-8), raw feature values, no dropout, truncated-normal initialisation, dense Adam.
OFFICIAL = dict(
    recipe="official",
    loss="bce",
    normalize="none",
    dropout=0.0,
    lr=1e-3,
    adam_epsilon=1e-8,
    sparse_first_layer="off",
)
# The precursor code (tinytinyeye/MACH @ cfeeab5): linear softmax classifiers, Adam defaults, and
# prediction by the mean of the R softmax probabilities (score="probs" ranks the same).
PRECURSOR = dict(
    recipe="precursor",
    loss="softmax",
    normalize="none",
    dropout=0.0,
    hidden=(),
    lr=1e-3,
    sparse_first_layer="off",
    score="probs",
    label_base=1,  # Vowpal Wabbit's recall_tree files number classes from 1
)


def preset(name: str, **settings) -> Config:
    """A preset: BASE with the dataset's published D, K and propensity model, then its settings."""
    facts = FACTS[name]
    psp_A, psp_B = facts.psp
    sizes = dict(n_features=facts.n_features, n_classes=facts.n_classes, psp_A=psp_A, psp_B=psp_B)
    return dataclasses.replace(BASE, name=name, **sizes, **settings)


def xc_files(folder: str) -> dict:
    """The file names the repository's downloads unpack to."""
    return dict(train_file=f"{folder}/train.txt", test_file=f"{folder}/test.txt")


DATASETS: dict[str, Config] = {
    # Delicious (Tsoumakas et al. 2008), bundled. Chosen on a validation split of the training rows
    # (experiments/tuning-delicious).
    #   make demo  (or: python preprocess.py && python train.py && python evaluate.py)
    #   expected, split 1, seed 0: P@1/3/5 71.18 / 65.33 / 60.65 (experiments/demo)
    "delicious": preset(
        "delicious",
        data_file="delicious/Delicious_data.txt.gz",
        train_split_file="delicious/delicious_trSplit.txt.gz",
        test_split_file="delicious/delicious_tstSplit.txt.gz",
        B=128,
        R=16,
        hidden=(1024, 512),
        dropout=0.5,
        lr=2e-3,
        normalize="max",
        epochs=10,
    ),
    # Wiki10-31K. Source: Tharun24/MACH @ 0fda7db, wiki10_31k/src/run.sh and train_single.py (32 runs,
    # B=2000, batch 100, 60 epochs; two hidden layers of 500).
    #   python reproduce.py --dataset wiki10_31k --data-dir ~/data
    #   status: not run on the real data (no download here); --quick --synthetic runs end to end.
    "wiki10_31k": preset(
        "wiki10_31k",
        **xc_files("Wiki10-31K"),
        B=2000,
        R=32,
        hidden=(500, 500),
        batch_size=100,
        epochs=60,
        **OFFICIAL,
    ),
    # Delicious-200K. Source: Tharun24/MACH @ 0fda7db, delicious_200k/src/run.sh and train_single.py
    # (B=5000, batch 1000, 20 epochs, (500, 500), the full 782,585 features: no feature hashing).
    #   python reproduce.py --dataset delicious200k --data-dir ~/data
    #   status: not run on the real data; rehearsed at its true K and D (experiments/rehearsals).
    "delicious200k": preset(
        "delicious200k",
        **xc_files("Delicious-200K"),
        B=5000,
        R=32,
        hidden=(500, 500),
        batch_size=1000,
        epochs=20,
        **OFFICIAL,
    ),
    # Amazon-670K. Source: Tharun24/MACH @ 0fda7db, amazon_670k/src/run.sh and train_single.py
    # (B=10000, batch 1000, 40 epochs, (500, 500)).
    #   python reproduce.py --dataset amazon670k --data-dir ~/data --gpus 0,1,2,3 --per-gpu 2
    #   status: not run on the real data; rehearsed at its true K and D (experiments/rehearsals).
    "amazon670k": preset(
        "amazon670k",
        **xc_files("Amazon-670K"),
        B=10_000,
        R=32,
        hidden=(500, 500),
        batch_size=1000,
        epochs=40,
        **OFFICIAL,
    ),
    # Amazon-3M. Source: Tharun24/MACH @ 430fd9f, src/config.py (B=10000, R=16, feat_hash_dim
    # 100000, hidden 4096, batch 2000, 10 epochs).
    #   python reproduce.py --dataset amazon3m --data-dir ~/data --gpus 0,1,2,3,4,5,6,7 --per-gpu 2
    #   status: not run on the real data; one repetition rehearsed at its true K (experiments/rehearsals).
    "amazon3m": preset(
        "amazon3m",
        **xc_files("Amazon-3M"),
        B=10_000,
        R=16,
        feat_hash_dim=100_000,
        hidden=(4096,),
        batch_size=2000,
        epochs=10,
        **OFFICIAL,
    ),
    # ODP. Source: tinytinyeye/MACH @ cfeeab5, src/odp/ (linear softmax classifiers, batch 64, 5
    # epochs, AdamOptimizer() defaults; B=32, R=50 from its README's `odp_demo.py -b 32 -r 50`).
    # Data: Vowpal Wabbit text, classes from 1 and features from 1001 (src/odp/util.py).
    #   python reproduce.py --dataset odp --data-dir ~/data
    #   status: not run on the real data; the precursor paper reports 19.28% top-1 accuracy.
    "odp": preset(
        "odp",
        train_file="ODP/train.vw",
        test_file="ODP/test.vw",
        format="vw",
        feature_base=1001,
        B=32,
        R=50,
        batch_size=64,
        epochs=5,
        **PRECURSOR,
        adam_epsilon=1e-8,
    ),
    # ImageNet-22K (6,144 dense features). Source: tinytinyeye/MACH @ cfeeab5, src/imagenet/ (linear
    # softmax, batch 256, 3 epochs, Adam epsilon 1.0; B=512, R=20 from its README's
    # `imagenet_demo.py -b 512 -r 20`). Data: Vowpal Wabbit text, classes from 1.
    #   python reproduce.py --dataset imagenet22k --data-dir ~/data
    #   status: not run on the real data; no published value recorded.
    "imagenet22k": preset(
        "imagenet22k",
        train_file="ImageNet-22K/train.vw",
        test_file="ImageNet-22K/test.vw",
        format="vw",
        B=512,
        R=20,
        batch_size=256,
        epochs=3,
        **PRECURSOR,
        adam_epsilon=1.0,
    ),
}
