"""Training a visible <-> infrared translator, translating datasets with it, and measuring it.

``vireid gan train --config gan_synth`` trains :class:`~vireid.modeling.gan.networks.CycleGAN` on the
training images of any vireid dataset (``data`` section as in ReID configs): each step draws an
unpaired batch of ``gan.batch_size`` visible and as many infrared images (CycleGAN's unaligned
dataset: no pairing, no identity). The recipe is CycleGAN's (reference repository
junyanz/pytorch-CycleGAN-and-pix2pix, ``options/train_options.py`` and ``models/cycle_gan_model.py``):
Adam with ``lr = 2e-4`` and ``betas = (0.5, 0.999)`` for generators and discriminators, ``lambda_A =
lambda_B = 10`` (cycle), ``lambda_identity = 0.5``, LSGAN, an image pool of 50, the learning rate kept
for the first epochs and decayed linearly to zero over the last ``gan.decay_epochs`` (``n_epochs_decay``),
random horizontal flips. ``gan.reid_model`` adds the identity-preserving term of
:class:`~vireid.modeling.gan.losses.IdentityPreservingLoss` with weight ``gan.lambda_reid``.

The run folder holds ``config.yaml``, ``last.pt`` (written atomically after every epoch: networks,
optimisers, loss scalers, image pools, random states), ``metrics.jsonl``, ``log.txt`` (everything
printed), ``samples/epoch_NNN.png`` (a translation grid per epoch) and ``train_summary.json``.
``--resume`` continues from ``last.pt`` exactly: every step's batch, flips and pool draws come from
generators seeded by ``(seed, epoch, step)``, so a resumed run computes the same weights as an
uninterrupted one. ``train.amp`` is resolved as for ReID training (:mod:`vireid.engine.precision`).

``vireid gan translate RUN --images SRC --out DST`` writes a dataset in the folder layout of
:mod:`vireid.data.datasets.folder` (``DST/<split>/<modality>/<camera>/<identity>/<image>``): each
translated image keeps its identity number and camera and gets the other modality.
:func:`frechet_distance` measures translations in the embedding space of a vireid model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vireid.config import (
    SHIPPED_CONFIGS,
    DataConfig,
    _build,
    _load_yaml,
    find_yaml,
    parse_override,
    set_dotted,
    shipped_names,
)
from vireid.errors import ConfigError, VireidError

#: shipped GAN recipes (``vireid gan train --config NAME``)
GAN_CONFIGS = SHIPPED_CONFIGS / "gan"
VISIBLE, INFRARED = 0, 1


# ----------------------------------------------------------------------------- configuration


@dataclass
class GanSettings:
    """The translator and its losses (defaults: CycleGAN's, see the module text)."""

    generator: dict = field(default_factory=lambda: {"channels": 64, "blocks": 9, "downsampling": 2, "norm": "instance"})
    discriminator: dict = field(default_factory=lambda: {"channels": 64, "layers": 3, "norm": "instance"})
    lambda_cycle: float = 10.0  # lambda_A = lambda_B
    lambda_identity: float = 0.5  # relative to lambda_cycle, as CycleGAN's lambda_identity
    lambda_reid: float = 1.0  # identity-preserving term; used only with reid_model
    reid_model: str | None = None  # a vireid ReID run folder or checkpoint, frozen
    reid_distance: str = "cosine"  # cosine | l2
    pool_size: int = 50
    batch_size: int = 1
    lr: float = 2e-4
    betas: list = field(default_factory=lambda: [0.5, 0.999])
    decay_epochs: int = 0  # last epochs over which the learning rate falls linearly to 0
    steps_per_epoch: int | None = None  # default: max(visible, infrared training images) // batch_size
    flip: float = 0.5
    samples: int = 4  # images per modality in each epoch's sample grid


@dataclass
class GanTrainSettings:
    epochs: int = 200
    device: str = "auto"
    amp: str = "auto"  # as train.amp of ReID configs (vireid.engine.precision)
    threads: int | None = None
    progress: bool = True
    log_every: int = 10


@dataclass
class GanConfig:
    """A ``vireid gan train`` config: run name, seed, output folder, ``data``, ``gan``, ``train``."""

    name: str = "gan"
    seed: int = 0
    output_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    gan: GanSettings = field(default_factory=GanSettings)
    train: GanTrainSettings = field(default_factory=GanTrainSettings)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_gan_config(cfg: GanConfig) -> GanConfig:
    from vireid.data.build import check_data_options
    from vireid.engine.precision import AMP_CHOICES
    from vireid.modeling.gan.losses import DISTANCES
    from vireid.modeling.gan.networks import CycleGAN

    g, t = cfg.gan, cfg.train
    if not cfg.name or any(c in cfg.name for c in "/\\\0") or cfg.name in (".", ".."):
        raise ConfigError(f"config key 'name' must be a plain folder name, got {cfg.name!r}")
    checks = [
        ("gan.lambda_cycle", g.lambda_cycle, g.lambda_cycle >= 0, "zero or a positive number (CycleGAN: 10)"),
        ("gan.lambda_identity", g.lambda_identity, g.lambda_identity >= 0, "zero or a positive number (CycleGAN: 0.5)"),
        ("gan.lambda_reid", g.lambda_reid, g.lambda_reid >= 0, "zero or a positive number"),
        ("gan.batch_size", g.batch_size, g.batch_size >= 1, "a whole number of at least 1"),
        ("gan.lr", g.lr, g.lr > 0, "a positive number such as 2e-4"),
        ("gan.decay_epochs", g.decay_epochs, 0 <= g.decay_epochs <= t.epochs, f"between 0 and train.epochs ({t.epochs})"),
        ("gan.flip", g.flip, 0 <= g.flip <= 1, "a probability between 0 and 1"),
        ("gan.samples", g.samples, g.samples >= 1, "a whole number of at least 1"),
        ("train.epochs", t.epochs, t.epochs >= 1, "at least 1"),
        ("train.log_every", t.log_every, t.log_every >= 0, "zero (off) or more"),
    ]
    if g.steps_per_epoch is not None:
        checks.append(("gan.steps_per_epoch", g.steps_per_epoch, g.steps_per_epoch >= 1, "a whole number of at least 1 or null"))
    for key, value, ok, what in checks:
        if not ok or (isinstance(value, float) and not math.isfinite(value)):
            raise ConfigError(f"config key {key!r} must be {what}, got {value!r}")
    if len(g.betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in g.betas):
        raise ConfigError(f"config key 'gan.betas' must be two numbers from 0 to below 1 such as [0.5, 0.999], got {g.betas!r}")
    if g.reid_distance not in DISTANCES:
        raise ConfigError(f"config key 'gan.reid_distance' must be one of {', '.join(DISTANCES)}, got {g.reid_distance!r}")
    if t.amp not in AMP_CHOICES:
        raise ConfigError(f"config key 'train.amp' must be one of {', '.join(AMP_CHOICES)}, got {t.amp!r}")
    from vireid.modeling.gan.pool import ImagePool

    ImagePool(g.pool_size)
    step = 2 ** int(g.generator.get("downsampling", 2)) if isinstance(g.generator.get("downsampling", 2), int) else 1
    if cfg.data.height % step or cfg.data.width % step:
        raise ConfigError(f"data.height and data.width ({cfg.data.height}x{cfg.data.width}) must be multiples of {step}: "
                          f"the generator halves the image {int(math.log2(step))} times (gan.generator.downsampling)")
    with torch.device("meta"):
        CycleGAN(g.generator, g.discriminator)  # checks the network settings without allocating weights
    check_data_options(cfg.data)
    return cfg


def gan_config_from_dict(tree: dict) -> GanConfig:
    """Validate a plain dict (a YAML file's, or a checkpoint's) into a :class:`GanConfig`."""
    return _check_gan_config(_build(GanConfig, tree, ""))


def resolve_gan_config(name: str) -> Path:
    """A GAN config file, or the name of a shipped one (``gan_synth`` -> configs/gan/gan_synth.yaml)."""
    found = find_yaml(name, GAN_CONFIGS)
    if found is None:
        raise VireidError(f"GAN config {name!r} is neither a file nor a shipped GAN config; shipped: "
                          f"{shipped_names(GAN_CONFIGS)}")
    return found


def load_gan_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> GanConfig:
    """Load a GAN config (a file or shipped name; defaults when None) and apply ``key=value`` overrides."""
    tree: dict = _load_yaml(resolve_gan_config(str(path))) if path is not None else {}
    for text in overrides:
        keys, value = parse_override(text)
        set_dotted(tree, keys, value)
    return gan_config_from_dict(tree)


# ----------------------------------------------------------------------------- data


def to_gan_range(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B,3,H,W]`` -> float in ``[-1, 1]`` (CycleGAN's ``Normalize((0.5,)*3, (0.5,)*3)``)."""
    return pixels.float() / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in ``[-1, 1]`` -> uint8 (rounded, clipped)."""
    return ((images.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)


class UnpairedImages:
    """The visible and infrared training images of a dataset in a decoded-image cache, drawn unpaired."""

    def __init__(self, records: list, data_cfg: DataConfig, progress: bool = True) -> None:
        from vireid.data.build import build_image_cache

        self.records = list(records)
        self.cache = build_image_cache(self.records, data_cfg, progress=progress)
        codes = torch.tensor([VISIBLE if r.modality == "visible" else INFRARED for r in self.records])
        self.visible = torch.nonzero(codes == VISIBLE).flatten()
        self.infrared = torch.nonzero(codes == INFRARED).flatten()
        if len(self.visible) == 0 or len(self.infrared) == 0:
            missing = "visible" if len(self.visible) == 0 else "infrared"
            raise VireidError(f"the training split of {data_cfg.root} has no {missing} images; a visible <-> infrared "
                              "translator needs both, so check data.format and data.root")

    def batch(self, batch_size: int, flip: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(visible, infrared)`` float batches in ``[-1, 1]``, each image drawn uniformly, flipped with ``flip``."""
        out = []
        for pool in (self.visible, self.infrared):
            pick = pool[torch.randint(0, len(pool), (batch_size,), generator=generator)]
            images = to_gan_range(self.cache.gather(pick))
            mirror = torch.rand(batch_size, generator=generator) < flip
            images[mirror] = images[mirror].flip(-1)
            out.append(images)
        return out[0], out[1]

    def fixed(self, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The same ``count`` visible and infrared images every epoch (the sample grids)."""
        generator = torch.Generator().manual_seed(int(seed) + 7919)
        out = []
        for pool in (self.visible, self.infrared):
            pick = pool[torch.randperm(len(pool), generator=generator)[:count]]
            out.append(to_gan_range(self.cache.gather(pick)))
        return out[0], out[1]


# ----------------------------------------------------------------------------- pictures


def save_grid(rows: list[torch.Tensor], path: Path) -> Path:
    """Write images in ``[-1, 1]`` as a PNG grid: one row per tensor ``[N,3,H,W]`` (all the same N, H, W)."""
    from PIL import Image

    n = max(r.shape[0] for r in rows)
    h, w = rows[0].shape[2], rows[0].shape[3]
    gap = 2
    canvas = np.full((len(rows) * (h + gap) + gap, n * (w + gap) + gap, 3), 255, dtype=np.uint8)
    for i, row in enumerate(rows):
        pixels = to_uint8(row).permute(0, 2, 3, 1).numpy()
        for j, image in enumerate(pixels):
            y, x = gap + i * (h + gap), gap + j * (w + gap)
            canvas[y:y + h, x:x + w] = image
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(canvas).save(tmp, format="PNG")
    tmp.replace(path)
    return path


# ----------------------------------------------------------------------------- training


def _lr_factor(epoch: int, epochs: int, decay_epochs: int) -> float:
    """CycleGAN's ``linear`` policy: 1 for ``epochs - decay_epochs`` epochs, then ``1 - k / (decay_epochs + 1)``
    in the k-th decay epoch (``networks.get_scheduler``'s ``lambda_rule``, with ``epoch_count = 1``)."""
    constant = epochs - decay_epochs
    return 1.0 - max(0, epoch + 1 - constant) / float(decay_epochs + 1)


def load_reid_model(path: str | Path, device: torch.device):
    """A trained vireid ReID model (run folder or checkpoint), evaluation mode, and its input size."""
    from vireid.engine.trainer import load_model_from_checkpoint

    if not Path(path).expanduser().exists():
        raise VireidError(f"ReID model {path} does not exist; pass a vireid train run folder or its best.pt")
    model, cfg, _ = load_model_from_checkpoint(Path(path).expanduser(), device)
    return model, (cfg.data.height, cfg.data.width)


class _ResizedReID(torch.nn.Module):
    """A frozen ReID model fed images resized to the size it was trained at."""

    def __init__(self, model: torch.nn.Module, size: tuple[int, int]) -> None:
        super().__init__()
        self.inner, self.size = model, tuple(size)

    def forward(self, images: torch.Tensor, modalities: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[-2:]) != self.size:
            images = torch.nn.functional.interpolate(images, size=self.size, mode="bilinear", align_corners=False)
        return self.inner(images, modalities)


class GanTrainer:
    """Trains a :class:`~vireid.modeling.gan.networks.CycleGAN` from a :class:`GanConfig` (module text)."""

    def __init__(self, cfg: GanConfig, run_dir: str | Path, resume: bool = False) -> None:
        from vireid.data.build import prepare_dataset
        from vireid.engine.precision import announce_precision, resolve_precision
        from vireid.engine.run_folder import RunLock
        from vireid.engine.run_logging import MetricsLogger
        from vireid.engine.trainer import resolve_device, seed_everything
        from vireid.modeling.gan.losses import IdentityPreservingLoss
        from vireid.modeling.gan.networks import CycleGAN
        from vireid.modeling.gan.pool import ImagePool

        self.cfg = cfg
        self.run_dir = Path(run_dir)
        if not resume:
            _check_fresh(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._lock = RunLock.acquire(self.run_dir)
        try:
            self.device = resolve_device(cfg.train.device)
            if cfg.train.threads:
                torch.set_num_threads(cfg.train.threads)
            self.precision = resolve_precision(cfg.train.amp, self.device)
            announce_precision(self.precision)
            seed_everything(cfg.seed)
            dataset = prepare_dataset(cfg.data, progress=cfg.train.progress)
            self.data = UnpairedImages(list(dataset.train), cfg.data, progress=cfg.train.progress)
            self.model = CycleGAN(cfg.gan.generator, cfg.gan.discriminator).to(self.device)
            g = cfg.gan
            self.opt_g = torch.optim.Adam([p for m in self.model.generators() for p in m.parameters()], lr=g.lr,
                                          betas=tuple(g.betas))
            self.opt_d = torch.optim.Adam([p for m in self.model.discriminators() for p in m.parameters()], lr=g.lr,
                                          betas=tuple(g.betas))
            scaling = self.precision.grad_scaler
            self.scaler_g = torch.amp.GradScaler(self.device.type, enabled=scaling)
            self.scaler_d = torch.amp.GradScaler(self.device.type, enabled=scaling)
            self.pools = {"ir": ImagePool(g.pool_size), "vis": ImagePool(g.pool_size)}
            self.reid = None
            if g.reid_model and g.lambda_reid > 0:
                model, size = load_reid_model(g.reid_model, self.device)
                self.reid = IdentityPreservingLoss(_ResizedReID(model, size), g.reid_distance)
            self.steps_per_epoch = g.steps_per_epoch or max(1, max(len(self.data.visible), len(self.data.infrared)) // g.batch_size)
            self.epoch, self.step = 0, 0
            self.logger = MetricsLogger(self.run_dir)
            (self.run_dir / "config.yaml").write_text(_yaml(cfg.to_dict()))
            if resume:
                self._resume()
        except BaseException:
            self.close()
            raise

    # -------------------------------------------------------------- checkpoints
    def checkpoint(self) -> dict:
        from vireid.engine.checkpoint import rng_state

        return {
            "format": "vireid-gan-1",
            "config": self.cfg.to_dict(),
            "gan_settings": {"generator": dict(self.model.vis2ir.settings), "discriminator": dict(self.model.d_ir.settings)},
            "image_size": [self.cfg.data.height, self.cfg.data.width],
            "networks": self.model.state_dict(),
            "optim_g": self.opt_g.state_dict(),
            "optim_d": self.opt_d.state_dict(),
            "scaler_g": self.scaler_g.state_dict(),
            "scaler_d": self.scaler_d.state_dict(),
            "pools": {k: p.state_dict() for k, p in self.pools.items()},
            "rng": rng_state(),
            "epoch": self.epoch,
            "step": self.step,
            "train_images": {"visible": len(self.data.visible), "infrared": len(self.data.infrared)},
        }

    def _resume(self) -> None:
        from vireid.engine.checkpoint import set_rng_state
        from vireid.modeling.gan.io import load_gan_checkpoint

        ckpt = load_gan_checkpoint(self.run_dir, map_location=self.device)
        try:
            self.model.load_state_dict(ckpt["networks"])
        except RuntimeError:
            raise VireidError(f"{self.run_dir / 'last.pt'} does not fit the networks its config builds; it was edited or "
                              "written by another version, so start a new run") from None
        self.opt_g.load_state_dict(ckpt["optim_g"])
        self.opt_d.load_state_dict(ckpt["optim_d"])
        self.scaler_g.load_state_dict(ckpt["scaler_g"])
        self.scaler_d.load_state_dict(ckpt["scaler_d"])
        for key, pool in self.pools.items():
            pool.load_state_dict(ckpt["pools"][key], self.device)
        set_rng_state(ckpt["rng"])
        self.epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
        _trim_metrics(self.run_dir, self.epoch)
        print(f"resumed {self.run_dir} at epoch {self.epoch} (step {self.step})", flush=True)

    # -------------------------------------------------------------- one step
    def train_step(self, real_v: torch.Tensor, real_i: torch.Tensor, pool_generator: torch.Generator) -> dict[str, float]:
        """One CycleGAN update: generators first (discriminators frozen), then both discriminators."""
        from vireid.modeling.gan.losses import discriminator_loss, l1_loss, lsgan_loss

        g, m = self.cfg.gan, self.model
        n = real_v.shape[0]
        code_v = torch.full((n,), VISIBLE, dtype=torch.long, device=self.device)
        code_i = torch.full((n,), INFRARED, dtype=torch.long, device=self.device)
        for d in m.discriminators():
            d.requires_grad_(False)
        with self.precision.autocast():
            fake_i = m.vis2ir(real_v)
            rec_v = m.ir2vis(fake_i)
            fake_v = m.ir2vis(real_i)
            rec_i = m.vis2ir(fake_v)
            terms = {
                "g_adv": lsgan_loss(m.d_ir(fake_i), True) + lsgan_loss(m.d_vis(fake_v), True),
                "cycle": g.lambda_cycle * (l1_loss(rec_v, real_v) + l1_loss(rec_i, real_i)),
            }
            if g.lambda_identity > 0:
                terms["identity"] = g.lambda_cycle * g.lambda_identity * (
                    l1_loss(m.vis2ir(real_i), real_i) + l1_loss(m.ir2vis(real_v), real_v))
            if self.reid is not None:
                terms["reid"] = g.lambda_reid * (self.reid(real_v, code_v, fake_i.float(), code_i)
                                                 + self.reid(real_i, code_i, fake_v.float(), code_v))
        loss_g = sum(terms.values())
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler_g.scale(loss_g).backward()
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        for d in m.discriminators():
            d.requires_grad_(True)
        shown_i = self.pools["ir"].query(fake_i.float(), pool_generator)
        shown_v = self.pools["vis"].query(fake_v.float(), pool_generator)
        with self.precision.autocast():
            d_ir = discriminator_loss(m.d_ir(real_i), m.d_ir(shown_i))
            d_vis = discriminator_loss(m.d_vis(real_v), m.d_vis(shown_v))
        loss_d = d_ir + d_vis
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler_d.scale(loss_d).backward()
        self.scaler_d.step(self.opt_d)
        self.scaler_d.update()
        out = {k: float(v.detach()) for k, v in terms.items()}
        out.update(loss_g=float(loss_g.detach()), d_ir=float(d_ir.detach()), d_vis=float(d_vis.detach()))
        return out

    # -------------------------------------------------------------- epochs
    def train_epoch(self, epoch: int) -> dict[str, float]:
        from vireid.data.loader import batch_seed

        cfg, g = self.cfg, self.cfg.gan
        factor = _lr_factor(epoch, cfg.train.epochs, g.decay_epochs)
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = g.lr * factor
        self.model.train()
        bar = None
        if cfg.train.progress:
            from tqdm import tqdm

            bar = tqdm(total=self.steps_per_epoch, desc=f"gan epoch {epoch + 1}/{cfg.train.epochs}", leave=False,
                       dynamic_ncols=True, disable=None)
        sums: dict[str, float] = {}
        t0 = time.perf_counter()
        for position in range(self.steps_per_epoch):
            data_gen = torch.Generator().manual_seed(batch_seed(cfg.seed, epoch, 2 * position))
            pool_gen = torch.Generator().manual_seed(batch_seed(cfg.seed, epoch, 2 * position + 1))
            real_v, real_i = self.data.batch(g.batch_size, g.flip, data_gen)
            stats = self.train_step(real_v.to(self.device), real_i.to(self.device), pool_gen)
            bad = [k for k, v in stats.items() if not math.isfinite(v)]
            if bad:
                raise VireidError(f"the GAN loss became {stats[bad[0]]} ({bad[0]}) at epoch {epoch + 1}, step "
                                  f"{self.step + 1}; {self.run_dir / 'last.pt'} keeps the last good epoch; lower gan.lr "
                                  "or use train.amp=none")
            self.step += 1
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            if bar is not None:
                bar.set_postfix(g=f"{stats['loss_g']:.3f}", d=f"{stats['d_ir'] + stats['d_vis']:.3f}")
                bar.update(1)
            if cfg.train.log_every and self.step % cfg.train.log_every == 0:
                self.logger.log("step", self.step, epoch, lr=g.lr * factor, **stats)
        if bar is not None:
            bar.close()
        means = {k: v / self.steps_per_epoch for k, v in sums.items()}
        means["seconds"] = time.perf_counter() - t0
        means["lr"] = g.lr * factor
        return means

    def write_samples(self, epoch: int) -> Path:
        """``samples/epoch_NNN.png``: rows real visible, -> infrared, reconstruction; real infrared, -> visible,
        reconstruction (the same images every epoch)."""
        vis, ir = self.data.fixed(self.cfg.gan.samples, self.cfg.seed)
        vis, ir = vis.to(self.device), ir.to(self.device)
        m = self.model
        m.eval()
        with torch.no_grad(), self.precision.autocast():
            fake_i = m.vis2ir(vis)
            rec_v = m.ir2vis(fake_i)
            fake_v = m.ir2vis(ir)
            rec_i = m.vis2ir(fake_v)
        m.train()
        rows = [t.float().cpu() for t in (vis, fake_i, rec_v, ir, fake_v, rec_i)]
        return save_grid(rows, self.run_dir / "samples" / f"epoch_{epoch:03d}.png")

    def fit(self) -> dict:
        from vireid.engine.checkpoint import atomic_torch_save, atomic_write_text

        cfg = self.cfg
        history = []
        try:
            for epoch in range(self.epoch, cfg.train.epochs):
                stats = self.train_epoch(epoch)
                self.epoch = epoch + 1
                grid = self.write_samples(self.epoch)
                self.logger.log("epoch", self.step, self.epoch, **stats)
                atomic_torch_save(self.checkpoint(), self.run_dir / "last.pt")
                history.append({"epoch": self.epoch, **stats})
                parts = "  ".join(f"{k} {stats[k]:.3f}" for k in ("loss_g", "g_adv", "cycle", "identity", "reid", "d_ir", "d_vis")
                                  if k in stats)
                print(f"gan epoch {self.epoch}/{cfg.train.epochs}  {parts}  lr {stats['lr']:.2e}  "
                      f"{stats['seconds']:.1f} s  samples {grid.name}", flush=True)
        finally:
            self.logger.close()
        summary = {"run_dir": str(self.run_dir), "epochs": self.epoch, "steps": self.step, "history": history}
        atomic_write_text(self.run_dir / "train_summary.json", json.dumps(summary, indent=2))
        return summary

    def close(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()
            self._lock = None


def _yaml(tree: dict) -> str:
    import yaml

    return yaml.safe_dump(tree, sort_keys=False)


GAN_RUN_FILES = {"config.yaml", "metrics.jsonl", "log.txt", "tensorboard", "samples", ".vireid-lock"}


def _check_fresh(folder: Path) -> None:
    """A new GAN run goes into an absent or empty folder, or one an earlier attempt left before its first epoch."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise VireidError(f"run folder {folder} is a file; choose another folder with --run-dir or name=NEW")
    if (folder / "last.pt").exists():
        raise VireidError(f"run folder {folder} already holds a GAN run; continue it with vireid gan train --resume "
                          f"{folder}, or choose another folder with --run-dir or name=NEW")
    foreign = sorted(e.name for e in folder.iterdir() if e.name not in GAN_RUN_FILES and not e.name.startswith("."))
    if foreign:
        raise VireidError(f"run folder {folder} already exists and holds {', '.join(foreign[:3])}, which a GAN run does "
                          "not write; choose another folder with --run-dir or name=NEW, or empty it")
    (folder / "metrics.jsonl").unlink(missing_ok=True)


def _trim_metrics(folder: Path, epoch: int) -> None:
    """Drop the records of the epoch a resumed run repeats (written after its last checkpoint)."""
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        done = int(record.get("epoch", 0))
        if (record.get("kind") == "epoch" and done <= epoch) or (record.get("kind") != "epoch" and done < epoch):
            kept.append(line)
    path.write_text("".join(f"{line}\n" for line in kept))


def train_gan(cfg: GanConfig, run_dir: str | Path, resume: bool = False) -> dict:
    """Train (or resume) a translator into ``run_dir``; everything printed also goes to ``run_dir/log.txt``."""
    from vireid.engine.run_logging import RunLog

    run_dir = Path(run_dir)
    if not resume:
        cfg.data.root = str(Path(cfg.data.root).expanduser().absolute())
        if cfg.gan.reid_model:
            cfg.gan.reid_model = str(Path(cfg.gan.reid_model).expanduser().absolute())
    elif not (run_dir / "last.pt").is_file():
        raise VireidError(f"cannot resume: {run_dir / 'last.pt'} does not exist; start the run again without --resume")
    if not resume:
        _check_fresh(run_dir)
    with RunLog(run_dir):
        trainer = GanTrainer(cfg, run_dir, resume=resume)
        try:
            try:
                return trainer.fit()
            except KeyboardInterrupt:
                print(f"\ninterrupted; continue with: vireid gan train --resume {run_dir}", flush=True)
                raise
        finally:
            trainer.close()


def config_of_run(run: str | Path) -> GanConfig:
    """The stored config of a GAN run (for ``--resume``)."""
    from vireid.modeling.gan.io import load_gan_checkpoint

    return gan_config_from_dict(load_gan_checkpoint(run)["config"])


# ----------------------------------------------------------------------------- translation


class Translator:
    """The two frozen generators of a GAN run, translating uint8 images in batches."""

    def __init__(self, run: str | Path, device: str | torch.device = "cpu") -> None:
        from vireid.modeling.gan.io import load_generator

        self.device = torch.device(device)
        self.vis2ir, ckpt = load_generator(run, "visible->infrared", self.device)
        self.ir2vis, _ = load_generator(run, "infrared->visible", self.device)
        self.size = tuple(int(v) for v in ckpt["image_size"])
        self.run = Path(run)

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor, modalities: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B,3,H,W]`` images of the given modality codes -> uint8 translations to the other modality."""
        images = to_gan_range(pixels.to(self.device))
        out = torch.empty_like(images)
        codes = torch.as_tensor(modalities).to(self.device)
        for code, net in ((VISIBLE, self.vis2ir), (INFRARED, self.ir2vis)):
            rows = codes == code
            if bool(rows.any()):
                out[rows] = net(images[rows])
        return to_uint8(out)


SPLITS = ("train", "val", "query", "gallery")


def translate_dataset(run: str | Path, images: str | Path, out: str | Path, *, fmt: str | None = None,
                      splits: tuple[str, ...] = ("train",), direction: str = "both", batch_size: int = 32,
                      device: str = "auto", progress: bool = True) -> dict:
    """Translate the images of ``splits`` of the dataset at ``images`` into ``out`` (module text).

    ``direction``: ``both`` (visible images become infrared and infrared images visible), ``visible->infrared``
    or ``infrared->visible`` (the other modality's images are left out). Images are translated at the GAN's
    training size and written as PNG. ``out/translated.csv`` lists ``path,source,identity,camera,modality,split``.
    Returns counts per split and modality.
    """
    import csv

    from PIL import Image

    from vireid.data.cache import ImageCache
    from vireid.engine.trainer import resolve_device
    from vireid.modeling.gan.io import DIRECTIONS
    from vireid.retrieval.extract import PLAIN, detect_format

    if direction != "both" and direction not in DIRECTIONS:
        raise VireidError(f"--direction {direction!r} is unknown; use both, {' or '.join(DIRECTIONS)}")
    for split in splits:
        if split not in SPLITS:
            raise VireidError(f"--split {split!r} is unknown; use one of {', '.join(SPLITS)}")
    source = Path(images).expanduser()
    if not source.exists():
        raise VireidError(f"--images {source} does not exist; pass a dataset folder or CSV manifest")
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise VireidError(f"--out {out} already exists and is not an empty folder; choose a new folder")
    used = fmt or detect_format(source)
    if used == PLAIN:
        raise VireidError(f"{source} is a plain folder of images without identities and cameras; translate a dataset "
                          "(folder tree, CSV manifest or a dataset layout) so the translations keep them")
    from vireid.data.datasets import build_dataset

    options = {"allow_lone_split": True} if used in ("folder", "csv") else {}
    dataset = build_dataset(used, source, **options)
    translator = Translator(run, resolve_device(device))
    height, width = translator.size
    wanted = {"visible", "infrared"} if direction == "both" else {direction.split("->")[0]}
    counts: dict[str, dict[str, int]] = {}
    rows: list[list[Any]] = []
    out.mkdir(parents=True, exist_ok=True)
    for split in splits:
        records = [r for r in (getattr(dataset, split, None) or []) if r.modality in wanted]
        if not records:
            continue
        cache = ImageCache.build([r.path for r in records], height, width, workers=1, progress=False)
        used_names: set[Path] = set()
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(records), desc=f"translating {split}", leave=False, disable=None)
        for start in range(0, len(records), batch_size):
            chunk = records[start:start + batch_size]
            codes = torch.tensor([VISIBLE if r.modality == "visible" else INFRARED for r in chunk])
            pixels = cache.gather(slice(start, start + len(chunk)))
            translated = translator(pixels, codes).permute(0, 2, 3, 1).cpu().numpy()
            for record, image in zip(chunk, translated):
                modality = "infrared" if record.modality == "visible" else "visible"
                folder = out / split / modality / f"cam{record.camid}" / f"id{record.orig_pid}"
                target = folder / f"{Path(record.path).stem}.png"
                k = 1
                while target in used_names:
                    target = folder / f"{Path(record.path).stem}_{k}.png"
                    k += 1
                used_names.add(target)
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(target, format="PNG")
                rows.append([str(target.relative_to(out)), record.path, record.orig_pid, record.camid, modality, split])
                counts.setdefault(split, {}).setdefault(modality, 0)
                counts[split][modality] += 1
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
    if not rows:
        raise VireidError(f"{source} has no {' or '.join(sorted(wanted))} images in the split(s) {', '.join(splits)}; "
                          "choose other splits with --split")
    with open(out / "translated.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "source", "identity", "camera", "modality", "split"])
        writer.writerows(rows)
    return {"out": str(out), "format": used, "images": counts}


# ----------------------------------------------------------------------------- measures


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the rows of ``a`` and ``b`` (Dowson & Landau 1982; FID,
    Heusel et al. NeurIPS 2017, eq. 6): ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``.

    ``Tr((S_a S_b)^(1/2))`` is computed as the sum of the square roots of the eigenvalues of the symmetric
    matrix ``S_a^(1/2) S_b S_a^(1/2)`` (same eigenvalues as ``S_a S_b``), clipped at 0 against round-off.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise VireidError(f"the Fréchet distance needs two sets of at least 2 embeddings of one size, got {a.shape} "
                          f"and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    vals, vecs = np.linalg.eigh(s_a)
    root_a = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    middle = root_a @ s_b @ root_a
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2.0 * trace_root)


@torch.no_grad()
def _embed(model: torch.nn.Module, images: torch.Tensor, codes: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    from vireid.modeling.gan.losses import to_reid_input

    outs = []
    for start in range(0, len(images), batch_size):
        x = to_reid_input(images[start:start + batch_size])
        outs.append(torch.nn.functional.normalize(model(x, codes[start:start + batch_size]).float(), dim=1).cpu())
    return torch.cat(outs).numpy()


def measure_translation(run: str | Path, reid: str | Path, *, split: str = "test", max_images: int = 2000,
                        device: str = "auto", data_root: str | None = None) -> dict:
    """Fréchet distances in the embedding space of the ReID model ``reid`` on ``split`` of the GAN's dataset:

    * ``fd_translated_ir``: real infrared images vs visible images translated to infrared;
    * ``fd_visible_ir``: real infrared vs the untranslated visible images (each embedded with its own modality
      code), the gap the translation should close;
    * ``fd_translated_vis`` / ``fd_infrared_vis``: the same for the other direction.

    Embeddings are L2-normalised; at most ``max_images`` images per modality (the first, in dataset order).
    """
    from vireid.data.build import build_image_cache, prepare_dataset
    from vireid.engine.trainer import resolve_device

    dev = resolve_device(device)
    cfg = config_of_run(run)
    if data_root is not None:
        cfg.data.root = data_root
    dataset = prepare_dataset(cfg.data, progress=False, generate=False)
    records = list(getattr(dataset, split, None) or [])
    if not records and split == "test":
        records = list(dataset.query or []) + list(dataset.gallery or [])
    if not records:
        raise VireidError(f"the GAN's dataset {cfg.data.root} has no {split} images; choose another --split")
    translator = Translator(run, dev)
    model, size = load_reid_model(reid, dev)
    model = _ResizedReID(model, size).eval()
    by = {m: [r for r in records if r.modality == m][:max_images] for m in ("visible", "infrared")}
    if min(len(v) for v in by.values()) < 2:
        raise VireidError(f"split {split} of {cfg.data.root} needs at least 2 images of each modality to measure")
    real, fake = {}, {}
    for modality, code in (("visible", VISIBLE), ("infrared", INFRARED)):
        cache = build_image_cache(by[modality], cfg.data, progress=False)
        pixels = cache.gather(slice(0, len(by[modality])))
        codes = torch.full((len(pixels),), code, dtype=torch.long)
        real[modality] = _embed(model, to_gan_range(pixels).to(dev), codes.to(dev))
        translated = translator(pixels, codes)
        fake[modality] = _embed(model, to_gan_range(translated).to(dev), (1 - codes).to(dev))
    return {
        "split": split, "images": {m: len(v) for m, v in by.items()}, "reid_model": str(reid), "gan_run": str(run),
        "fd_translated_ir": frechet_distance(real["infrared"], fake["visible"]),
        "fd_visible_ir": frechet_distance(real["infrared"], real["visible"]),
        "fd_translated_vis": frechet_distance(real["visible"], fake["infrared"]),
        "fd_infrared_vis": frechet_distance(real["visible"], real["infrared"]),
    }


__all__ = ["GAN_CONFIGS", "GanConfig", "GanSettings", "GanTrainSettings", "GanTrainer", "Translator", "config_of_run",
           "frechet_distance", "gan_config_from_dict", "load_gan_config", "measure_translation", "resolve_gan_config",
           "save_grid", "train_gan", "translate_dataset"]
