"""MACH: Merged-Average Classifiers via Hashing, in TensorFlow 2.

    from mach import Config          # the settings of a run (src/mach/config.py)

Importing mach does not import TensorFlow; the modules that need it load it when they are used.
"""

import os

# TensorFlow's C++ start-up lines stay hidden unless a script runs with --verbose (mach.cli).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from mach.config import Config  # noqa: E402

__all__ = ["Config"]
