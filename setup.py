"""Installs the `mach` library from src/mach and builds the merge kernel from src/util.

pip install -e .            # CPU (tensorflow-cpu)
pip install -e .[gpu]       # GPU machines: the CUDA `tensorflow` build instead
pip install -e .[ray]       # also train.sh --ray / evaluate.py --ray on a Ray cluster
"""

import sys
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

# OpenMP flags per compiler family; MSVC spells them differently.
if sys.platform == "win32":
    compile_args, link_args = ["/O2", "/openmp"], []
elif sys.platform == "darwin":
    compile_args, link_args = ["-O3", "-ffp-contract=off", "-Xpreprocessor", "-fopenmp"], ["-lomp"]
else:
    # No fused multiply-add: the kernels round alike on every CPU (src/util/simd.h).
    compile_args, link_args = ["-O3", "-ffp-contract=off", "-fopenmp", "-std=c++17"], ["-fopenmp"]

kernel = Extension(
    "mach._kernels",
    sources=["src/util/kernels.pyx"],
    depends=[
        "src/util/merge_kernel.h",
        "src/util/candidate_kernel.h",
        "src/util/forward_kernel.h",
        "src/util/simd.h",
    ],
    include_dirs=[numpy.get_include(), "src/util"],
    language="c++",
    extra_compile_args=compile_args,
    extra_link_args=link_args,
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
)

HERE = Path(__file__).resolve().parent


def pins(name: str) -> list[str]:
    """The requirement lines of a requirements file (comments, includes and the build-only Cython dropped)."""
    lines = (line.split("#")[0].strip() for line in (HERE / name).read_text().splitlines())
    return [line for line in lines if line and not line.startswith(("-r", "Cython"))]


setup(
    name="mach-tf2",
    version="0.1.0",
    description="MACH (Merged-Average Classifiers via Hashing) extreme classification in TensorFlow 2",
    package_dir={"": "src"},
    packages=find_packages("src"),
    ext_modules=cythonize([kernel], language_level=3),
    python_requires=">=3.10",
    # The pins live in the requirements files; one TensorFlow build comes as an extra.
    install_requires=pins("requirements-common.txt"),
    extras_require={
        "cpu": pins("requirements.txt"),
        "gpu": pins("requirements-gpu.txt"),
        "test": pins("requirements-dev.txt"),
        "ray": pins("requirements-ray.txt"),
    },
)
