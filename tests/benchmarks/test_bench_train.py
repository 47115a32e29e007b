"""benchmarks/bench_train.py runs as a user runs it: ``python benchmarks/bench_train.py`` in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_in_a_fresh_process_times_both_precisions():
    # a fresh process has only what the script imports: the dataset readers must be registered by it
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--quick"], cwd=ROOT,
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    row = [line for line in out.stdout.splitlines() if line.startswith("| smoke")]
    assert len(row) == 1, out.stdout
    cells = [c.strip() for c in row[0].strip("|").split("|")]
    assert float(cells[1]) > 0 and float(cells[2]) > 0 and cells[3].endswith("x"), row
