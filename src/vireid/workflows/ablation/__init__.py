"""Ablation grids (split by job: :mod:`.grid` parses the grid file, :mod:`.state` reads what a row's folder
holds, :mod:`.tables` writes the tables, :mod:`.pool` trains rows in parallel processes, :mod:`.run` runs the
grid): train one config under several named sets of overrides, evaluate each on the
dataset's standard protocols, and tabulate Rank-1/10/20, mAP and mINP (mean over trials).

Grid file (YAML)::

    # optional: the config the rows start from (a path, relative to this file or the working
    # folder, or a shipped config name); `vireid ablate --config` takes precedence
    config: dfw_sln_synth
    title: DFW+SLN ablation (Table 1)         # optional, heads the tables
    overrides: [train.epochs=10]               # optional, applied to every row
    rows:
      - name: baseline                         # run-folder name: letters, digits, . _ + -
        label: Baseline                        # optional, shown in the table (default: name)
        marks: {DFW: false, SLN: false, RE: false}   # optional table columns (true ✓ / false ✗ / text)
        overrides: [model.params.num_branches=1, augment.random_erasing=0.0]
      - name: dfw_sln_re
        overrides: {model.params.num_branches: 2}   # a mapping of dotted keys works too
    compare:                                   # optional: pairs read out under the tables
      - [dfw_sln_re, baseline]                 # row, then the row it is measured against

Overrides apply in this order: the config file, the grid's ``overrides``, the command line's, then
the row's (the row's own settings are what the ablation varies, so they win).

Each row trains in ``OUT/<name>/`` through the normal training path (the same function as
``vireid train``) with ``name=<name>``. The grid is resumable: a row whose folder holds
``test_results.json`` is not re-run; one whose training finished (``train_summary.json``) is only
evaluated; one with a ``last.pt`` (interrupted) is resumed. A folder made with a different config
(the grid was edited) is refused rather than reused. ``--seeds`` repeats every row per training seed
(``OUT/<row>.seed<S>/`` beside the config-seed run) and ``--jobs`` trains rows in parallel processes. Results go to ``OUT/ablation.md`` and
``OUT/ablation.json`` (with each ``compare`` pair's difference, paired by seed, and its 95 % interval:
:func:`compare_rows`), and optionally into a named section of another Markdown file
(:func:`write_markdown_section`, e.g. ``docs/results.md``).
"""

from __future__ import annotations

from vireid.workflows.ablation.grid import AblationComparison, AblationGrid, AblationRow, load_grid, row_folder_name, row_overrides
from vireid.workflows.ablation.pool import RowJob, run_rows_in_processes
from vireid.workflows.ablation.run import run_ablation
from vireid.workflows.ablation.state import RUNTIME_KEYS, row_results
from vireid.workflows.ablation.tables import (
    METRIC_COLUMNS,
    AblationReport,
    combine_seeds,
    compare_rows,
    write_markdown_section,
)

__all__ = [
    "METRIC_COLUMNS",
    "RUNTIME_KEYS",
    "RowJob",
    "combine_seeds",
    "compare_rows",
    "row_folder_name",
    "run_rows_in_processes",
    "AblationComparison",
    "AblationGrid",
    "AblationReport",
    "AblationRow",
    "load_grid",
    "row_overrides",
    "row_results",
    "run_ablation",
    "write_markdown_section",
]
