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

Only code the user named is imported. A config file given to ``vireid train --config`` (and its
``plugins=[...]`` overrides) is named by the user, so its plugins are imported. A *stored* config
(a checkpoint's, an exported model's, a run folder's ``config.yaml``) is not: opening a model never
imports the plugins it lists. They are reported in one sentence, and imported only under an explicit
``--trust-plugins`` (the stored entries) or ``--plugins`` (the user's own copy) on the command
(:func:`plugin_flags`; in Python ``with plugin_flags(trust=True): ...``).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import vireid.builtins  # noqa: F401  (vireid's own parts are registered before a plugin adds to them)
from vireid.config import Config, absolute_entries, config_from_dict, is_plugin_path, load_config
from vireid.errors import ConfigError


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


# what the user named in this process (entries of their own config files, --plugins) and whether they
# passed --trust-plugins; a stored config's plugins are imported only under one of those
_NAMED: set[str] = set()
_POLICY: dict = {"trust_stored": False, "given": False}


def import_plugins(entries: Iterable[str]) -> list[ModuleType]:
    """Import every ``plugins`` entry (module name or ``.py`` path) the user named; one clear error if
    one fails. Only for entries the user gave (their config file, overrides, ``--plugins``): a stored
    config goes through :func:`import_stored_plugins`."""
    modules = []
    for entry in entries:
        entry = str(entry).strip()
        if not entry:
            raise ConfigError("config key 'plugins' holds an empty entry; give a module name or a .py path")
        modules.append(_import_file(Path(entry)) if is_plugin_path(entry) else _import_module(entry))
        _NAMED.add(entry)
    return modules


def import_stored_plugins(entries: Iterable[str], source: str) -> None:
    """The plugins a stored config (of ``source``, e.g. a checkpoint) lists: imported only when the user
    named them already or passed ``--trust-plugins``; skipped when the user gave their own ``--plugins``;
    otherwise refused with one sentence naming them and the flags (opening a model never runs code)."""
    entries = [str(e).strip() for e in entries]
    unnamed = [e for e in entries if e not in _NAMED]
    if not unnamed:
        return
    if _POLICY["trust_stored"]:
        import_plugins(absolute_entries(unnamed, Path.cwd()))
        return
    if _POLICY["given"]:
        return  # the user imported their own copy of the code with --plugins
    raise ConfigError(
        f"{source} was made with plugin code ({', '.join(unnamed)}), which vireid does not import when it opens a "
        "model; if you trust that code pass --trust-plugins, or pass --plugins with your own copy of it"
    )


@contextmanager
def plugin_flags(plugins: Iterable[str] = (), trust: bool = False) -> Iterator[None]:
    """The ``--plugins`` / ``--trust-plugins`` options of one command: import the user's ``plugins``
    (relative paths against the working directory) and, with ``trust``, allow a stored config's own
    plugins to be imported, until the block ends."""
    saved = dict(_POLICY)
    given = [str(p) for p in plugins or ()]
    try:
        if given:
            import_plugins(absolute_entries(given, Path.cwd()))
        _POLICY.update(trust_stored=bool(trust), given=bool(given))
        yield
    finally:
        _POLICY.clear()
        _POLICY.update(saved)


def user_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """A config the user named (their YAML file or a shipped one, their ``key=value`` overrides), loaded
    with :func:`vireid.config.load_config` and its ``plugins`` imported: the entry point of every
    command and workflow that starts from a config file."""
    cfg = load_config(path, list(overrides))
    if cfg.plugins:
        import_plugins(cfg.plugins)
    return cfg


def stored_config(tree: dict, source: str = "the stored config") -> Config:
    """A stored config (a checkpoint's, an exported model's, a run folder's) validated with
    :func:`vireid.config.config_from_dict`; its ``plugins`` are imported only as
    :func:`import_stored_plugins` allows (``source`` names it in the refusal)."""
    cfg = config_from_dict(tree)
    if cfg.plugins:
        import_stored_plugins(cfg.plugins, source)
    return cfg


__all__ = ["absolute_entries", "import_plugins", "import_stored_plugins", "is_plugin_path", "plugin_flags",
           "stored_config", "user_config"]
