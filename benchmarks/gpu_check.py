"""The GPU check's measurements (run by ``benchmarks/gpu_check.sh``, which also installs vireid and
runs the ``cuda`` tests). Writes ``gpu_check.md`` (the table), ``gpu_check.json``, the training run
folder and the nvidia-smi samples into OUT.

1. **Training**: the AGW two-stream ResNet-50 (configs/agw_sysu.yaml: modality-specific stem,
   non-local blocks, GeM, BNNeck, CE + weighted regularised triplet) at 288x144 on synthetic data,
   bf16 autocast, channels_last and ``torch.compile``, through the Trainer (uint8 cache, prefetch
   thread, batch augmentation on the GPU). One warm-up epoch (compilation), then one timed epoch
   of ``--steps`` batches: images/s, the GPU's busy fraction (``nvidia-smi`` utilisation sampled
   every 100 ms during the timed epoch) and the peak GPU memory. No ImageNet weights are loaded
   (no internet); they do not change the speed.
2. **Extraction**: evaluation features of ``--extract-images`` images (the synthetic cache tiled)
   in the same precision, images/s.
3. **Re-ranking**: k-reciprocal re-ranking (Zhong et al., CVPR 2017) of N = 20,000 images
   (3,803 queries + 16,197 gallery images, 2048-d), on the GPU, seconds.

Targets on one H100 (issue 13): >= 4,000 train images/s with the GPU > 90 % busy, extraction
>= 15,000 images/s, re-ranking at N = 20,000 in < 2 s.

A GPU run also writes its table into docs/benchmarks.md ("GPU check"). ``--dry-run`` runs every step on the CPU at toy sizes (ResNet-10-T, 64x32, a few steps, N = 600,
no compilation, no nvidia-smi), so the kit itself is tested without a GPU.

    python benchmarks/gpu_check.py OUT [--dry-run] [--steps 400] [--batch-ids 8]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import vireid  # noqa: E402,F401  (torchvision guard)
from _report import machine_description, peak_rss_gb, write_section  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TARGETS = {"train_images_per_s": 4000.0, "gpu_busy": 0.90, "extract_images_per_s": 15000.0, "rerank_s": 2.0}


class GpuSampler:
    """``nvidia-smi`` utilisation and memory, sampled every ``interval_ms`` in a child process while active."""

    def __init__(self, log: Path, interval_ms: int = 100) -> None:
        self.log = log
        self.interval_ms = interval_ms
        self.proc: subprocess.Popen | None = None
        self.available = shutil.which("nvidia-smi") is not None

    def __enter__(self) -> "GpuSampler":
        if self.available:
            self.fh = self.log.open("w")
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=timestamp,utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                 f"--loop-ms={self.interval_ms}", "-i", str(torch.cuda.current_device())],
                stdout=self.fh, stderr=subprocess.STDOUT, text=True)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.fh.close()

    def busy_fraction(self) -> float | None:
        """Mean utilisation over the samples (0..1), None without nvidia-smi or samples."""
        if not self.available or not self.log.is_file():
            return None
        values = []
        for line in self.log.read_text().splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) >= 2 and parts[1].isdigit():
                values.append(int(parts[1]))
        return float(np.mean(values)) / 100.0 if values else None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_config(out: Path, dry_run: bool, steps: int, batch_ids: int, device: str):
    from vireid.config import load_config

    size = (64, 32) if dry_run else (288, 144)
    overrides = [
        "name=gpu_check", f"output_dir={out}", "data.format=synthetic", f"data.root={out / 'data'}",
        f"data.height={size[0]}", f"data.width={size[1]}", f"data.cache_dir={out / 'data' / 'cache'}",
        f"data.synth.height={size[0]}", f"data.synth.width={size[1]}",
        f"data.synth.ids={8 if dry_run else 64}", f"data.synth.images_per_camera={2 if dry_run else 4}",
        f"sampler.num_ids={2 if dry_run else batch_ids}", f"sampler.num_per_modality={2 if dry_run else 4}",
        f"sampler.epoch_length={steps}", "train.epochs=2", "train.eval_every=0", "train.select_best=last",
        "train.progress=false", f"train.device={device}", "train.log_every=0",
        # the kit's point: the CUDA path in bf16, channels_last and compiled; a dry run keeps the CPU's choice
        f"train.amp={'auto' if dry_run else 'bf16'}", "train.channels_last=true", f"train.compile={not dry_run}",
        "model.params.pretrained=null",
    ]
    if dry_run:
        overrides.append("model.params.backbone=resnet10t")
    cfg = load_config(REPO / "configs" / "agw_sysu.yaml", overrides)
    cfg.data.options = {}
    return cfg


def check_training(cfg, out: Path, device: torch.device, log) -> tuple[dict, object]:
    from vireid.engine.trainer import Trainer

    trainer = Trainer(cfg, out / "train-run")
    try:
        t0 = time.perf_counter()
        warm = trainer.train_epoch(0)  # compilation and cuDNN autotuning happen here
        log(f"warm-up epoch: {warm['images_per_s']:.0f} img/s ({time.perf_counter() - t0:.1f} s incl. compilation)")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with GpuSampler(out / "nvidia-smi.csv") as sampler:
            stats = trainer.train_epoch(1)
            sync(device)
        trainer.state.epoch = 2
        trainer._save("last.pt")  # the run folder can be evaluated or inspected afterwards
        busy = sampler.busy_fraction()
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else peak_rss_gb()
        result = {
            "train_images_per_s": stats["images_per_s"], "train_steps": trainer.steps_per_epoch,
            "train_seconds": stats["seconds"], "loss": stats["loss"], "gpu_busy": busy, "peak_memory_gb": peak,
            "peak_memory_kind": "GPU, max allocated" if device.type == "cuda" else "CPU process peak RSS",
            "precision": trainer.precision.describe(), "compiled": trainer.forward_model is not trainer.model,
            "batch": cfg.sampler.num_ids * cfg.sampler.num_per_modality * 2,
        }
        log(f"timed epoch: {stats['images_per_s']:.0f} img/s, loss {stats['loss']:.3f}, GPU busy "
            f"{'n/a' if busy is None else f'{100 * busy:.0f} %'}, peak memory {peak:.2f} GB")
        return result, trainer
    finally:
        trainer.close()


def check_extraction(trainer, images: int, device: torch.device, log) -> dict:
    from vireid.data.cache import ImageCache
    from vireid.inference.extract import extract_features

    base = trainer.data.train_loader.cache
    array = np.asarray(base.array)
    tiled = np.ascontiguousarray(np.resize(array, (images, *array.shape[1:])))
    cache = ImageCache(tiled)
    mods = np.arange(images) % 2
    model = trainer.core_model
    batch = 512 if device.type == "cuda" else 32
    extract_features(model, ImageCache(tiled[: 2 * batch]), mods[: 2 * batch], device, batch, precision=trainer.precision)
    sync(device)
    t0 = time.perf_counter()
    feats = extract_features(model, cache, mods, device, batch, precision=trainer.precision)
    sync(device)
    seconds = time.perf_counter() - t0
    assert feats.shape[0] == images and torch.isfinite(feats).all()
    log(f"extraction: {images} images in {seconds:.2f} s = {images / seconds:.0f} img/s")
    return {"extract_images": images, "extract_seconds": seconds, "extract_images_per_s": images / seconds}


def check_rerank(n: int, device: torch.device, log) -> dict:
    from vireid.evaluation import pairwise_distance
    from vireid.evaluation.rerank import k_reciprocal_rerank

    nq = max(2, round(n * 3803 / 20000))
    ng = n - nq
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(max(n // 20, 2), 2048, generator=g)
    feats = centres[torch.randint(0, centres.shape[0], (n,), generator=g)] + 0.7 * torch.randn(n, 2048, generator=g)
    feats = feats.to(device)
    qf, gf = feats[:nq], feats[nq:]
    q_g, q_q, g_g = pairwise_distance(qf, gf), pairwise_distance(qf, qf), pairwise_distance(gf, gf)
    k_reciprocal_rerank(q_g[:50, :200], q_q[:50, :50], g_g[:200, :200])  # warm-up (kernels, allocator)
    sync(device)
    t0 = time.perf_counter()
    out = k_reciprocal_rerank(q_g, q_q, g_g)
    sync(device)
    seconds = time.perf_counter() - t0
    assert out.shape == (nq, ng) and np.isfinite(out).all()
    log(f"re-ranking: N = {n} ({nq} queries + {ng} gallery) in {seconds:.2f} s")
    return {"rerank_n": n, "rerank_s": seconds}


def verdict(value: float | None, target: float, above: bool = True) -> str:
    if value is None:
        return "not measured"
    ok = value >= target if above else value < target
    return "**met**" if ok else "not met"


def table(res: dict, dry_run: bool) -> str:
    busy = res.get("gpu_busy")
    rows = [
        ("train images/s (AGW ResNet-50, 288x144, bf16, channels_last, compiled)" if not dry_run else
         "train images/s (dry run: ResNet-10-T, 64x32, CPU)", f"{res['train_images_per_s']:.0f}", ">= 4,000",
         verdict(res["train_images_per_s"], TARGETS["train_images_per_s"])),
        ("GPU busy during the timed epoch (nvidia-smi)", "n/a" if busy is None else f"{100 * busy:.0f} %", "> 90 %",
         verdict(busy, TARGETS["gpu_busy"])),
        (f"peak memory ({res['peak_memory_kind']})", f"{res['peak_memory_gb']:.2f} GB", "", ""),
        (f"extraction images/s ({res['extract_images']} images)", f"{res['extract_images_per_s']:.0f}", ">= 15,000",
         verdict(res["extract_images_per_s"], TARGETS["extract_images_per_s"])),
        (f"re-ranking, N = {res['rerank_n']:,}", f"{res['rerank_s']:.2f} s", "< 2 s (N = 20,000)",
         verdict(res["rerank_s"], TARGETS["rerank_s"], above=False) if res["rerank_n"] >= 20000 else "not measured"),
    ]
    if dry_run:  # toy sizes on a CPU: no verdicts
        rows = [(a, b, c, "dry run" if c else "") for a, b, c, _ in rows]
    lines = ["| check | measured | target | |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    head = [
        f"Machine: {machine_description()}",
        f"Training: batch {res['batch']}, {res['train_steps']} timed steps, {res['precision']}, "
        f"compiled: {res['compiled']}.",
        "",
    ]
    if dry_run:
        head.insert(0, "DRY RUN on the CPU at toy sizes: the figures test the kit, not a GPU.\n")
    return "\n".join(head + lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="folder for the table, the logs and the training run")
    ap.add_argument("--dry-run", action="store_true", help="CPU, toy sizes: test the kit without a GPU")
    ap.add_argument("--steps", type=int, default=None, help="batches per epoch (default 400; dry run 2)")
    ap.add_argument("--batch-ids", type=int, default=8, help="identities per batch (x 4 visible + 4 infrared)")
    ap.add_argument("--extract-images", type=int, default=None, help="default 20,000 (dry run 64)")
    ap.add_argument("--rerank-n", type=int, default=None, help="default 20,000 (dry run 600)")
    args = ap.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("gpu_check: torch sees no CUDA device (torch.cuda.is_available() is False); "
                         "run on a GPU machine with a CUDA build of torch, or pass --dry-run")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cpu" if args.dry_run else "cuda")
    steps = args.steps or (2 if args.dry_run else 400)
    extract_images = args.extract_images or (64 if args.dry_run else 20000)
    rerank_n = args.rerank_n or (600 if args.dry_run else 20000)
    log_path = out / "gpu_check_driver.log"

    def log(message: str) -> None:
        print(message, flush=True)
        with log_path.open("a") as fh:
            fh.write(message + "\n")

    log(f"gpu_check: {machine_description()}{' (dry run)' if args.dry_run else ''}")
    cfg = train_config(out, args.dry_run, steps, args.batch_ids, device.type)
    res, trainer = check_training(cfg, out, device, log)
    res.update(check_extraction(trainer, extract_images, device, log))
    res.update(check_rerank(rerank_n, device, log))
    res["dry_run"] = bool(args.dry_run)
    (out / "gpu_check.json").write_text(json.dumps(res, indent=2))
    text = table(res, args.dry_run)
    (out / "gpu_check.md").write_text(text)
    print("\n" + text)
    if not args.dry_run:  # a GPU run also refreshes its section of docs/benchmarks.md (copy it back)
        body = "\n".join(line for line in text.splitlines() if not line.startswith("Machine:"))  # write_section adds it
        write_section("gpu_check", "GPU check (CUDA path, one GPU)", body, "bash benchmarks/gpu_check.sh OUT")


if __name__ == "__main__":
    main()
