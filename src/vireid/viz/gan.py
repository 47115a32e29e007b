"""Translation grids of a ``vireid gan train`` run for the HTML report (``vireid report RUN --gan GAN_RUN``).

``vireid gan train`` writes ``samples/epoch_NNN.png`` after every epoch (:meth:`vireid.workflows.gan.GanTrainer.write_samples`):
the same images each epoch, rows real visible / translated to infrared / translated back, then real
infrared / translated to visible / translated back. The report shows the first and the last grid, and the
Fréchet distances of ``vireid gan measure`` when the run holds them (``gan_measures.json``).
"""

from __future__ import annotations

import json
from pathlib import Path

from vireid.errors import VireidError

ROWS = ("real visible", "visible -> infrared", "back to visible", "real infrared", "infrared -> visible",
        "back to infrared")


def gan_figures(gan_run: str | Path) -> list[tuple[str, str, bytes, str]]:
    """The ``(key, title, PNG bytes, caption)`` of a GAN run's translation grids, the fields of a report
    :class:`~vireid.viz.report.Figure` (the report builds those; this module does not import it)."""
    folder = Path(gan_run)
    grids = sorted((folder / "samples").glob("epoch_*.png")) if folder.is_dir() else []
    if not grids:
        raise VireidError(f"--gan {gan_run} holds no translation grids (samples/epoch_NNN.png); pass the folder of a "
                          "vireid gan train run that finished at least one epoch")
    caption = "Rows, top to bottom: " + ", ".join(ROWS) + "."
    measures = folder / "gan_measures.json"
    if measures.is_file():
        m = json.loads(measures.read_text())
        caption += (f" Fréchet distance to real infrared in the embedding space of {m.get('reid_model')}: translated "
                    f"{m['fd_translated_ir']:.4f}, untranslated visible {m['fd_visible_ir']:.4f} (vireid gan measure).")
    chosen = [grids[0]] if len(grids) == 1 else [grids[0], grids[-1]]
    return [(f"gan-{g.stem}", f"Translation grid, GAN run {folder.name}, {g.stem.replace('_', ' ')}",
             g.read_bytes(), caption) for g in chosen]


__all__ = ["gan_figures"]
