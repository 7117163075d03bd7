"""MACH: Merged-Average Classifiers via Hashing, in TensorFlow 2."""

import os

# Keep TensorFlow's C++ start-up chatter out of the key=value logs unless the user asks for it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
