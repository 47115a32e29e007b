"""The configs and plug-ins a command starts from: the shipped recipes, ablation grids and GAN configs
(``vireid configs``), one config printed in full, and the ``--plugins`` / ``--trust-plugins`` policy of
a command (:func:`vireid.plugins.plugin_flags`)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Iterable, Optional, Sequence

from vireid.config import SHIPPED_CONFIGS


def describe(path: Path, width: int = 100) -> str:
    """The first sentence of a YAML file's leading comment (its description), cut to ``width``."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    text = " ".join(part for part in lines if part)
    end = text.find(". ")
    text = text if end < 0 else text[: end + 1]
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _listing(title: str, paths: list[Path]) -> list[str]:
    if not paths:
        return []
    wide = max(len(p.stem) for p in paths)
    return [title] + [f"  {path.stem:<{wide}}  {describe(path)}" for path in paths]


def config_listing() -> str:
    """The shipped configs, ablation grids and GAN configs, one line each with its description."""
    from vireid.workflows.ablation.command import GRIDS

    lines = (_listing("Shipped configs (vireid train --config NAME):", sorted(SHIPPED_CONFIGS.glob("*.yaml")))
             + _listing("\nAblation grids (vireid ablate --grid NAME):", sorted(GRIDS.glob("*.yaml")))
             + _listing("\nGAN configs (vireid gan train --config NAME):", sorted((SHIPPED_CONFIGS / "gan").glob("*.yaml"))))
    lines.append(f"\nFiles: {SHIPPED_CONFIGS}. Print one in full: vireid configs NAME [key=value ...]")
    return "\n".join(lines)


def config_yaml(name: str, overrides: Optional[Sequence[str]] = None) -> str:
    """A config file or shipped name with its ``_base_`` chain merged, overrides applied and defaults
    filled in, as YAML."""
    import yaml

    from vireid.plugins import user_config
    from vireid.workflows.train_run import resolve_config

    cfg = user_config(resolve_config(name), list(overrides or []))
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip()


def plugin_policy(plugins: Iterable[str] = (), trust: bool = False) -> AbstractContextManager:
    """The ``--plugins`` / ``--trust-plugins`` options of one command, for the length of a ``with`` block:
    :func:`vireid.plugins.plugin_flags`."""
    from vireid.plugins import plugin_flags

    return plugin_flags(plugins, trust)
