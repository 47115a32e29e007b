"""Your own methods, losses, modules, datasets and batch steps without editing vireid.

A config's ``plugins`` key lists Python modules to import before anything is built from the
config; importing them runs their ``@METHODS.register(...)`` / ``@LOSSES.register(...)`` (etc.)
decorators, so their names become usable in ``model.method``, ``losses``, ``data.format`` and
``augment.steps`` like vireid's own::

    plugins: [my_lab.reid_parts, ./my_method.py]

An entry is either an importable module name (an installed package, or a module on
``PYTHONPATH``) or a path to a ``.py`` file. A relative path in a YAML file is relative to that
file (stored absolute in the run's ``config.yaml``, so ``vireid eval RUN`` finds it again); on the
command line (``plugins=[./x.py]``) it is relative to the working directory. A file is imported
once per process however many configs name it. See docs/extending.md for a worked example.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from vireid.errors import ConfigError


def is_plugin_path(entry: str) -> bool:
    """Whether a ``plugins`` entry names a file (``.py`` or containing a path separator) rather than a module."""
    return entry.endswith(".py") or "/" in entry or "\\" in entry


def absolute_entries(entries: Iterable[str], folder: Path) -> list[str]:
    """``plugins`` entries with each ``.py`` path made absolute relative to ``folder`` (module names kept)."""
    return [str((folder / Path(e).expanduser()).resolve()) if isinstance(e, str) and is_plugin_path(e) else e
            for e in entries]


def _import_file(path: Path) -> ModuleType:
    resolved = path.expanduser().resolve()
    if not resolved.is_file():
        raise ConfigError(f"plugin file {resolved} (config key 'plugins') does not exist; fix the path or remove the entry")
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:10]
    name = f"vireid_plugin_{resolved.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise ConfigError(f"plugin file {resolved} (config key 'plugins') cannot be imported as Python; give a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except ConfigError:
        del sys.modules[name]
        raise
    except Exception as err:  # noqa: BLE001 - any error in user code becomes one sentence naming the file
        del sys.modules[name]
        raise ConfigError(
            f"plugin file {resolved} (config key 'plugins') failed while importing: {type(err).__name__}: {err}"
        ) from err
    return module


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and name.startswith(err.name):
            raise ConfigError(
                f"plugin module {name!r} (config key 'plugins') is not installed or not on PYTHONPATH; "
                "install it, add its folder to PYTHONPATH, or give the path of its .py file"
            ) from None
        raise ConfigError(f"plugin module {name!r} (config key 'plugins') failed while importing: {err}") from err
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001
        raise ConfigError(
            f"plugin module {name!r} (config key 'plugins') failed while importing: {type(err).__name__}: {err}"
        ) from err


def import_plugins(entries: Iterable[str]) -> list[ModuleType]:
    """Import every ``plugins`` entry (module name or ``.py`` path); one clear error if one fails."""
    # the registries must exist (and vireid's own parts be registered) before a plugin adds to them
    importlib.import_module("vireid.modeling")
    importlib.import_module("vireid.data.datasets")
    importlib.import_module("vireid.data.transforms")
    modules = []
    for entry in entries:
        entry = str(entry).strip()
        if not entry:
            raise ConfigError("config key 'plugins' holds an empty entry; give a module name or a .py path")
        modules.append(_import_file(Path(entry)) if is_plugin_path(entry) else _import_module(entry))
    return modules


__all__ = ["absolute_entries", "import_plugins", "is_plugin_path"]
