"""Prune + fine-tune a trained checkpoint (``vireid export --prune``): the channel surgery of
:mod:`vireid.modeling.pruning` applied to a checkpoint, written as a run folder that reloads, optionally
fine-tuned by the trainer and re-calibrated (the survey §6; Li et al., ICLR 2017, §3.1 for the L1 criterion).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

from vireid.errors import VireidError
from vireid.modeling.pruning import PruneSummary, apply_pruning_spec, prune_model, pruned_checkpoint, summarise


def prune_checkpoint(
    source: str | Path,
    out_dir: str | Path,
    amount: float,
    *,
    criterion: str = "l1",
    multiple: int = 8,
    finetune_epochs: int = 0,
    lr: float | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    progress: bool = True,
) -> PruneSummary:
    """Prune the model of ``source`` (checkpoint or run folder) and write ``out_dir/best.pt``.

    With ``finetune_epochs`` > 0 the pruned model is trained for that many epochs on the
    source's training data (``lr`` default: a tenth of the source's ``optim.lr``, cosine decay,
    no warm-up); ``out_dir`` then is a normal run folder (``best.pt`` chosen on validation,
    ``last.pt``, metrics). ``overrides`` are config overrides for the fine-tune run.
    """
    from vireid.config import save_config
    from vireid.plugins import stored_config
    from vireid.engine.checkpoint import atomic_torch_save, atomic_write_text, load_checkpoint
    from vireid.engine.trainer import load_model_from_checkpoint

    out_dir = Path(out_dir)
    if (out_dir / "best.pt").exists() or (out_dir / "last.pt").exists():
        raise VireidError(f"output folder {out_dir} already holds a checkpoint; choose another --out or delete it")
    ckpt = load_checkpoint(source)
    model, cfg, _ = load_model_from_checkpoint(source, "cpu")
    before = copy.deepcopy(model)
    spec = prune_model(model, amount, criterion=criterion, multiple=multiple)
    if ckpt.get("pruning"):  # pruning a pruned model: channel counts compose, originals stay the first ones
        spec["original"] = {k: int(ckpt["pruning"]["original"].get(k, v)) for k, v in spec["original"].items()}
        spec["amount"] = 1.0 - sum(spec["kept"].values()) / max(sum(spec["original"].values()), 1)
    summary = summarise(before, model, spec, (cfg.data.height, cfg.data.width))
    del before
    out_dir.mkdir(parents=True, exist_ok=True)
    pruned = pruned_checkpoint(ckpt, model, spec, summary)
    if finetune_epochs > 0:
        summary.finetune = finetune_pruned(pruned, out_dir, finetune_epochs, lr=lr, overrides=overrides, progress=progress)
        summary.checkpoint = str(out_dir / "best.pt")
    else:
        save_config(stored_config(pruned["config"]), out_dir / "config.yaml")
        atomic_torch_save(pruned, out_dir / "best.pt")
        summary.checkpoint = str(out_dir / "best.pt")
    atomic_write_text(out_dir / "prune_summary.json", json.dumps(summary.to_dict(), indent=2))
    return summary


def finetune_pruned(
    pruned: dict[str, Any],
    out_dir: Path,
    epochs: int,
    *,
    lr: float | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Train a pruned checkpoint's model for ``epochs`` epochs into run folder ``out_dir``."""
    from vireid.config import parse_override
    from vireid.plugins import stored_config

    tree = copy.deepcopy(pruned["config"])
    for text in overrides:  # key=value overrides on top of the source run's config
        keys, value = parse_override(text)
        node = tree
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    cfg = stored_config(tree)
    cfg.optim.lr = float(lr) if lr is not None else cfg.optim.lr * 0.1
    cfg.sched.name = "cosine"
    cfg.sched.warmup_epochs = 0
    cfg.train.epochs = int(epochs)
    cfg.train.progress = bool(progress) and cfg.train.progress
    cfg.name = f"{cfg.name}-pruned"
    if hasattr(cfg.train, "init_from"):  # the pruned weights are the start; no transfer initialisation
        cfg.train.init_from = None
    trainer = PrunedFineTuner(cfg, out_dir, pruned)
    try:
        summary = trainer.fit()
        try:  # a verification threshold for the pruned model, as after vireid train (vireid.workflows.calibration)
            from vireid.workflows.calibration import calibrate_after_training

            calibrate_after_training(out_dir, trainer.data, trainer.device)
        except (ImportError, VireidError) as err:
            print(f"verification threshold not calibrated: {err}")
    finally:
        trainer.close()
    return {"epochs": int(epochs), "lr": cfg.optim.lr, "best_epoch": summary["best_epoch"],
            "best_val_mAP": summary["best_val_mAP"]}


def _fine_tuner_class():
    from vireid.engine.trainer import Trainer, build_optimizer, lr_factor

    class _PrunedFineTuner(Trainer):
        """The normal training loop on an already pruned model (its checkpoints keep the spec)."""

        def __init__(self, cfg, run_dir, pruned: dict[str, Any]) -> None:
            super().__init__(cfg, run_dir)
            if self.dist.enabled:
                raise VireidError("fine-tuning a pruned model runs in one process; start vireid prune without torchrun")
            if int(pruned["num_classes"]) != self.data.num_classes:
                raise VireidError(
                    f"the pruned model has {pruned['num_classes']} identity classes but the training data now has "
                    f"{self.data.num_classes}; fine-tune on the data the model was trained on"
                )
            model = self.core_model
            apply_pruning_spec(model, pruned["pruning"])
            model.load_state_dict(pruned["model"])
            model.to(self.device)
            self.precision.prepare_model(model)
            self.model = self.forward_model = model
            if getattr(self.cfg.train, "freeze_stages", 0):  # frozen stages of the pruned model, not the discarded one
                from vireid.engine.transfer import freeze_stages

                self.frozen_modules = freeze_stages(model, self.cfg.train.freeze_stages)
            if self.cfg.train.compile:
                self.forward_model = torch.compile(model)
            self.pruning_spec = pruned["pruning"]
            self.optimizer = build_optimizer(self.cfg, self.model, self.losses)
            steps = self.steps_per_epoch
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda i: lr_factor(self.cfg, i / steps))

        def _checkpoint(self) -> dict:
            ckpt = super()._checkpoint()
            ckpt["pruning"] = self.pruning_spec
            return ckpt

    return _PrunedFineTuner


def PrunedFineTuner(cfg, run_dir: Path, pruned: dict[str, Any]):  # noqa: N802 - a class factory (lazy engine import)
    """A :class:`~vireid.engine.trainer.Trainer` whose model is the pruned one of ``pruned``."""
    return _fine_tuner_class()(cfg, run_dir, pruned)


__all__ = ["PrunedFineTuner", "finetune_pruned", "prune_checkpoint"]
