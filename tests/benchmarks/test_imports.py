"""Every ``from vireid... import name`` in benchmarks/ names something that exists.

The scripts run rarely (hours of training each), so a moved function (issue 14 moved ``run_training`` and
``baseline_results`` out of ``vireid.cli``) broke usl_table.py and gan_table.py without any test noticing;
the imports sit inside functions, so importing the scripts does not catch it either.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import vireid.builtins  # noqa: F401  (the registries, as the scripts have them)

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_every_vireid_import_of_the_benchmark_scripts_resolves():
    missing = []
    for script in sorted(BENCHMARKS.glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "vireid"):
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                if hasattr(module, alias.name):
                    continue
                try:  # a submodule imported by name
                    importlib.import_module(f"{node.module}.{alias.name}")
                except ImportError:
                    missing.append(f"{script.name}:{node.lineno}: from {node.module} import {alias.name}")
    assert not missing, "\n".join(missing)
