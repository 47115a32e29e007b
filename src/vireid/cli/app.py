"""The ``vireid`` Typer application and the options several commands share.

A command module does ``from vireid.cli.app import app`` and decorates its functions with
``@app.command(...)``; :mod:`vireid.cli.commands` imports every module of this package.
"""

from __future__ import annotations

import functools
import inspect
from typing import Optional

import typer

app = typer.Typer(
    name="vireid",
    help="Visible-infrared person re-identification: data, training, evaluation and search.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def plugin_options(command):
    """Add ``--plugins`` and ``--trust-plugins`` to a command that opens stored models or runs: a stored
    config's plugin code is imported only with one of them (:func:`vireid.workflows.configs.plugin_policy`)."""
    signature = inspect.signature(command, eval_str=True)
    extra = [
        inspect.Parameter("plugins", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[list[str]],
                          default=typer.Option(None, "--plugins", help="Import this plugin module or .py file first "
                                               "(your copy of the code a stored run was made with); repeatable.")),
        inspect.Parameter("trust_plugins", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                          default=typer.Option(False, "--trust-plugins", help="Import the plugin code named in the "
                                               "stored run's config (only for code you trust).")),
    ]

    @functools.wraps(command)
    def wrapper(*args, plugins=None, trust_plugins=False, **kwargs):
        from vireid.workflows.configs import plugin_policy

        with plugin_policy(plugins or (), trust_plugins):
            return command(*args, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *extra])
    return wrapper


__all__ = ["app", "plugin_options"]
