"""Run-folder logging: JSON lines (always) and TensorBoard (when installed)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Appends one JSON object per record to ``metrics.jsonl`` and mirrors scalars to TensorBoard.

    Each record has ``kind`` (``step``, ``epoch``, ``val``, ``test``), ``epoch``, ``step`` and the
    values. Only the main process of a distributed run writes (``enabled=False`` elsewhere).
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.path = self.run_dir / "metrics.jsonl"
        self._tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
            except Exception:  # noqa: BLE001 - tensorboard missing or broken: JSON lines still written
                self._tb = None

    def log(self, kind: str, step: int, epoch: int, **values: Any) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "epoch": epoch, "step": step, "time": round(time.time(), 3)}
        record.update({k: _plain(v) for k, v in values.items()})
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if key in ("kind", "epoch", "step", "time"):
                    continue
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self._tb.add_scalar(f"{kind}/{key}", value, step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def read_metrics(run_dir: str | Path) -> list[dict]:
    """All records of a run's ``metrics.jsonl`` (a torn last line from a kill is skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
