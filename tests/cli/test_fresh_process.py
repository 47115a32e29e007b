"""Commands run as a user runs them: ``python -m vireid ...`` in a fresh interpreter, where nothing but
the command itself has imported vireid (in-process tests share registries filled by other tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def vireid(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "vireid", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120)


def test_dataset_readers_are_registered_for_datasets_and_pose_cache(tiny_synth_root, tmp_path):
    formats = vireid("datasets", "formats")
    assert formats.returncode == 0, formats.stderr
    for name in ("sysu-mm01", "regdb", "llcm", "folder", "csv"):
        assert f"\n{name} " in f"\n{formats.stdout}"
    cache = vireid("pose-cache", tiny_synth_root, "--estimator", "synthetic", "--out", tmp_path / "p.npz",
                   "--no-progress")
    assert cache.returncode == 0, cache.stderr
    assert cache.stdout.startswith(f"pose cache {tmp_path / 'p.npz'}: ") and (tmp_path / "p.npz").is_file()
