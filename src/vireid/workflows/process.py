"""Process-wide settings every ``vireid`` command starts with (called by :func:`vireid.cli.main` before a
command runs, so that they are in place before torch starts its thread pool)."""

from __future__ import annotations


def prepare_process() -> None:
    """Flush subnormal floats to zero in this process and the threads it starts afterwards
    (:func:`vireid.engine.precision.flush_denormals`: subnormal weights and optimizer moments slowed CPU
    training by about 40 %)."""
    from vireid.engine.precision import flush_denormals

    flush_denormals()
