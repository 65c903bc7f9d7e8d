"""``benchmarks/smollm2_compare.py`` imported from its path (``benchmarks/`` is no package),
once for all the comparison tests: ``compare`` is the script, ``report`` its report helpers
(``compare/report.py`` beside it)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"


def _load_script():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports compare/ beside it
    try:
        spec = importlib.util.spec_from_file_location(
            "smollm2_compare", BENCHMARKS / "smollm2_compare.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


compare = _load_script()
report = sys.modules["compare.report"]
