"""MACH: Merged-Average Classifiers via Hashing, in TensorFlow 2.

    import mach
    from mach import MACH, Config

    train, test = mach.read_dataset("delicious")
    model = MACH(preset="delicious", R=4).fit(*train)
    print(model.evaluate(*test)["P@1"])

Importing mach does not import TensorFlow; the modules that need it load it when they are used.
"""

import os

# TensorFlow's C++ start-up lines stay hidden unless a script runs with --verbose (mach.cli).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from mach.api import MACH, load, read_dataset, read_xc  # noqa: E402
from mach.config import Config  # noqa: E402

__all__ = ["MACH", "Config", "load", "read_dataset", "read_xc"]
