"""Train and time one peer XMC method on the shared feature matrix; run by compare.py with the peers venv's python.

    bench/.venv-peers/bin/python bench/peers_runner.py --method napkinxc_plt --data work/bench/compare/delicious/split01 \
        --out work/bench/compare/delicious/split01/napkinxc_plt --threads 2

Reads train/test files written by shared_matrix.py, trains with the library's documented defaults, and writes
<out>/topk.npy ([n_test, k] int64 label ids, best first, -1 = no prediction) and <out>/result.json (timings,
model size, settings). compare.py scores topk.npy with mach.metrics, so every method is scored the same way.
This file runs outside the project's environment: it imports no project code except shared_matrix.
"""

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from shared_matrix import label_lists, load_split


def dir_bytes(path: Path) -> int:
    """Bytes of the files under path (mach.experiments.chain.dir_bytes; this venv has no mach)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def topk_array(rows: list, k: int) -> np.ndarray:
    """Ragged per-row label lists -> [n, k] int64, padded with -1 (never a hit)."""
    out = np.full((len(rows), k), -1, dtype=np.int64)
    for i, labels in enumerate(rows):
        labels = list(labels)[:k]
        out[i, : len(labels)] = labels
    return out


class NapkinPLT:
    """napkinXC's PLT with its defaults (hierarchical k-means tree, arity 2, liblinear log loss)."""

    settings = "napkinxc.models.PLT defaults"

    def train(self, X, Y, train_txt, model_dir, threads):
        from napkinxc.models import PLT

        self.model = PLT(str(model_dir), threads=threads)
        self.model.fit(X, [y.tolist() for y in label_lists(Y)])  # it takes plain lists of ints only

    def load(self, model_dir, threads):
        pass  # napkinXC keeps the fitted model loaded; it was already written to model_dir by fit

    def predict(self, X, k):
        return topk_array(self.model.predict(X, top_k=k), k)


class Omikuji:
    """omikuji with its defaults (Parabel-like: balanced 2-means), or the README's Bonsai-like settings."""

    def __init__(self, bonsai: bool):
        self.bonsai = bonsai
        self.settings = (
            "README Bonsai-like: cluster_balanced=False, cluster_k=100, max_depth=3"
            if bonsai
            else "omikuji defaults (Parabel-like)"
        ) + "; densify_weights(0.1) as `omikuji test`"

    def train(self, X, Y, train_txt, model_dir, threads):
        import omikuji

        hyper_param = omikuji.Model.default_hyper_param()
        if self.bonsai:
            hyper_param.cluster_balanced = False
            hyper_param.cluster_k = 100
            hyper_param.max_depth = 3
        # omikuji trains only from a file in the repository format; the shared .txt holds the same values.
        omikuji.Model.train_on_data(str(train_txt), hyper_param, n_threads=threads).save(
            str(model_dir)
        )

    def load(self, model_dir, threads):
        import omikuji

        self.model = omikuji.Model.load(str(model_dir))
        self.model.densify_weights(0.1, n_threads=threads)  # `omikuji test` default density
        self.model.init_prediction_thread_pool(threads)

    def predict(self, X, k):
        # The Python binding predicts one row per call; there is no batch API.
        rows = []
        for i in range(X.shape[0]):
            lo, hi = X.indptr[i], X.indptr[i + 1]
            pairs = list(zip(X.indices[lo:hi].tolist(), X.data[lo:hi].tolist()))
            rows.append([label for label, _ in self.model.predict(pairs, top_k=k)])
        return topk_array(rows, k)


class PecosXRLinear:
    """PECOS XR-Linear as its README's quick tour: PIFA label embedding, hierarchical k-means, XLinearModel."""

    settings = "PIFA + Indexer.gen + XLinearModel.train defaults (beam 10); predict-only reload"

    def train(self, X, Y, train_txt, model_dir, threads):
        from pecos.xmc import Indexer, LabelEmbeddingFactory
        from pecos.xmc.xlinear.model import XLinearModel

        label_feat = LabelEmbeddingFactory.create(Y, X, method="pifa")
        cluster_chain = Indexer.gen(label_feat, threads=threads)
        XLinearModel.train(X, Y, C=cluster_chain, threads=threads).save(str(model_dir))

    def load(self, model_dir, threads):
        from pecos.xmc.xlinear.model import XLinearModel

        # The just-trained Python object predicts several times slower than this C++ predict-only model,
        # in batch and for single rows, which would not be PECOS's real speed.
        self.model = XLinearModel.load(str(model_dir), is_predict_only=True)
        self.threads = threads

    def predict(self, X, k):
        # [n, K] sparse scores, at most k per row, not sorted within a row
        scores = self.model.predict(X, only_topk=k, threads=self.threads).tocsr()
        rows = []
        for i in range(scores.shape[0]):
            lo, hi = scores.indptr[i], scores.indptr[i + 1]
            order = np.argsort(-scores.data[lo:hi], kind="stable")
            rows.append(scores.indices[lo:hi][order])
        return topk_array(rows, k)


METHODS = {
    "napkinxc_plt": NapkinPLT,
    "omikuji_parabel": lambda: Omikuji(bonsai=False),
    "omikuji_bonsai": lambda: Omikuji(bonsai=True),
    "pecos_xrlinear": PecosXRLinear,
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--method", required=True, choices=sorted(METHODS))
    parser.add_argument(
        "--data", required=True, type=Path, help="folder with train.npz/.txt and test.npz"
    )
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument(
        "--latency-rows", type=int, default=300, help="test rows predicted one at a time"
    )
    args = parser.parse_args(argv)

    X_train, Y_train = load_split(args.data / "train.npz")
    X_test, _ = load_split(args.data / "test.npz")
    method = METHODS[args.method]()
    model_dir = args.out / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    method.train(X_train, Y_train, args.data / "train.txt", model_dir, args.threads)
    train_s = time.perf_counter() - start
    method.load(model_dir, args.threads)

    # A short warm-up first, so lazy loading and thread-pool start-up are not charged to the timed pass.
    method.predict(X_test[:8], args.top_k)
    start = time.perf_counter()
    topk = method.predict(X_test, args.top_k)
    predict_s = time.perf_counter() - start

    latencies = []
    for i in range(min(args.latency_rows, X_test.shape[0])):
        start = time.perf_counter()
        method.predict(X_test[i : i + 1], args.top_k)
        latencies.append(time.perf_counter() - start)

    np.save(args.out / "topk.npy", topk)
    result = {
        "method": args.method,
        "settings": method.settings,
        "threads": args.threads,
        "train_s": train_s,
        "predict_ms_per_sample": 1e3 * predict_s / X_test.shape[0],
        "latency_ms_median": 1e3 * float(np.median(latencies)),
        "latency_rows": len(latencies),
        "model_bytes": dir_bytes(model_dir),
        "peak_rss_mb_self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # from KiB
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
