"""The presets of the repository's config.py, for code that is not an entry script (the Python API, the
Ray launcher, benchmarks): loaded by path, so nothing depends on the current directory or sys.path.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from mach.config import Config

# An editable install (pip install -e .) runs the package from src/mach of the clone.
CLONE = Path(__file__).resolve().parents[2]


def presets_file() -> Path:
    """$MACH_PRESETS, else config.py of the clone this package runs from."""
    path = Path(os.environ.get("MACH_PRESETS", CLONE / "config.py")).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"no presets file at {path}: set MACH_PRESETS to the path of a config.py that defines "
            "BASE and DATASETS, or install mach from a clone with `pip install -e .`"
        )
    return path


def load_presets() -> tuple[Config, dict[str, Config]]:
    """(BASE, DATASETS) of the presets file; the module already imported as `config` when it is that file."""
    path = presets_file().resolve()
    module = sys.modules.get("config")
    if module is None or Path(getattr(module, "__file__", "")).resolve() != path:
        spec = importlib.util.spec_from_file_location("mach_presets_config", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module.BASE, module.DATASETS


def preset(name: str) -> Config:
    """The preset called name, or a ValueError listing them."""
    _, datasets = load_presets()
    if name not in datasets:
        raise ValueError(f"preset {name!r}: expected one of {', '.join(sorted(datasets))}")
    return datasets[name]
