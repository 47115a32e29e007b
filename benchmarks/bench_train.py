"""Training throughput: fp32 against mixed precision, and vireid's pipeline against a plain loop.

**Precision (the default run).** Two models, each trained in fp32 and in the precision
``train.amp`` resolves to when mixed precision is on (bf16 autocast + channels_last on CPU,
vireid.engine.precision), timed in the same process with the two precisions interleaved in rounds
(fp32 steps, then bf16 steps, then fp32 again ...), so a neighbour's load on a shared machine hits
both alike:

* ``resnet50``: the two-stream ResNet-50 baseline (modality-specific stem, last stride 1, GeM,
  BNNeck; no non-local, as in the AGW paper's baseline) at 288x144, batch 32 (4 identities x
  4 visible + 4 infrared);
* ``demo``: the demo's model (configs/baseline_synth.yaml: two-stream ResNet-10-T, 64x32), batch 64
  (8 identities x 4 + 4).

Both use the Trainer's data path (uint8 cache -> cross-modality sampler -> batch tensor
augmentation), label-smoothed cross-entropy + batch-hard triplet and SGD. On a CPU without bf16
units (no amx_bf16/avx512_bf16 flag) ``auto`` picks fp32 and oneDNN has no bf16 kernels: bf16 is
timed there only for models whose fp32 step takes under ``--bf16-cap`` seconds (the reference
convolution is ~30x slower), and the others are reported as not timed.

**Pipeline (``--plain``).** The ResNet-50 in fp32 through vireid's pipeline and through the
straightforward loop most research code uses (a ``Dataset`` that opens each JPEG with PIL and applies
torchvision per-image transforms, a ``DataLoader`` with 2 workers).

    python benchmarks/bench_train.py            # CPU, writes docs/benchmarks.md
    python benchmarks/bench_train.py --quick    # tiny smoke run, prints only
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import vireid  # noqa: E402,F401  (torchvision guard)
from _report import write_section  # noqa: E402
from vireid.engine.precision import MATMUL_CONV_MAX_PIXELS  # noqa: E402

#: the timed models: input size, identities x images per modality, backbone, and the bf16 speed-up
#: targeted on a CPU with bf16 matrix units (issue 13)
MODELS = {
    "resnet50": {"target": 2.0, "label": "two-stream ResNet-50 (AGW baseline), 288x144, batch 32", "arch": "resnet50",
                 "height": 288, "width": 144, "P": 4, "K": 4, "pooling": "gem"},
    "demo": {"target": 1.6, "label": "demo model (two-stream ResNet-10-T), 64x32, batch 64", "arch": "resnet10t",
             "height": 64, "width": 32, "P": 8, "K": 4, "pooling": "gem"},
}
QUICK = {"target": None, "label": "smoke (ResNet-10-T), 32x16, batch 8", "arch": "resnet10t", "height": 32, "width": 16,
         "P": 2, "K": 2, "pooling": "gem"}


def build_model(spec: dict, num_classes: int):
    from vireid.modeling.methods.baseline import BaselineReID

    return BaselineReID(num_classes=num_classes, backbone=spec["arch"], specific_stages=1, last_stride=1,
                        non_local=None, pooling=spec["pooling"], img_size=(spec["height"], spec["width"]))


def losses_fn(num_classes: int):
    from vireid.modeling.losses.identity import CrossEntropyLabelSmooth
    from vireid.modeling.losses.triplet import BatchHardTripletLoss

    ce, tri = CrossEntropyLabelSmooth(num_classes, epsilon=0.1), BatchHardTripletLoss(margin=0.3)

    def compute(out, labels, mods):
        return ce(out["logits"].float(), labels) + tri(out["features"].float(), labels, mods)

    return compute


def training_step(spec, num_classes, device, precision):
    """A freshly initialised model (same seed for every precision), its optimizer and one step, run
    as the Trainer runs it: the precision's memory format, input layout and autocast."""
    torch.manual_seed(0)
    model = precision.prepare_model(build_model(spec, num_classes).to(device))
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    compute = losses_fn(num_classes)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.grad_scaler)

    def step(images, labels, mods):
        with precision.autocast():
            out = model(precision.prepare_input(images), mods)
            loss = compute(out, labels, mods)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss

    return step


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def synthetic_records(spec: dict, data: str | None):
    from vireid.data.datasets import build_dataset
    from vireid.data.synth import generate_dataset

    height, width = spec["height"], spec["width"]
    root = Path(data) / f"{height}x{width}" if data else Path(tempfile.gettempdir()) / f"vireid-bench-train-{height}x{width}"
    generate_dataset(root, ids=24, format="sysu-mm01", images_per_camera=4, height=height, width=width, seed=0,
                     progress=False)
    ds = build_dataset("sysu-mm01", root, train_includes_val=True)
    return ds.train, ds.num_train_ids


class VireidRun:
    """One model in one precision on vireid's data path; :meth:`time` runs and times more steps."""

    def __init__(self, records, spec, num_classes, device, precision, total_steps):
        from vireid.data.cache import ImageCache
        from vireid.data.loader import TrainLoader
        from vireid.data.records import MODALITY_CODE
        from vireid.data.sampler import CrossModalityIdentitySampler
        from vireid.data.transforms import build_train_transform

        height, width = spec["height"], spec["width"]
        t0 = time.perf_counter()
        cache = ImageCache.build([r.path for r in records], height, width, progress=False)
        self.cache_s = time.perf_counter() - t0
        self.cache_images = len(records)
        labels = np.asarray([r.pid for r in records])
        mods = np.asarray([MODALITY_CODE[r.modality] for r in records])
        sampler = CrossModalityIdentitySampler(labels, mods, num_ids=spec["P"], num_per_modality=spec["K"], seed=0,
                                               epoch_length=total_steps)
        transform = build_train_transform(height, width, pad=10, flip=0.5, random_erasing=0.5)
        self.batches = iter(TrainLoader(cache, labels, mods, sampler, transform, device=device, seed=0))
        self.step = training_step(spec, num_classes, device, precision)
        self.device = device
        self.images = 0
        self.seconds = 0.0

    def time(self, steps: int, record: bool = True) -> float:
        """Run ``steps`` steps; add them to the totals when ``record`` (warm-up steps are not). Seconds per step."""
        sync(self.device)
        t0 = time.perf_counter()
        n = 0
        for _ in range(steps):
            batch = next(self.batches)
            self.step(batch.images, batch.labels, batch.modalities)
            n += batch.images.shape[0]
        sync(self.device)
        elapsed = time.perf_counter() - t0
        if record:
            self.images += n
            self.seconds += elapsed
        return elapsed / max(steps, 1)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else float("nan")


def time_precisions(spec, records, num_classes, device, fp32, mixed, steps, rounds, warmup, bf16_cap, units):
    """Images/s of ``spec`` in fp32 and in ``mixed``, interleaved over ``rounds`` rounds of ``steps``
    steps each (1 mixed-precision step per round on a CPU without bf16 units, where it is slow).
    Returns (fp32 run, mixed run or None, note)."""
    slow = device.type == "cpu" and not units
    mixed_steps = 1 if slow else steps
    a = VireidRun(records, spec, num_classes, device, fp32, warmup + steps * rounds)
    if warmup:
        a.time(warmup, record=False)
    fp32_step = a.time(steps)  # round 1, fp32
    b, note = None, ""
    if slow and fp32_step > bf16_cap:
        note = (f"bf16 not timed: this CPU has no bf16 units and an fp32 step takes {fp32_step:.1f} s "
                f"(bf16 runs the reference convolution, ~30x slower)")
    else:
        b = VireidRun(records, spec, num_classes, device, mixed, max(warmup, 1) + mixed_steps * rounds)
        b.time(max(warmup, 1), record=False)
        b.time(mixed_steps)  # round 1, mixed precision
        if slow:
            note = f"bf16 timed with {mixed_steps} step per round (no bf16 units: each step is slow)"
    for _ in range(rounds - 1):
        a.time(steps)
        if b is not None:
            b.time(mixed_steps)
    return a, b, note


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


def run_plain(records, spec, num_classes, device, precision, steps, warmup, workers):
    height, width, P, K = spec["height"], spec["width"], spec["P"], spec["K"]
    ds = PlainDataset(records, height, width)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=list(plain_batches(records, P, K, steps + warmup)),
                                         num_workers=workers, pin_memory=device.type == "cuda")
    step = training_step(spec, num_classes, device, precision)
    n = 0
    t = None
    for i, (images, labels, mods) in enumerate(loader):
        if i == warmup:
            sync(device)
            t = time.perf_counter()
        images, labels, mods = images.to(device), labels.to(device), mods.to(device)
        step(images, labels, mods)
        if i >= warmup:
            n += images.shape[0]
    sync(device)
    return n / (time.perf_counter() - t)


def main() -> None:
    from vireid.engine.precision import cpu_bf16_flags, resolve_precision

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, print only")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", default="resnet50,demo", help=f"comma-separated, from {', '.join(MODELS)}")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per precision per round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved fp32/bf16 rounds")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=None,
                    help="images per batch for every model (default: 32 for resnet50, 64 for demo)")
    ap.add_argument("--bf16-cap", type=float, default=5.0,
                    help="CPU without bf16 units: time bf16 only where an fp32 step takes less (seconds)")
    ap.add_argument("--plain", action="store_true", help="also time the ResNet-50 plain PyTorch loop (fp32)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the plain loop")
    ap.add_argument("--data", default=None, help="folder for the synthetic datasets (made if absent)")
    args = ap.parse_args()
    device = torch.device(args.device)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise SystemExit(f"unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}")
    specs = {"quick": QUICK} if args.quick else {n: dict(MODELS[n]) for n in names}
    if args.batch and not args.quick:
        for name, spec in specs.items():
            if args.batch % (2 * spec["K"]):
                raise SystemExit(f"--batch {args.batch} must be a multiple of {2 * spec['K']} "
                                 f"(identities x {spec['K']} visible + {spec['K']} infrared)")
            spec["P"] = args.batch // (2 * spec["K"])
            spec["label"] = re.sub(r"batch \d+", f"batch {args.batch}", spec["label"])
    steps, rounds, warmup = (1, 1, 1) if args.quick else (args.steps, args.rounds, args.warmup)
    fp32 = resolve_precision("none", device)
    # the precision `auto` picks where mixed precision pays; on CPU, bf16 whatever the flags say (it is compared)
    mixed = resolve_precision("bf16" if device.type == "cpu" else "auto", device)
    flags = cpu_bf16_flags() if device.type == "cpu" else ()
    units = bool(flags)
    auto = resolve_precision("auto", device)
    load = os.getloadavg()[0]
    rows, notes, cache_notes, targets = [], [], [], []
    for name, spec in specs.items():
        records, num_classes = synthetic_records(spec, args.data)
        a, b, note = time_precisions(spec, records, num_classes, device, fp32, mixed, steps, rounds, warmup,
                                     args.bf16_cap, units)
        ratio = f"{b.images_per_s / a.images_per_s:.2f}x" if b is not None else "not timed"
        rows.append(f"| {spec['label']} | {a.images_per_s:.1f} | "
                    f"{f'{b.images_per_s:.1f}' if b is not None else '-'} | {ratio} |")
        if note:
            notes.append(f"{spec['label']}: {note}.")
        if spec["target"] is not None and device.type == "cpu":
            if b is None or not units:
                verdict = "not applicable on this CPU (no bf16 units; `auto` trains in fp32 here)"
            else:
                speedup = b.images_per_s / a.images_per_s
                verdict = "**met**" if speedup >= spec["target"] else "not met"
            targets.append(f"{spec['label']}: >= {spec['target']:.1f}x, {verdict}.")
        cache_notes.append(f"{a.cache_images} images in {a.cache_s:.1f} s ({spec['height']}x{spec['width']})")
    mixed_name = f"{mixed.name} autocast + channels_last"
    lines = [
        f"Train images/s in one process, fp32 and {mixed_name} interleaved ({rounds} rounds x {steps} timed steps "
        f"each, after {warmup} warm-up step(s)); vireid's data path, CE (label smoothing) + batch-hard triplet, "
        f"SGD, device {device.type}. Load average at start: {load:.2f}."
        + (" Under CPU bf16, training convolutions whose output map has at most "
           f"{MATMUL_CONV_MAX_PIXELS} pixels run as one matrix product over the gathered patches "
           "(vireid.engine.precision.conv2d_as_matmul; oneDNN's bf16 weight gradient is slow on such maps: the "
           "demo model's last two stages at 4x2)." if device.type == "cpu" else ""),
        "",
        f"CPU bf16 units: {', '.join(flags) if flags else 'none (no amx_bf16/avx512_bf16 flag)'}"
        + (f"; `train.amp=auto` picks **{auto.name}** here." if device.type == "cpu" else f"; `auto` picks {auto.name}."),
        "",
        f"| model | fp32 images/s | {mixed_name} images/s | speed-up |",
        "|---|---|---|---|",
        *rows,
    ]
    if notes:
        lines += ["", *notes]
    if targets:
        lines += ["", "Speed-up targets where the CPU has bf16 units: " + " ".join(targets)]
    lines += ["", "uint8 cache build (once, reused on later epochs/runs): " + "; ".join(cache_notes) + "."]
    if args.plain and not args.quick:
        spec = MODELS["resnet50"]
        records, num_classes = synthetic_records(spec, args.data)
        run = VireidRun(records, spec, num_classes, device, fp32, warmup + steps * rounds)
        run.time(max(warmup, 1), record=False)
        run.time(steps * rounds)
        p_ips = run_plain(records, spec, num_classes, device, fp32, steps * rounds, warmup, args.workers)
        lines += [
            "",
            "Pipeline, ResNet-50 in fp32:",
            "",
            "| pipeline | images/s |",
            "|---|---|",
            f"| vireid (uint8 cache + batch tensor augmentation) | {run.images_per_s:.1f} |",
            f"| plain PyTorch loop (PIL per image + torchvision transforms, DataLoader {args.workers} workers) | {p_ips:.1f} |",
            f"| ratio | {run.images_per_s / p_ips:.2f}x |",
        ]
    body = "\n".join(lines)
    print(body)
    if not args.quick:
        name = "bench_train" if device.type == "cpu" else "bench_train_gpu"
        title = "Training throughput" + (" (GPU)" if device.type != "cpu" else " (CPU)")
        command = f"python benchmarks/bench_train.py --device {device.type}"
        if args.models != "resnet50,demo":
            command += f" --models {args.models}"
        for flag in ("batch", "steps", "rounds", "warmup"):
            value = getattr(args, flag)
            if value is not None and value != ap.get_default(flag):
                command += f" --{flag} {value}"
        if args.plain:
            command += " --plain"
        write_section(name, title, body, command)


if __name__ == "__main__":
    main()
