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


class _Tee:
    """A text stream that writes to ``stream`` and to an open log file (both flushed per write)."""

    def __init__(self, stream: Any, log: Any) -> None:
        self._stream = stream
        self._log = log

    def write(self, text: str) -> int:
        self._stream.write(text)
        try:
            self._log.write(text)
            self._log.flush()
        except (OSError, ValueError):  # a full disk or a closed log never stops the run
            pass
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, encoding, fileno, ... of the real stream
        return getattr(self._stream, name)


class RunLog:
    """Copies everything printed (stdout and stderr) into ``RUN/log.txt`` while active (appending,
    so a resumed run continues the same file). Used by ``vireid train`` on the main process."""

    def __init__(self, run_dir: str | Path, enabled: bool = True) -> None:
        self.path = Path(run_dir) / "log.txt"
        self.enabled = enabled
        self._fh = None
        self._saved: tuple = ()

    def __enter__(self) -> "RunLog":
        import sys

        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")
            self._fh.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} =====\n")
            self._saved = (sys.stdout, sys.stderr)
            sys.stdout = _Tee(sys.stdout, self._fh)
            sys.stderr = _Tee(sys.stderr, self._fh)
        return self

    def __exit__(self, *exc: Any) -> None:
        import sys

        if self._fh is not None:
            sys.stdout, sys.stderr = self._saved
            self._fh.close()
            self._fh = None


def run_summary(trainer: Any) -> str:
    """The lines a run starts with: output folder, device and precision, dataset sizes per split and
    modality, model and parameter count."""
    import torch

    cfg = trainer.cfg
    dev = trainer.device
    if dev.type == "cuda":
        device = f"{dev} ({torch.cuda.get_device_name(dev)})"
    else:
        device = f"{dev} ({torch.get_num_threads()} threads)"
    precision = {torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}.get(trainer.amp_dtype, "fp32")
    params = sum(p.numel() for p in trainer.core_model.parameters())
    trainable = sum(p.numel() for p in trainer.core_model.parameters() if p.requires_grad)
    lines = [
        f"run folder: {Path(trainer.run_dir).absolute()} (log: log.txt)",
        f"device: {device}; precision: {precision}; world size {trainer.dist.world_size}",
        f"data: {cfg.data.format} at {cfg.data.root}, images {cfg.data.height}x{cfg.data.width}",
    ]
    data = trainer.data
    dataset = data.dataset
    splits = [("train", data.train_records), ("val", data.val_records or list(getattr(dataset, "val", []) or [])),
              ("test", list(getattr(dataset, "test", []) or []))]
    for name, records in splits:
        vis = sum(1 for r in records if r.modality == "visible")
        ir = len(records) - vis
        ids = len({r.orig_pid for r in records})
        lines.append(f"  {name:<5} {ids:>6} identities  {vis:>7} visible + {ir:>7} infrared images")
    backbone = (cfg.model.params or {}).get("backbone", "")
    lines.append(f"model: {cfg.model.method}{' / ' + backbone if backbone else ''}, {params / 1e6:.2f} M parameters "
                 f"({trainable / 1e6:.2f} M trained), {data.num_classes} training identities; "
                 f"{cfg.train.epochs} epochs")
    return "\n".join(lines)
