"""benchmarks/ablation_summary.py: reads the four paper grids' ablation.json and sorts their compare pairs
into higher / lower / level by the seed-paired 95 % interval, as a user runs it (a fresh process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from vireid.workflows.ablation import load_grid

ROOT = Path(__file__).resolve().parents[2]
GRIDS = {"dfw_sln_synth": "ablate-dfw_sln-e6", "pdfenet_synth": "ablate-pdfenet-e6",
         "mag_mmt_synth": "ablate-mag_mmt-e6", "caj_synth": "ablate-caj-e6"}


def _fake_grid_runs(runs: Path, grid_name: str, folder: str) -> None:
    """Every row scores 10 + its index (+ 0, 0.5, -0.5 per seed): every later row beats the first one
    by a constant, so each pair's interval is known."""
    grid = load_grid(ROOT / "src" / "vireid" / "configs" / "ablations" / f"{grid_name}.yaml")
    rows = []
    for index, row in enumerate(grid.rows):
        run_dir = runs / folder / row.name
        run_dir.mkdir(parents=True)
        (run_dir / "log.txt").write_text("device: cpu (1 threads); precision: bf16 autocast; world size 1\n")
        seeds = {str(seed): {"sysu-all-single": {"mean": {"mAP": 10.0 + index + (0.0, 0.5, -0.5)[seed] * (index % 2)}}}
                 for seed in range(3)}
        rows.append({"name": row.name, "label": "", "run_dir": str(run_dir), "seeds": seeds})
    (runs / folder / "ablation.json").write_text(json.dumps({"rows": rows}))


def test_summary_reads_every_grid_and_sorts_pairs_by_their_interval(tmp_path):
    runs, doc = tmp_path / "runs", tmp_path / "results.md"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(ROOT / "benchmarks" / "ablation_summary.py"), "--runs", str(runs), "--doc", str(doc)]
    missing = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert missing.returncode != 0 and "run the grids first" in missing.stderr
    for grid_name, folder in GRIDS.items():
        _fake_grid_runs(runs, grid_name, folder)
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    text = doc.read_text()
    assert "<!-- BEGIN ablation-summary -->" in text and "bf16 autocast, 1 thread(s) per row" in text
    # caj rows: demo 10 (constant), caj_views 11 (+0, +0.5, -0.5 per seed), caj 12 (constant)
    assert "- higher: caj_views against demo: +1.00 mAP (± 0.50 over 3 seeds, 95 % interval [-0.24, +2.24])" not in text
    assert "caj_views against demo: +1.00 mAP (± 0.50 over 3 seeds, 95 % interval [-0.24, +2.24])" in text  # level
    assert "- higher: caj against demo: +2.00 mAP (± 0.00 over 3 seeds, 95 % interval [+2.00, +2.00])" in text
    assert "- lower: none" in text and text.count("**") == 8  # four grids, each named once in bold
