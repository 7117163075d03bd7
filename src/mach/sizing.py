"""The sizes a dataset without a preset gets from its data: buckets B from the labels K, repetitions R
and hidden widths from the training rows n, and epochs from the rows and the batch size.

A setting the config gives is kept; one left open (None) is chosen here once preprocess has counted the
rows, and written to the run's config.json. The rules were chosen on the validation splits of a
development suite of 16 multi-label datasets and checked once on their test splits against other
extreme classifiers: experiments/defaults-sized has the study, its figures and the Pareto chart.
"""

from __future__ import annotations

import dataclasses
import math

# Epochs: at least MIN_EPOCHS passes, and at least MIN_STEPS optimiser steps.
MIN_STEPS, MIN_EPOCHS = 100, 10
# Hidden widths (h, h/2), h a power of two growing with the rows between these bounds.
MIN_HIDDEN, MAX_HIDDEN, ROWS_PER_UNIT = 256, 1024, 8
# Repetitions: SMALL_R up to LARGE_DATA rows, LARGE_R above.
SMALL_R, LARGE_R, LARGE_DATA = 8, 16, 20_000


def default_buckets(n_classes: int) -> int:
    """B: every class its own bucket up to K=128, then ~4 sqrt(K) (a power of two).

    Below 128 buckets the output layer is a small part of the network, so there is nothing to save by
    sharing buckets. Above, B grows as sqrt(K): the bucket collisions the R repetitions must undo grow
    slowly with K, while the output layers stay far below K wide (K=983 -> 128, 31K -> 512, 670K ->
    4096, 3M -> 8192).
    """
    if n_classes <= 128:
        return max(2, n_classes)
    return max(128, 1 << round(math.log2(4 * math.sqrt(n_classes))))


def default_epochs(train_rows: int, batch_size: int) -> int:
    """Epochs: 10, or enough for MIN_STEPS optimiser steps.

    10 epochs of a thousand rows are only 40 steps of 256: too few for Adam (medical, scene); well
    past 100 steps such small sets overfit (enron): experiments/defaults-devsuite.
    """
    steps_per_epoch = max(1, math.ceil(train_rows / batch_size))
    return max(MIN_EPOCHS, math.ceil(MIN_STEPS / steps_per_epoch))


def default_hidden(train_rows: int) -> tuple[int, int]:
    """Two hidden layers (h, h/2), h the power of two nearest train_rows / ROWS_PER_UNIT, between
    MIN_HIDDEN and MAX_HIDDEN: a network sized to what the rows can teach it."""
    h = 1 << round(math.log2(max(1, train_rows) / ROWS_PER_UNIT))
    h = min(MAX_HIDDEN, max(MIN_HIDDEN, h))
    return (h, h // 2)


def default_repetitions(train_rows: int) -> int:
    """R: SMALL_R on small data, where the repetitions mostly average out their noise, LARGE_R from
    LARGE_DATA rows on."""
    return SMALL_R if train_rows < LARGE_DATA else LARGE_R


def sized(cfg, train_rows: int):
    """cfg with B, R, hidden and epochs chosen from the data where it leaves them open."""
    return dataclasses.replace(
        cfg,
        B=default_buckets(cfg.n_classes) if cfg.B is None else cfg.B,
        R=default_repetitions(train_rows) if cfg.R is None else cfg.R,
        hidden=default_hidden(train_rows) if cfg.hidden is None else cfg.hidden,
        epochs=default_epochs(train_rows, cfg.batch_size) if cfg.epochs is None else cfg.epochs,
    )
