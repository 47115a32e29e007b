"""Imports every command module of :mod:`vireid.cli` so that each registers itself on ``app``.

A command module does ``from vireid.cli import app`` and decorates its functions with
``@app.command(...)`` (or adds a sub-app with ``app.add_typer``). Adding a command is
adding a module; this file never changes.
"""

from __future__ import annotations

import importlib
import pkgutil

import vireid.cli as _cli

for _info in sorted(pkgutil.iter_modules(_cli.__path__), key=lambda m: m.name):
    if _info.name not in {"commands"} and not _info.name.startswith("_"):
        importlib.import_module(f"vireid.cli.{_info.name}")
