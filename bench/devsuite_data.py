"""The development suite's datasets as train/test files in the repository format (for bench/devsuite.py).

    python bench/devsuite_data.py            # writes work/bench/devsuite_data/data/<name>/train.txt, test.txt
    python bench/devsuite_data.py --valid    # work/bench/devsuite_data/valid: 20 % of each train part held out

Sources are the files under ../shared/data (provenance in each SOURCE.txt). Where the source gives a split
(Mulan's enron, medical, yeast, scene) it is kept; elsewhere rows are split 70/30 by a seeded permutation
(seed 0), recorded in <name>/split.json with the row numbers, so every run reads the same rows.
`--valid` holds out 20 % of the training part instead (seed 1) and never writes the test rows: tuning
reads only that.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA = Path("work/bench/devsuite_data/data")  # train/test files (bench/devsuite.py reads them)
VALID = Path("work/bench/devsuite_data/valid")  # train/validation files (bench/tune_suite.py)
TEST_SHARE, VALID_SHARE = 0.3, 0.2
SPLIT_SEED, VALID_SEED = 0, 1

MLL = "MLL_mat/derived/{}_data.txt"
# name -> (source kind, path(s) under ../shared/data)
SOURCES = {
    "stackex_chemistry": ("xc", MLL.format("Stackex_chemistry")),
    "stackex_cs": ("xc", MLL.format("Stackex_cs")),
    "stackex_philosophy": ("xc", MLL.format("Stackex_philosophy")),
    "stackex_chess": ("xc", "mldr_datasets/stackex_chess_data.txt"),
    **{f"rcv1subset{i}": ("xc", MLL.format(f"rcv1subset{i}_top944")) for i in range(1, 6)},
    "corel16k001": ("xc", MLL.format("Corel16k001")),
    "langlog": ("xc", "mldr_datasets/langlog_data.txt"),
    "enron": ("arff", "mulan_small/enron/enron-train.arff", "mulan_small/enron/enron-test.arff"),
    "medical": (
        "arff",
        "mulan_small/medical/medical-train.arff",
        "mulan_small/medical/medical-test.arff",
    ),
    "yeast": ("arff", "mulan_small/yeast/yeast-train.arff", "mulan_small/yeast/yeast-test.arff"),
    "scene": ("arff", "mulan_small/scene/scene-train.arff", "mulan_small/scene/scene-test.arff"),
    "cal500": ("arff", "mulan_small/cal500/cal500.arff"),
}

Row = tuple[list[int], list[tuple[int, float]]]  # (label ids, [(feature id, value)])


def read_xc_rows(path: Path) -> tuple[list[Row], int, int]:
    """Rows of a repository-format file, with its D and K from the header."""
    with open(path) as f:
        n, n_features, n_classes = map(int, f.readline().split())
        rows = []
        for line in f:
            head, _, rest = line.rstrip("\n").partition(" ")
            if ":" in head:  # a row without labels may also start with its first feature
                head, rest = "", line.strip()
            labels = [int(x) for x in head.split(",") if x]
            feats = [(int(i), float(v)) for i, v in (p.split(":") for p in rest.split())]
            rows.append((labels, feats))
    assert len(rows) == n, f"{path}: header says {n} rows, found {len(rows)}"
    return rows, n_features, n_classes


def label_names(xml: Path) -> list[str]:
    return re.findall(r'<label\s+name="([^"]*)"', xml.read_text())


def read_arff_rows(path: Path, n_labels: int, names: list[str]) -> tuple[list[Row], int]:
    """Rows of a Mulan ARFF file (dense or sparse), whose last n_labels attributes are the labels."""
    attributes, rows = [], []
    with open(path) as f:
        for line in f:
            if line.lower().startswith("@attribute"):
                attributes.append(line.split()[1].strip("'\""))
            if line.lower().startswith("@data"):
                break
        n_features = len(attributes) - n_labels
        # Mulan's convention, checked rather than assumed: the label attributes are the last ones (the
        # .xml may list them in another order; label ids follow the ARFF's order).
        assert {a.replace("\\'", "'") for a in attributes[n_features:]} == set(names), path
        for line in f:
            line = line.strip()
            if not line or line.startswith("%"):
                continue
            if line.startswith("{"):
                pairs = [p.split() for p in line.strip("{}").split(",") if p.strip()]
                values = {int(i): float(v) for i, v in pairs}
            else:
                values = {i: float(v) for i, v in enumerate(line.split(",")) if float(v) != 0}
            labels = sorted(i - n_features for i, v in values.items() if i >= n_features and v)
            feats = sorted((i, v) for i, v in values.items() if i < n_features and v != 0)
            rows.append((labels, feats))
    return rows, n_features


def load(name: str) -> tuple[dict[str, list[Row]] | list[Row], int, int]:
    """({'train': rows, 'test': rows} where the source has a split, else all rows), D, K."""
    kind, *paths = SOURCES[name]
    if kind == "xc":
        return read_xc_rows(SHARED / paths[0])
    xml = next((SHARED / paths[0]).parent.glob("*.xml"))
    names = label_names(xml)
    parts = [read_arff_rows(SHARED / p, len(names), names) for p in paths]
    n_features = parts[0][1]
    if len(parts) == 1:
        return parts[0][0], n_features, len(names)
    return {"train": parts[0][0], "test": parts[1][0]}, n_features, len(names)


def write_xc(path: Path, rows: list[Row], n_features: int, n_classes: int) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write(f"{len(rows)} {n_features} {n_classes}\n")
        for labels, feats in rows:
            f.write(
                ",".join(map(str, labels)) + " " + " ".join(f"{i}:{v:g}" for i, v in feats) + "\n"
            )
    tmp.replace(path)


def split_rows(n: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) row numbers, each sorted: a seeded permutation's last `share` is held out."""
    order = np.random.default_rng(seed).permutation(n)
    cut = n - int(round(share * n))
    return np.sort(order[:cut]), np.sort(order[cut:])


def prepare(name: str, out: Path, valid: bool) -> dict:
    """Write <out>/<name>/train.txt and test.txt (validation rows in --valid mode); returns split.json."""
    rows, n_features, n_classes = load(name)
    if isinstance(rows, dict):
        train, test = rows["train"], rows["test"]
        how = "the source's train/test files"
    else:
        keep, hold = split_rows(len(rows), TEST_SHARE, SPLIT_SEED)
        train, test = [rows[i] for i in keep], [rows[i] for i in hold]
        how = f"random {1 - TEST_SHARE:.0%}/{TEST_SHARE:.0%} of the rows, seed {SPLIT_SEED}"
    if valid:
        keep, hold = split_rows(len(train), VALID_SHARE, VALID_SEED)
        train, test = [train[i] for i in keep], [train[i] for i in hold]
        how += f"; validation: {VALID_SHARE:.0%} of the training part held out, seed {VALID_SEED}"
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    write_xc(folder / "train.txt", train, n_features, n_classes)
    write_xc(folder / "test.txt", test, n_features, n_classes)
    info = {
        "name": name,
        "source": SOURCES[name][1:],
        "split": how,
        "train_rows": len(train),
        "test_rows": len(test),
        "n_features": n_features,
        "n_classes": n_classes,
    }
    (folder / "split.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, help=f"default {DATA}, with --valid {VALID}")
    parser.add_argument("--sets", default=",".join(SOURCES), help="comma-separated names")
    parser.add_argument(
        "--valid", action="store_true", help="hold out 20 %% of train; no test rows"
    )
    args = parser.parse_args(argv)
    args.out = args.out or (VALID if args.valid else DATA)
    if not SHARED.is_dir():
        print(
            f"error: no development data at {SHARED} (a clone has none; see experiments/defaults-devsuite)",
            file=sys.stderr,
        )
        return 2
    for name in args.sets.split(","):
        if name not in SOURCES:
            print(f"error: unknown set {name!r}; choose from {', '.join(SOURCES)}", file=sys.stderr)
            return 2
        info = prepare(name, args.out, args.valid)
        print(
            f"set={name} train_rows={info['train_rows']} test_rows={info['test_rows']} "
            f"D={info['n_features']} K={info['n_classes']} split={info['split']!r}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
