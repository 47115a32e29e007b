"""The GPU kit (benchmarks/gpu_check.sh) end to end in its CPU dry run: install step (skipped),
the ``cuda`` tests (skipped without a GPU), training / extraction / re-ranking at toy sizes, and
the table and logs in the folder named on its command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from conftest import REPO

KIT = REPO / "benchmarks" / "gpu_check.sh"


def _kit(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return subprocess.run(["bash", str(KIT), *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)


def test_gpu_kit_dry_run_runs_end_to_end_on_cpu(tmp_path):
    out = tmp_path / "kit"
    res = _kit(str(out), "--dry-run")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "(dry run) would run: " in res.stdout and "--no-deps" in res.stdout
    pytest_log = (out / "pytest_cuda.log").read_text()
    if not torch.cuda.is_available():
        assert "7 skipped" in pytest_log and "failed" not in pytest_log
    result = json.loads((out / "gpu_check.json").read_text())
    assert result["dry_run"] is True
    assert result["train_images_per_s"] > 0 and result["train_steps"] == 2
    assert result["extract_images"] == 64 and result["extract_images_per_s"] > 0
    assert result["rerank_n"] == 600 and result["rerank_s"] > 0
    table = (out / "gpu_check.md").read_text()
    assert table.startswith("DRY RUN on the CPU")
    for row in ("train images/s", "GPU busy", "peak memory", "extraction images/s", "re-ranking, N = 600"):
        assert row in table, row
    assert (out / "train-run" / "last.pt").is_file()  # the run folder of the trained model is kept
    assert "results in" in (out / "gpu_check.log").read_text()


def test_gpu_kit_refuses_bad_use_with_one_sentence(tmp_path):
    res = _kit()
    assert res.returncode == 2 and "usage: bash benchmarks/gpu_check.sh OUT_DIR [--dry-run]" in res.stderr
    res = _kit(str(tmp_path), "--fast")
    assert res.returncode == 2 and "unknown option --fast" in res.stderr
    if not torch.cuda.is_available():  # the measurements without a GPU and without --dry-run
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), str(tmp_path / "x")],
                             capture_output=True, text=True, env=env, timeout=120, cwd=REPO)
        assert res.returncode != 0 and "torch sees no CUDA device" in res.stderr and "Traceback" not in res.stderr
