"""The one table of dataset facts: published sizes, where the files come from, and published results.

The presets in config.py read D and K from here; reproduce.py checks downloads against the sizes and
reports beside the results; the rehearsals and the synthetic stand-ins take their shape from it.
Values are the sources' own, never ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field

XC_PAGE = "http://manikvarma.org/downloads/XC/XMLRepository.html"
XC_REPO = "Extreme Classification Repository, benchmarked results (manikvarma.org/downloads/XC)"
VW_DEMO = "https://github.com/VowpalWabbit/vowpal_wabbit/tree/master/demo/recall_tree"
PRECURSOR_PAPER = "paperswithcode.com/paper/extreme-classification-in-log-memory, abstract"


@dataclass(frozen=True)
class Dataset:
    n_features: int  # D
    n_classes: int  # K
    train_rows: int | None  # N of the training file; None = not published with the download
    test_rows: int | None  # N of the test file
    labels_per_row: float  # mean labels per training row (1 for multiclass)
    features_per_row: float | None  # mean non-zero features per row; None = not published
    download: str  # where to get the files
    code: str = ""  # the official code the preset's settings come from
    psp: tuple[float, float] = (0.55, 1.5)  # propensity model A, B (the repository's per dataset)
    results: list[dict] = field(default_factory=list)  # published P@k (or accuracy), by source
    notes: str = ""


def _xc(method: str, p1: float, p3: float, p5: float, source: str = XC_REPO) -> dict:
    return {"method": method, "source": source, "P@1": p1, "P@3": p3, "P@5": p5}


# Sizes: Table 1 of XC_PAGE (read 2025-02-28); features per row as the rehearsals used them. Results: its benchmarked-results tables, read from
# manikvarma/manikvarma.github.io @ 41a3c44; "*" = BoW features on a 24-core CPU, "as published" = the
# page copies the method's own paper. ODP and ImageNet come as Vowpal Wabbit text without a header: K
# and D are those of the precursor code (tinytinyeye/MACH @ cfeeab5) and the VW demos' Makefiles.
DATASETS: dict[str, Dataset] = {
    "delicious": Dataset(
        500,
        983,
        12_920,
        3_185,
        19.03,
        18.17,
        XC_PAGE,
        notes="bundled in data/delicious/ (all 16,105 rows and the 10 splits); sizes of split 1",
    ),
    "wiki10_31k": Dataset(
        101_938,
        30_938,
        14_146,
        6_616,
        18.64,
        670.0,
        XC_PAGE,
        code="Tharun24/MACH @ 0fda7db, wiki10_31k/",
        results=[
            _xc("DiSMEC*", 85.20, 74.60, 65.90),
            _xc("Parabel*", 84.17, 72.46, 63.37),
            _xc("AnnexML* (best BoW P@1)", 86.49, 74.27, 64.20),
            _xc("MatchXML (best P@1, as published)", 89.74, 81.51, 72.18),
            _xc(
                "MACH (third-party PyTorch)",
                86.09,
                73.76,
                64.31,
                "github.com/Odaimoko/MACH-Pytorch, exp-sota.xlsx, sheet Wiki",
            ),
        ],
    ),
    "delicious200k": Dataset(
        782_585,
        205_443,
        196_606,
        100_095,
        75.54,
        300.0,
        XC_PAGE,
        code="Tharun24/MACH @ 0fda7db, delicious_200k/",
        results=[
            _xc("DiSMEC*", 45.50, 38.70, 35.50),
            # The page lists Parabel twice; the other row reads 46.97 / 40.08 / 36.63.
            _xc("Parabel*", 46.86, 40.08, 36.70),
            _xc("AnnexML*", 46.79, 40.72, 37.67),
            _xc("SLEEC* (best P@1)", 47.85, 42.21, 39.43),
        ],
    ),
    "amazon670k": Dataset(
        135_909,
        670_091,
        490_449,
        153_025,
        5.45,
        76.0,
        XC_PAGE,
        code="Tharun24/MACH @ 0fda7db, amazon_670k/",
        psp=(0.6, 2.6),
        results=[
            _xc("DiSMEC*", 44.70, 39.70, 36.10),
            _xc("Parabel*", 44.89, 39.80, 36.00),
            _xc("AnnexML*", 42.39, 36.89, 32.98),
            _xc("Bonsai* (best BoW P@1)", 45.58, 40.39, 36.60),
            _xc("Renee (best P@1)", 54.23, 48.22, 43.83),
        ],
    ),
    "amazon3m": Dataset(
        337_067,
        2_812_281,
        1_717_899,
        742_507,
        36.17,
        None,
        XC_PAGE,
        code="Tharun24/MACH @ 430fd9f, src/config.py",
        psp=(0.6, 2.6),
        results=[
            _xc("DiSMEC*", 47.34, 44.96, 42.80),
            _xc("Parabel*", 47.48, 44.65, 42.53),
            _xc("AnnexML* (best BoW P@1)", 49.30, 45.55, 43.11),
            _xc("MatchXML (best P@1, as published)", 55.88, 52.39, 49.80),
        ],
    ),
    "odp": Dataset(
        422_713,
        105_033,
        None,
        None,
        1.0,
        None,
        f"{VW_DEMO}/odp",
        code="tinytinyeye/MACH @ cfeeab5, src/odp/",
        # Top-1 accuracy (%), from the precursor paper (Huang, Wang, Medini, Shrivastava 2018).
        results=[
            {"method": "MACH (precursor paper)", "source": PRECURSOR_PAPER, "accuracy": 19.28},
            {"method": "one-vs-all (precursor paper)", "source": PRECURSOR_PAPER, "accuracy": 9.0},
        ],
    ),
    "imagenet22k": Dataset(
        6144,
        21_841,
        None,
        None,
        1.0,
        6144.0,
        f"{VW_DEMO}/imagenet",
        code="tinytinyeye/MACH @ cfeeab5, src/imagenet/",
    ),
}
