"""The model-agnostic training loop.

A method plugs in without edits here through four things:

* its model (``METHODS`` registry, built from ``model.method`` and ``model.params``), whose
  ``forward(images, modalities)`` returns a dict of named outputs in training mode and the
  embedding tensor in evaluation mode;
* the loss table of the config: each term names a ``LOSSES`` entry, the output key it reads
  (``input``) and a weight; every loss is called as ``loss(outputs[input], labels, modalities)``;
* optional hooks on the model: ``on_epoch_start(epoch)``, ``on_after_step()`` (e.g. momentum
  updates) and ``param_groups(lr)`` (per-part learning rates); for multi-stage methods (CLIP-ReID):
  ``group_lr_factor(group_name, t, schedule)`` (each optimiser group's own learning-rate factor at
  fractional epoch ``t``; ``schedule(t)`` is the config's), ``phase_outputs`` (output names produced
  only in some epochs: loss terms reading one that is absent are skipped for that batch), and a
  ``labels`` parameter of ``forward`` (the batch's identity labels are then passed to it);
  updates) and ``param_groups(lr)`` (per-part learning rates);
* an optional hook on the model or a loss term: ``on_train_epoch_start(trainer, epoch)``, called at the
  start of every epoch before the sampler plans it, with this trainer: it may read
  :meth:`Trainer.train_features` and replace the training loader's ``labels`` and ``batch_sampler``
  (re-clustered pseudo-labels: the ``cluster_memory`` loss);
* optional batch-level augmentation steps chosen in the ``augment`` section.

Per epoch: sampler plan -> batches from the decoded-image cache -> forward -> weighted losses ->
backward (mixed precision per ``train.amp``, vireid.engine.precision) -> clip -> step -> scheduler (per iteration) -> checkpoint (atomic) ->
validation on held-out identities (never the test set) -> best checkpoint.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import vireid.builtins  # noqa: F401  (the registries the config names parts from)
from vireid.config import Config, save_config
from vireid.engine.checkpoint import (
    atomic_torch_save,
    atomic_write_text,
    load_checkpoint,
    load_weights,
    remove_stale_temporaries,
    rng_state,
    set_rng_state,
)
from vireid.engine.run_folder import RunLock, check_fresh_run_folder, repair_best_checkpoint, trim_metrics
from vireid.engine.distributed import DistInfo, barrier, cleanup, init_distributed
from vireid.engine.precision import announce_precision, flush_denormals, resolve_precision
from vireid.engine.run_logging import MetricsLogger
from vireid.errors import ConfigError, VireidError
from vireid.plugins import stored_config
from vireid.registry import accepted_parameters


class TrainingDiverged(VireidError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(name: str, dist_info: DistInfo | None = None) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"config key 'train.device' is {name!r} but no CUDA device is available; use cpu or auto")
        if dist_info is not None and dist_info.enabled and name == "cuda":
            return torch.device("cuda", dist_info.local_rank)
    return torch.device(name)


def _method_and_params(cfg: Config) -> tuple[Any, dict]:
    """The registered method class and its ``model.params``, checked against its signature."""
    from vireid.modeling.registries import METHODS

    method, params = METHODS.check(cfg.model.method, cfg.model.params, "model.params",
                                   where="config key 'model.method'", skip=("num_classes",))
    from vireid.data.extras import check_configured_extras  # the side inputs the config gives the method

    check_configured_extras(cfg.data, method, cfg.model.method)
    return method, params


def _loss_specs(cfg: Config) -> dict[str, tuple[Any, dict]]:
    """Per loss term: the registered loss class and its ``params``, checked against its signature."""
    from vireid.modeling.registries import LOSSES

    return {name: LOSSES.check(term.type or name, term.params, f"losses.{name}.params", where=f"config key 'losses.{name}'")
            for name, term in cfg.loss_terms().items()}


def validate_config(cfg: Config) -> None:
    """Check the free-form parts of a config (method and its params, loss types and params, dataset
    format and options) against what they configure, before any data is read or generated."""
    from vireid.data.build import check_data_options
    from vireid.data.transforms import add_configured_steps, build_train_transform

    _method_and_params(cfg)
    specs = _loss_specs(cfg)
    if cfg.data.labelled_fraction < 1.0 and not any(getattr(c, "uses_pseudo_labels", False) for c, _ in specs.values()):
        raise ConfigError(f"config key 'data.labelled_fraction' is {cfg.data.labelled_fraction}, but no loss term trains on "
                          "pseudo-labels; add a cluster_memory loss (configs usl_synth, semi_synth) or set it to 1.0")
    check_data_options(cfg.data)
    add_configured_steps(build_train_transform(cfg.data.height, cfg.data.width), cfg.augment.steps)
    from vireid.engine.transfer import check_transfer_options

    check_transfer_options(cfg)
    if cfg.eval.rerank is not False:  # True / "k-reciprocal" / "modality" (vireid.evaluation.rerank_modality)
        from vireid.evaluation.rerank_modality import rerank_settings

        rerank_settings(cfg.eval.rerank)


def _accepts(func: Any, name: str) -> bool:
    return name in accepted_parameters(func)[0]


def build_model(cfg: Config, num_classes: int) -> nn.Module:
    """The method's model from ``model.method`` + ``model.params`` (validated by signature)."""
    method, params = _method_and_params(cfg)
    if _accepts(method, "img_size") and "img_size" not in params:
        params["img_size"] = (cfg.data.height, cfg.data.width)
    return method(num_classes=num_classes, **params)


def build_losses(cfg: Config, num_classes: int, feat_dim: int) -> nn.ModuleDict:
    """One module per loss term; ``num_classes``/``feat_dim`` filled in where the loss asks for them."""
    losses = nn.ModuleDict()
    for name, (cls, params) in _loss_specs(cfg).items():
        if _accepts(cls, "num_classes"):
            params.setdefault("num_classes", num_classes)
        if _accepts(cls, "feat_dim"):
            params.setdefault("feat_dim", feat_dim)
        losses[name] = cls(**params)
    return losses


def build_optimizer(cfg: Config, model: nn.Module, losses: nn.Module) -> torch.optim.Optimizer:
    o = cfg.optim
    core = model.module if hasattr(model, "module") else model
    if o.layer_decay != 1.0:  # layer-wise lr decay: the model sorts its parameters into layers
        if not (hasattr(core, "param_groups") and _accepts(core.param_groups, "layer_decay")):
            raise ConfigError(f"config key 'optim.layer_decay' is {o.layer_decay} but {type(core).__name__} has no "
                              "layers to decay over; set it to 1.0 or use a ViT model (model.method: vit)")
        groups = list(core.param_groups(o.lr, layer_decay=o.layer_decay))
    elif hasattr(core, "param_groups"):
        groups = list(core.param_groups(o.lr))
    else:
        groups = [{"params": [p for p in core.parameters() if p.requires_grad]}]
    if o.backbone_lr_mult != 1.0:  # a gentler learning rate for a pretrained or trained backbone
        from vireid.engine.transfer import scale_backbone_lr

        groups = scale_backbone_lr(groups, core, o.lr, o.backbone_lr_mult)
    loss_params = [p for p in losses.parameters() if p.requires_grad]
    if loss_params:
        groups.append({"params": loss_params})
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0,
                               weight_decay=o.weight_decay)
    if o.name == "adam":
        return torch.optim.Adam(groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)


def lr_factor(cfg: Config, t: float) -> float:
    """Learning-rate multiplier at fractional epoch ``t`` (linear warm-up, then multistep or cosine)."""
    s = cfg.sched
    if s.warmup_epochs > 0 and t < s.warmup_epochs:
        if s.warmup_by_epoch:  # constant within an epoch, 1.0 in the last warm-up epoch (AGW/CAJ train.py)
            return s.warmup_start_factor + (1.0 - s.warmup_start_factor) * math.floor(t) / max(s.warmup_epochs - 1, 1)
        return s.warmup_start_factor + (1.0 - s.warmup_start_factor) * t / s.warmup_epochs
    if s.name == "multistep":
        return s.gamma ** sum(1 for m in s.milestones if t >= m)
    if s.name == "cosine":
        span = max(cfg.train.epochs - s.warmup_epochs, 1e-8)
        progress = min(max((t - s.warmup_epochs) / span, 0.0), 1.0)
        floor = s.min_lr / cfg.optim.lr if cfg.optim.lr > 0 else 0.0
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


@dataclass
class TrainState:
    epoch: int = 0  # next epoch to run
    step: int = 0  # optimizer steps done
    best_metric: float = -1.0
    best_epoch: int = -1


class Trainer:
    """Builds everything from a :class:`Config` and trains; ``fit()`` returns the final summary."""

    def __init__(self, cfg: Config, run_dir: str | Path, resume: bool = False) -> None:
        validate_config(cfg)
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.dist = init_distributed(cfg.train.device)
        self.device = resolve_device(cfg.train.device, self.dist)
        flush_denormals()  # subnormal weights/moments slow CPU training (vireid.engine.precision.flush_denormals)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.precision = resolve_precision(cfg.train.amp, self.device, cfg.train.channels_last)
        announce_precision(self.precision, enabled=self.dist.is_main)
        seed_everything(cfg.seed + self.dist.rank)
        self._lock = None
        if self.dist.is_main:
            # one training per folder (vireid.engine.run_folder), never an unrelated folder, no crash leftovers
            if not resume:
                check_fresh_run_folder(self.run_dir)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._lock = RunLock.acquire(self.run_dir)
        try:
            self._setup(cfg, resume)
        except BaseException:
            self.release_lock()
            raise

    def _setup(self, cfg: Config, resume: bool) -> None:
        from vireid.data.build import build_train_data

        if self.dist.is_main:
            remove_stale_temporaries(self.run_dir)
            save_config(cfg, self.run_dir / "config.yaml")
            if not resume:  # a fresh run: records of an attempt that died before its first checkpoint go
                (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)
        barrier(self.dist)

        self.data = build_train_data(cfg, rank=self.dist.rank, world_size=self.dist.world_size,
                                     device=self.device, progress=cfg.train.progress and self.dist.is_main,
                                     barrier=lambda: barrier(self.dist))
        model = build_model(cfg, self.data.num_classes)
        from vireid.data.extras import check_model_extras

        check_model_extras(model, self.data.train_loader.extras)  # side-input values, once per loader (not per step)
        # transfer (vireid.engine.transfer): start from a trained model's weights, keep early stages fixed;
        # a resumed run gets its weights from last.pt instead
        from vireid.engine.transfer import freeze_stages, initialise_from_checkpoint

        self.init_report = None
        if cfg.train.init_from and not resume:
            self.init_report = initialise_from_checkpoint(model, cfg.train.init_from, self.data.num_classes)
            if self.dist.is_main:
                r = self.init_report
                print(f"initialised from {r['source']}: {r['loaded']} tensors copied, identity classifier new "
                      f"({r['source_num_classes']} -> {self.data.num_classes} identities)", flush=True)
        self.frozen_modules = freeze_stages(model, cfg.train.freeze_stages)
        self.embed_dim = int(getattr(model, "embed_dim", 0))
        model.to(self.device)
        self.precision.prepare_model(model)
        self.model = model
        self.loss_terms = cfg.loss_terms()
        self.losses = build_losses(cfg, self.data.num_classes, self.embed_dim).to(self.device)
        if self.dist.enabled:
            self.model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                # a model part no gradient reaches in some step (the method says so), or a loss table that leaves
                # one out (e.g. the cluster-memory loss never reads the identity classifier's logits)
                find_unused_parameters=bool(getattr(model, "has_unused_parameters", False)) or any(
                    getattr(loss, "has_unused_parameters", False) for loss in self.losses.values()),
            )
        self.forward_model = self.model
        if cfg.train.compile:
            self.forward_model = torch.compile(self.model)
        self.optimizer = build_optimizer(cfg, self.model, self.losses)
        steps = max(len(self.data.train_loader), 1)
        self.steps_per_epoch = steps
        # --- per-group schedules (multi-stage methods, e.g. CLIP-ReID): the model's group_lr_factor hook
        if hasattr(model, "group_lr_factor"):
            def group_factor(name: str | None):
                return lambda i: model.group_lr_factor(name, i / steps, lambda t: lr_factor(cfg, t))

            factors = [group_factor(g.get("name")) for g in self.optimizer.param_groups]
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factors)
        else:
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda i: lr_factor(cfg, i / steps))
        self.forward_labels = _accepts(type(model).forward, "labels")  # forward(..., labels=) gets the batch labels
        self.phase_outputs = frozenset(getattr(model, "phase_outputs", ()))
        # --- end per-group schedules
        self.amp_dtype = self.precision.dtype
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.grad_scaler)
        self.state = TrainState()
        self.logger = MetricsLogger(self.run_dir, enabled=self.dist.is_main)
        if resume:
            self._resume()

    # ------------------------------------------------------------------ checkpoints
    @property
    def core_model(self) -> nn.Module:
        return self.model.module if hasattr(self.model, "module") else self.model

    def _checkpoint(self) -> dict:
        return {
            "format": "vireid-checkpoint-1",
            "config": self.cfg.to_dict(),
            "model": self.core_model.state_dict(),
            "losses": self.losses.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.data.train_loader.state_dict(),
            "rng": rng_state(),
            "state": dict(vars(self.state)),
            "num_classes": self.data.num_classes,
            "embed_dim": self.embed_dim,
            "train_ids": self.data.train_id_map,
        }

    def _save(self, name: str, ckpt: dict | None = None) -> Path:
        path = self.run_dir / name
        if self.dist.is_main:
            atomic_torch_save(ckpt if ckpt is not None else self._checkpoint(), path)
        return path

    def _resume(self) -> None:
        path = self.run_dir / "last.pt"
        if not path.is_file():
            raise VireidError(f"cannot resume: {path} does not exist; start a new run without --resume")
        ckpt = load_checkpoint(path, map_location=self.device)
        load_weights(self.core_model, ckpt["model"], f"checkpoint {path}")
        load_weights(self.losses, ckpt["losses"], f"checkpoint {path} (its loss terms)")
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.data.train_loader.load_state_dict(ckpt["sampler"])
        set_rng_state(ckpt["rng"])
        self.state = TrainState(**ckpt["state"])
        if self.dist.is_main:
            # a kill between last.pt and best.pt, and records logged after last.pt (vireid.engine.run_folder)
            repair_best_checkpoint(self.run_dir, ckpt, self.cfg.train.select_best == "last" or self.data.val_cache is None)
            trim_metrics(self.run_dir, self.state.step, self.state.epoch)
            print(f"resumed {self.run_dir} at epoch {self.state.epoch} (step {self.state.step})")

    # ------------------------------------------------------------------ training
    def _compute_losses(self, outputs: dict, labels: torch.Tensor, modalities: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = {}
        for name, term in self.loss_terms.items():
            if term.input not in outputs and term.input in self.phase_outputs:
                continue  # an output of another training phase (the model's phase_outputs)
            if term.input not in outputs:
                raise ConfigError(
                    f"config key 'losses.{name}.input' is {term.input!r}, but the model outputs only "
                    f"{', '.join(sorted(outputs))}"
                )
            value = self.losses[name](outputs[term.input], labels, modalities)
            terms[name] = term.weight * value.float()
        if not terms:  # every term reads another phase's output
            raise ConfigError(
                f"no term of the config's 'losses' reads what the model outputs now ({', '.join(sorted(outputs))}); "
                "add a loss term with one of them as its input"
            )
        return terms

    # ---- generic epoch-start hook (e.g. re-clustering pseudo-labels); keep free of method-specific code
    def _epoch_start_hooks(self) -> list:
        modules = [self.core_model, *self.losses.values()]
        return [m.on_train_epoch_start for m in modules if callable(getattr(m, "on_train_epoch_start", None))]

    def train_features(self) -> torch.Tensor:
        """Embeddings ``[N, D]`` (float32, CPU) of every training image, in the loader's order, by the current
        model in evaluation mode (as :func:`vireid.inference.extract.extract_features`), for epoch-start hooks.

        Under DDP every rank gets the same features whatever the world size: the ranks first take rank 0's
        buffers (BatchNorm statistics drift apart with each rank's last batch), each embeds its contiguous
        share of the images, and the shares are gathered in order (:func:`vireid.engine.distributed.gather_rows`)."""
        from vireid.inference.extract import extract_features

        loader = self.data.train_loader
        kwargs = dict(batch_size=self.cfg.eval.batch_size, precision=self.precision)
        if not (self.dist.enabled and torch.distributed.is_initialized()):
            return extract_features(self.core_model, loader.cache, loader.modalities.numpy(), self.device,
                                    extras=loader.extras, **kwargs)
        from vireid.data.cache import ImageCache
        from vireid.data.extras import select_extras
        from vireid.engine.distributed import broadcast_buffers, gather_rows
        from vireid.evaluation.distributed import shard_range

        broadcast_buffers(self.core_model)
        start, stop = shard_range(len(loader.cache), self.dist.rank, self.dist.world_size)
        local = extract_features(self.core_model, ImageCache(loader.cache.array[start:stop]),
                                 loader.modalities.numpy()[start:stop], self.device,
                                 extras=select_extras(loader.extras, slice(start, stop)), **kwargs)
        return gather_rows(local)
    # ---- end of the generic epoch-start hook

    def train_epoch(self, epoch: int) -> dict:
        cfg = self.cfg
        loader = self.data.train_loader
        for hook in self._epoch_start_hooks():
            hook(self, epoch)
        loader.set_epoch(epoch)
        core = self.core_model
        if hasattr(core, "on_epoch_start"):
            core.on_epoch_start(epoch)
        self.model.train()
        for module in self.frozen_modules:  # frozen stages keep their BatchNorm statistics
            module.eval()
        self.losses.train()
        n_batches = len(loader)
        bar = None
        if cfg.train.progress and self.dist.is_main:
            from tqdm import tqdm

            bar = tqdm(total=n_batches, initial=loader.state_dict().get("batches_consumed", 0), desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                       leave=False, dynamic_ncols=True, disable=None)  # no bar when not a terminal
        sums: dict[str, float] = {}
        count = 0
        images_seen = 0
        t0 = time.perf_counter()
        for batch in loader:
            with self.precision.autocast():
                images = self.precision.prepare_input(batch.images)
                extras = dict(batch.extras, labels=batch.labels) if self.forward_labels else batch.extras
                outputs = self.forward_model(images, batch.modalities, **extras)
                if not isinstance(outputs, dict):
                    raise VireidError(f"method {cfg.model.method!r} returned {type(outputs).__name__} in training mode; it must return a dict of outputs")
                terms = self._compute_losses(outputs, batch.labels, batch.modalities)
            total = sum(terms.values())
            total_value = float(total.detach())
            if not math.isfinite(total_value):
                values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
                kept = (f"{self.run_dir / 'last.pt'} keeps the last good epoch" if self.state.epoch > 0
                        else "no checkpoint was saved (it happened in the first epoch)")
                raise TrainingDiverged(
                    f"the loss became {total_value} at epoch {epoch + 1}, step {self.state.step + 1} ({values}); "
                    f"training stopped and {kept} — lower optim.lr, "
                    f"enable optim.clip_grad_norm or use train.amp=bf16 instead of fp16"
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(total).backward()
            if cfg.optim.clip_grad_norm:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(
                    [p for g in self.optimizer.param_groups for p in g["params"]], cfg.optim.clip_grad_norm
                )
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            if hasattr(core, "on_after_step"):
                core.on_after_step()
            self.state.step += 1
            count += 1
            images_seen += batch.images.shape[0]
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            sums["loss"] = sums.get("loss", 0.0) + total_value
            lr = self.optimizer.param_groups[0]["lr"]
            ips = images_seen * self.dist.world_size / max(time.perf_counter() - t0, 1e-9)
            if bar is not None:
                bar.set_postfix(loss=f"{total_value:.3f}", lr=f"{lr:.2e}", img_s=f"{ips:.0f}")
                bar.update(1)
            if cfg.train.log_every and self.state.step % cfg.train.log_every == 0:
                self.logger.log("step", self.state.step, epoch, loss=total_value, lr=lr, images_per_s=ips,
                                **{k: float(v.detach()) for k, v in terms.items()})
        if bar is not None:
            bar.close()
        elapsed = time.perf_counter() - t0
        means = {k: v / max(count, 1) for k, v in sums.items()}
        means["images_per_s"] = images_seen * self.dist.world_size / max(elapsed, 1e-9)
        means["lr"] = self.optimizer.param_groups[0]["lr"]
        means["seconds"] = elapsed
        return means

    def validate(self) -> dict | None:
        """mAP/rank-1 infrared->visible on the held-out validation identities, or None without any."""
        from vireid.inference.extract import validation_metrics

        if self.data.val_cache is None:
            return None
        return validation_metrics(self.core_model, self.data, self.device, self.cfg.eval.batch_size, self.cfg.eval.metric,
                                  precision=self.precision, flip=bool(self.cfg.eval.flip))

    def fit(self) -> dict:
        cfg = self.cfg
        start = self.state.epoch
        history = []
        try:
            for epoch in range(start, cfg.train.epochs):
                stats = self.train_epoch(epoch)
                self.state.epoch = epoch + 1
                record = {"epoch": epoch + 1, **stats}
                val = None
                if (
                    self.dist.is_main
                    and cfg.train.eval_every
                    and ((epoch + 1) % cfg.train.eval_every == 0 or epoch + 1 == cfg.train.epochs)
                ):
                    val = self.validate()
                if val is not None:
                    record.update({f"val_{k}": v for k, v in val.items()})
                    self.logger.log("val", self.state.step, epoch + 1, **val)
                improved = val is not None and cfg.train.select_best == "val" and val["mAP"] > self.state.best_metric
                if improved:
                    self.state.best_metric = float(val["mAP"])
                    self.state.best_epoch = epoch + 1
                self.logger.log("epoch", self.state.step, epoch + 1, **stats)
                ckpt = self._checkpoint()
                self._save("last.pt", ckpt)
                if improved or (cfg.train.select_best == "last" or self.data.val_cache is None):
                    self._save("best.pt", ckpt)
                barrier(self.dist)
                history.append(record)
                if self.dist.is_main:
                    line = f"epoch {epoch + 1}/{cfg.train.epochs}  loss {stats['loss']:.4f}  lr {stats['lr']:.2e}  {stats['images_per_s']:.0f} img/s"
                    if val is not None:
                        line += f"  val mAP {100 * val['mAP']:.2f}  R1 {100 * val['rank1']:.2f}"
                    print(line, flush=True)
        finally:
            self.logger.close()
        summary = {
            "run_dir": str(self.run_dir),
            "epochs": self.state.epoch,
            "best_epoch": self.state.best_epoch,
            "best_val_mAP": self.state.best_metric,
            # how it trained, for tables that reuse the run later (on another machine, auto may pick otherwise)
            "precision": self.precision.describe().removeprefix("precision: "),
            "device": self.device.type,
            "threads": torch.get_num_threads() if self.device.type == "cpu" else None,
            "history": history,
        }
        if self.dist.is_main:
            atomic_write_text(self.run_dir / "train_summary.json", json.dumps(summary, indent=2))
        return summary

    def release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def close(self) -> None:
        self.release_lock()
        cleanup(self.dist)


def load_model_from_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Config, dict]:
    """Rebuild the model of a checkpoint (or run folder) in evaluation mode."""
    ckpt = load_checkpoint(path, map_location=device)
    cfg = stored_config(ckpt["config"], source=f"checkpoint {path}")
    if not isinstance(ckpt.get("num_classes"), int) or ckpt["num_classes"] < 1:
        raise VireidError(f"checkpoint {path} has no num_classes entry, so its model cannot be rebuilt; use a "
                          "checkpoint saved by vireid train (best.pt or last.pt of a run folder)")
    from vireid.modeling.modules.non_local import upgrade_non_local_params

    upgrade_non_local_params(cfg.model.params, ckpt["model"])  # saved when "agw" meant C/2 blocks: agw_c2
    model = build_model(cfg, int(ckpt["num_classes"]))
    if ckpt.get("pruning"):  # channels removed by `vireid prune`: shrink to the stored shapes first
        from vireid.modeling.pruning import apply_pruning_spec

        apply_pruning_spec(model, ckpt["pruning"])
    load_weights(model, ckpt["model"], f"checkpoint {path}")
    model.to(device).eval()
    return model, cfg, ckpt
