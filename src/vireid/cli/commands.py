"""Imports every command module of :mod:`vireid.cli` so that each registers itself on ``app``.

A command module does ``from vireid.cli.app import app`` and decorates its functions with
``@app.command(...)`` (or adds a sub-app with ``app.add_typer``). Adding a command is
adding a module; this file never changes. The modules are found in this file's folder, so this
module does not import the :mod:`vireid.cli` package that imports it (no import circle).
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

_SKIP = {"__main__", "app", "commands"}

for _info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
    if _info.name not in _SKIP and not _info.name.startswith("_"):
        importlib.import_module(f"vireid.cli.{_info.name}")
