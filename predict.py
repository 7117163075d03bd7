"""Top-k labels of new rows with a trained MACH model: an exported SavedModel, or a work directory.

    zcat data/delicious/Delicious_data.txt.gz | head -100 | python predict.py --model models/delicious
    python predict.py --model models/delicious --input rows.txt.gz --top-k 3 --output top3.tsv

Rows are in the training text format (`l1,l2 i:v i:v ...`, or ` i:v ...` without labels; labels are
ignored), from a file, a .gz or stdin (`--input -`, the default). Output: one JSON line per row,
{"line": N, "labels": [...], "scores": [...]} (and "names" with --label-names), or TSV with
--output out.tsv. --model is an export.py directory (its newest version) or a trained run directory
such as work/delicious/B128-hs0-fhnone/default (or a directory holding one run): its weights run
through the compiled forward kernel for batches of up to 8 rows (the fastest path for single rows)
and through matrix products above (--forward chooses one for all), then the compiled merge. A run
directory needs no TensorFlow, so the first row comes back in well under a second.
"""

import argparse
import contextlib
import logging
import os
import sys
import time
from pathlib import Path

from mach.cli import add_merge_flags, add_verbose_flag, merge_from_args, parse_args, run_main
from mach.serving.predictors import FORWARDS


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, type=Path, help="SavedModel or run directory")
    parser.add_argument("--input", default="-", help="rows to predict: a file, a .gz or - (stdin)")
    parser.add_argument(
        "--top-k", type=int, help="labels per row (default: the model's k, Config.top_k)"
    )
    parser.add_argument(
        "--format",
        choices=["xc", "libsvm", "vw"],
        help="text format of the rows (default: the format the model was trained on)",
    )
    parser.add_argument("--label-names", type=Path, help="text file, line i naming label i")
    parser.add_argument("--output", help="output file (default: stdout); .tsv writes TSV")
    parser.add_argument("--output-format", choices=["jsonl", "tsv"], help="override the extension")
    parser.add_argument("--batch-size", type=int, default=256, help="rows per model call")
    parser.add_argument(
        "--skip-bad", action="store_true", help="leave out malformed rows and count them"
    )
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    parser.add_argument(
        "--forward",
        choices=FORWARDS,
        default="auto",
        help="a run directory's forward pass: auto (compiled for batches of up to 8 rows, matmul "
        "above), compiled (the kernel: fastest for single rows), compiled-bf16 (the same with "
        "bfloat16 weights: half the memory traffic, scores within ~0.4%%), matmul (sparse and BLAS "
        "products: fastest for large batches) or tensorflow (evaluate.py's bits; imports "
        "TensorFlow). The float32 paths agree to float32 rounding",
    )
    parser.add_argument(
        "--epoch",
        type=int,
        metavar="N",
        help="a run directory's weights after epoch N (default: last)",
    )
    add_merge_flags(parser)
    add_verbose_flag(parser)
    args = parse_args(parser, argv)
    # Predictions may go to stdout, so logs and progress go to stderr.
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s", force=True)
    log = logging.getLogger("mach").info
    return run_main(lambda: _predict(args, log))


def _predict(args, log) -> int:
    from mach.serving import predictors, textio

    if args.batch_size < 1 or args.threads < 0:
        raise ValueError("--batch-size must be >= 1 and --threads >= 0")
    merge, impl = merge_from_args(args)
    kind, path = predictors.find_model(args.model)
    start = time.time()
    if kind == "savedmodel":
        if merge.kind != "exact" or args.epoch is not None:
            raise ValueError(
                f"{path} is a SavedModel: its merge and epoch were fixed at export (see its "
                "assets.extra/mach.json); --merge and --epoch apply to run directories"
            )
        predictor = predictors.SavedModelPredictor(path, args.threads)
        k = predictor.k if args.top_k is None else args.top_k
        if not 1 <= k <= predictor.k:
            raise ValueError(
                f"--top-k {k}: {path} was exported with k={predictor.k}; pass --top-k <= "
                f"{predictor.k}, or export again with --set top_k={k}"
            )
    else:
        cfg = predictors.run_config(path, args.threads)
        k = cfg.top_k if args.top_k is None else args.top_k
        predictor = predictors.RunPredictor(cfg, k, log, args.forward, merge, impl, args.epoch)
    log(f"model={path} kind={kind} k={k} seconds={time.time() - start:.1f}")
    names = None
    if args.label_names is not None:
        names = textio.load_label_names(args.label_names, predictor.n_classes)
    fmt = args.format or predictor.format
    counts = textio.Counts()
    out_format = textio.output_format(args.output, args.output_format)
    target = None if args.output is None else Path(args.output)
    tmp = None if target is None else textio.temporary_output(target)
    start = time.time()
    try:
        with (
            textio.open_input(args.input) as stream,
            open(tmp, "w") if tmp else contextlib.nullcontext(sys.stdout) as out,
        ):
            # The training files' id bases hold for rows in the training format.
            bases = predictor.bases if fmt == predictor.format else None
            rows = textio.read_text_rows(
                stream, args.input, fmt, predictor.n_features, args.skip_bad, counts, bases
            )
            writer = textio.Writer(out, out_format, names)
            textio.predict_rows(predictor, rows, k, args.batch_size, writer, counts, log)
        if tmp:
            os.replace(tmp, target)
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        if tmp:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
    seconds = time.time() - start
    log(
        f"predicted rows={counts.rows} skipped={counts.skipped} seconds={seconds:.2f} "
        f"rows_per_s={counts.rows / max(seconds, 1e-9):.0f}"
        + (f" output={target}" if target else "")
    )
    if counts.skipped:
        log(f"first skipped row: {counts.first_skipped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
