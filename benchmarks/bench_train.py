"""Training throughput: vireid's pipeline vs a plain PyTorch loop, same model, same batch.

Both train the two-stream ResNet-50 baseline (modality-specific stem, last stride 1, GeM, BNNeck;
no non-local, as in the DFW+SLN paper's baseline) at 288x144 with batch 32 (4 identities x 4 visible + 4
infrared) on synthetic SYSU-MM01-layout data, with label-smoothed cross-entropy + batch-hard triplet.

* **vireid**: decoded-image uint8 cache -> cross-modality sampler -> batch-level tensor
  augmentation (pad+crop, flip, random erasing) -> model -> losses -> SGD step (the Trainer's path).
* **plain**: the straightforward loop most research code uses: a ``Dataset`` that opens each JPEG
  with PIL and applies torchvision per-image transforms, a ``DataLoader`` with 2 workers, the same
  model, losses and optimizer.

Images/s are measured over the timed steps after warm-up steps, in the same process run. On a
CUDA machine the same runs use bf16 autocast and channels_last (``--device cuda``).

    python benchmarks/bench_train.py            # CPU, writes docs/benchmarks.md
    python benchmarks/bench_train.py --quick    # tiny smoke run, prints only
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import vireid  # noqa: E402,F401  (torchvision guard)
from _report import write_section  # noqa: E402


def build_model(num_classes: int, height: int, width: int, arch: str):
    from vireid.modeling.methods.baseline import BaselineReID

    return BaselineReID(num_classes=num_classes, backbone=arch, specific_stages=1, last_stride=1,
                        non_local=None, img_size=(height, width))


def losses_fn(num_classes: int):
    from vireid.modeling.losses.identity import CrossEntropyLabelSmooth
    from vireid.modeling.losses.triplet import BatchHardTripletLoss

    ce, tri = CrossEntropyLabelSmooth(num_classes, epsilon=0.1), BatchHardTripletLoss(margin=0.3)

    def compute(out, labels, mods):
        return ce(out["logits"], labels) + tri(out["features"], labels, mods)

    return compute


def training_step(num_classes, height, width, arch, device, amp, channels_last):
    """The same freshly initialised model, optimizer and step function for both pipelines."""
    torch.manual_seed(0)
    model = build_model(num_classes, height, width, arch).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    compute = losses_fn(num_classes)

    def step(images, labels, mods):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(images, mods)
            loss = compute(out, labels, mods)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_vireid(records, height, width, num_classes, arch, device, steps, warmup, P, K, amp, channels_last):
    from vireid.data.cache import ImageCache
    from vireid.data.loader import TrainLoader
    from vireid.data.records import MODALITY_CODE
    from vireid.data.sampler import CrossModalityIdentitySampler
    from vireid.data.transforms import build_train_transform

    t0 = time.perf_counter()
    cache = ImageCache.build([r.path for r in records], height, width, progress=False)
    cache_s = time.perf_counter() - t0
    labels = np.asarray([r.pid for r in records])
    mods = np.asarray([MODALITY_CODE[r.modality] for r in records])
    sampler = CrossModalityIdentitySampler(labels, mods, num_ids=P, num_per_modality=K, seed=0,
                                           epoch_length=steps + warmup)
    transform = build_train_transform(height, width, pad=10, flip=0.5, random_erasing=0.5)
    loader = TrainLoader(cache, labels, mods, sampler, transform, device=device, seed=0)
    step = training_step(num_classes, height, width, arch, device, amp, channels_last)
    n = 0
    t = None
    for i, batch in enumerate(loader):
        if i == warmup:
            sync(device)
            t = time.perf_counter()
        images = batch.images.contiguous(memory_format=torch.channels_last) if channels_last else batch.images
        step(images, batch.labels, batch.modalities)
        if i >= warmup:
            n += images.shape[0]
    sync(device)
    return n / (time.perf_counter() - t), cache_s


class PlainDataset(torch.utils.data.Dataset):
    """Per-image PIL decode + torchvision transforms, as in the public AGW/CAJ code."""

    def __init__(self, records, height, width):
        import torchvision.transforms as T

        self.records = records
        self.transform = T.Compose([
            T.Resize((height, width)),
            T.Pad(10),
            T.RandomCrop((height, width)),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
            T.RandomErasing(p=0.5),
        ])

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        from PIL import Image

        r = self.records[i]
        img = Image.open(r.path).convert("RGB")
        return self.transform(img), r.pid, 0 if r.modality == "visible" else 1


def plain_batches(records, P, K, steps, seed=0):
    """Index lists of P ids x (K visible + K infrared), drawn with numpy as in the AGW sampler."""
    rng = np.random.default_rng(seed)
    by = {}
    for i, r in enumerate(records):
        by.setdefault((r.pid, r.modality), []).append(i)
    ids = sorted({r.pid for r in records})
    for _ in range(steps):
        batch = []
        for pid in rng.choice(ids, P, replace=False):
            for m in ("visible", "infrared"):
                batch += list(rng.choice(by[(pid, m)], K, replace=len(by[(pid, m)]) < K))
        yield batch


def run_plain(records, height, width, num_classes, arch, device, steps, warmup, P, K, amp, channels_last, workers):
    ds = PlainDataset(records, height, width)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=list(plain_batches(records, P, K, steps + warmup)),
                                         num_workers=workers, pin_memory=device.type == "cuda")
    step = training_step(num_classes, height, width, arch, device, amp, channels_last)
    n = 0
    t = None
    for i, (images, labels, mods) in enumerate(loader):
        if i == warmup:
            sync(device)
            t = time.perf_counter()
        images, labels, mods = images.to(device), labels.to(device), mods.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        step(images, labels, mods)
        if i >= warmup:
            n += images.shape[0]
    sync(device)
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, print only")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the plain loop")
    ap.add_argument("--data", default=None, help="synthetic dataset folder (made if absent)")
    args = ap.parse_args()
    device = torch.device(args.device)
    height, width, P, K = (288, 144, 4, 4)
    arch, steps, warmup = args.arch, args.steps, args.warmup
    if args.quick:
        height, width, P, K, arch, steps, warmup = 64, 32, 2, 2, "resnet10t", 3, 1
    amp = channels_last = device.type == "cuda"

    from vireid.data.datasets import build_dataset
    from vireid.data.synth import generate_dataset

    root = Path(args.data) if args.data else Path(tempfile.gettempdir()) / f"vireid-bench-train-{height}x{width}"
    generate_dataset(root, ids=24, format="sysu-mm01", images_per_camera=4, height=height, width=width, seed=0,
                     progress=False)
    ds = build_dataset("sysu-mm01", root, train_includes_val=True)
    records = ds.train
    num_classes = ds.num_train_ids
    common = dict(height=height, width=width, num_classes=num_classes, arch=arch, device=device, steps=steps,
                  warmup=warmup, P=P, K=K, amp=amp, channels_last=channels_last)
    load = os.getloadavg()[0]
    v_ips, cache_s = run_vireid(records, **common)
    p_ips = run_plain(records, workers=args.workers, **common)
    batch = 2 * P * K
    lines = [
        f"Two-stream {arch} baseline (specific stem, last stride 1, GeM, BNNeck), {height}x{width}, batch {batch} "
        f"({P} ids x {K}+{K}), CE(label smoothing) + batch-hard triplet, SGD; {steps} timed steps after {warmup} "
        f"warm-up steps, device {device.type}{' (bf16 autocast, channels_last)' if amp else ''}. "
        f"Load average at start: {load:.2f}.",
        "",
        "| pipeline | images/s |",
        "|---|---|",
        f"| vireid (uint8 cache + batch tensor augmentation) | {v_ips:.1f} |",
        f"| plain PyTorch loop (PIL per image + torchvision transforms, DataLoader {args.workers} workers) | {p_ips:.1f} |",
        f"| ratio | {v_ips / p_ips:.2f}x |",
        "",
        f"Building the uint8 cache of {len(records)} images took {cache_s:.1f} s once (reused on later epochs/runs).",
        "On 2 CPU cores the model's forward/backward dominates both pipelines; the cache and batch "
        "augmentation matter where decoding would otherwise starve a fast accelerator.",
    ]
    body = "\n".join(lines)
    print(body)
    if not args.quick:
        name = "bench_train" if device.type == "cpu" else "bench_train_gpu"
        title = "Training throughput" + (" (GPU)" if device.type != "cpu" else " (CPU)")
        write_section(name, title, body, f"python benchmarks/bench_train.py --device {device.type}")


if __name__ == "__main__":
    main()
