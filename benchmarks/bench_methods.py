"""Cost of every method (in the style of the DFW+SLN paper's Table 2): parameters, GFLOPs, and training and
inference images/s, each method at its config's input size and batch.

Configs (positional arguments, names of shipped configs or paths; default: every shipped
``<name>_sysu`` config, plus the ``<name>_synth`` configs of names without a ``_sysu`` one, i.e. the
paper-size recipe of each method where there is one; ``--synth``: the ``_synth`` configs only). Extra rows: ``--variant "LABEL=CONFIG
key=value ..."``, e.g. the DFW+SLN paper's two-stream baseline (no DFW, one layer4)::

    python benchmarks/bench_methods.py \\
        --variant "two-stream baseline=dfw_sln_sysu model.params.dfw_after_stages=[] model.params.num_branches=1"

Nothing about a method is hard-coded: each model is built with the trainer's own functions
(``build_model``, ``build_losses``, ``build_optimizer``) from its config, with ``pretrained``
switched off (weights do not change the cost; nothing is downloaded) and ``--num-classes``
identities (395, SYSU-MM01's training set).

* **Params (M)**: all parameters of the model, classifiers included.
* **GFLOPs**: one evaluation-mode forward pass of one image at the config's ``data.height x
  data.width`` (:func:`vireid.modeling.flops.count_forward_flops`, torch's FLOP counter: a
  multiply-add is 2 FLOPs, the convention of the DFW+SLN paper's Table 2: 10.3 G for its ResNet-50
  baseline at 288x144).
* **train img/s**: one optimiser step of the config's loss table on a real batch (P identities x
  (K visible + K infrared) of random images, layout as the sampler's), forward + losses + backward +
  step (+ the model's ``on_after_step`` hook), timed over ``--steps`` steps after ``--warmup``;
  data loading and batch augmentation are not included (``bench_train.py`` measures the pipeline).
* **infer img/s**: evaluation-mode forward of ``--infer-batch`` images (half of each modality).

On CUDA (``--device cuda``) the config's ``train.amp`` and ``train.channels_last`` apply.

    python benchmarks/bench_methods.py                 # CPU, writes docs/benchmarks.md
    python benchmarks/bench_methods.py --device cuda   # GPU section
    python benchmarks/bench_methods.py --quick         # small synthetic configs, 1 step, prints only

``--append`` measures only the named configs / variants and merges their rows into the section that is
already there (a row with the same config label is replaced, others are kept), with a note under the
table giving their command, settings, machine, torch threads and the load average before and after each
row -- on a shared machine the big models are measured one row at a time, at one thread::

    python benchmarks/bench_methods.py --append --threads 1 vit_synth
    python benchmarks/bench_methods.py --append --threads 1 --steps 1 --infer-batch 16 --infer-repeats 1 vit_sysu
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import vireid  # noqa: E402,F401  (torchvision guard)
from _report import write_section  # noqa: E402

CONFIGS = Path(__file__).resolve().parent.parent / "src" / "vireid" / "configs"
PAPER_SUFFIX, SYNTH_SUFFIX = "_sysu", "_synth"


def default_configs(synth_only: bool = False) -> list[Path]:
    """Per config-name prefix, the ``_sysu`` config, else the ``_synth`` one (only ``_synth`` ones
    when ``synth_only``)."""
    by_prefix: dict[str, dict[str, Path]] = {}
    for path in sorted(CONFIGS.glob("*.yaml")):
        for suffix in (PAPER_SUFFIX, SYNTH_SUFFIX):
            if path.stem.endswith(suffix):
                by_prefix.setdefault(path.stem[: -len(suffix)], {})[suffix] = path
    if synth_only:
        return [found[SYNTH_SUFFIX] for _, found in sorted(by_prefix.items()) if SYNTH_SUFFIX in found]
    return [found.get(PAPER_SUFFIX) or found[SYNTH_SUFFIX] for _, found in sorted(by_prefix.items())]


def resolve(name: str) -> Path:
    from vireid.workflows.train_run import resolve_config
    from vireid.errors import VireidError

    try:
        return resolve_config(name)
    except VireidError as err:
        raise SystemExit(str(err)) from None


def offline_params(cfg) -> None:
    """Weights do not change the cost: start every model from random weights (never the hub)."""
    if "pretrained" in cfg.model.params:
        cfg.model.params["pretrained"] = None


def fake_batch(cfg, batch: int | None, device: torch.device, generator: torch.Generator) -> tuple:
    """Random images, labels and modalities laid out as the sampler's batches (P x K visible, then infrared)."""
    p, k = cfg.sampler.num_ids, cfg.sampler.num_per_modality
    labels = torch.arange(p).repeat_interleave(k).repeat(2)
    modalities = torch.cat([torch.zeros(p * k), torch.ones(p * k)]).long()
    if batch is not None:  # inference: half of each modality
        labels = torch.arange(batch) % max(p, 1)
        modalities = (torch.arange(batch) >= batch // 2).long()
    n = labels.numel()
    h, w = cfg.data.height, cfg.data.width
    images = torch.randn(n, 3, h, w, generator=generator)
    extras = {}
    if cfg.data.joints:
        from vireid.data.pose import NUM_JOINTS

        xy = torch.rand(n, NUM_JOINTS, 2, generator=generator) * torch.tensor([w - 1.0, h - 1.0])
        extras["joints"] = torch.cat([xy, torch.ones(n, NUM_JOINTS, 1)], dim=2).to(device)
    return images.to(device), labels.to(device), modalities.to(device), extras


@torch.no_grad()
def forward_flops_with_extras(model: torch.nn.Module, batch: tuple) -> int:
    """Evaluation-forward FLOPs of a model that takes extra inputs (e.g. joints), as count_forward_flops counts."""
    from torch.utils.flop_counter import FlopCounterMode

    images, _, modalities, extras = batch
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros_like(images), modalities, **extras)
    return int(counter.get_total_flops())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(cfg, device: torch.device, num_classes: int, steps: int, warmup: int, infer_batch: int, infer_repeats: int) -> dict:
    """Params, GFLOPs, train and inference images/s of one config."""
    from vireid.engine.trainer import build_losses, build_model, build_optimizer
    from vireid.modeling.flops import count_forward_flops, count_parameters

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = build_model(cfg, num_classes)
    params = count_parameters(model)
    one_image = fake_batch(cfg, 1, torch.device("cpu"), generator)
    flops = count_forward_flops(model, (cfg.data.height, cfg.data.width), batch_size=1) if not one_image[3] \
        else forward_flops_with_extras(model, one_image)
    model.to(device)
    cuda = device.type == "cuda"
    channels_last = cuda and cfg.train.channels_last
    if channels_last:
        model.to(memory_format=torch.channels_last)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.amp) if cuda else None
    losses = build_losses(cfg, num_classes, int(getattr(model, "embed_dim", 0))).to(device)
    optimizer = build_optimizer(cfg, model, losses)
    terms = cfg.loss_terms()
    images, labels, modalities, extras = fake_batch(cfg, None, device, generator)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)

    # multi-stage methods (CLIP-ReID): timed in their last epoch's stage, with the trainer's labels / phase rules
    if hasattr(model, "on_epoch_start"):
        model.on_epoch_start(max(int(cfg.train.epochs) - 1, 0))
    import inspect

    if "labels" in inspect.signature(model.forward).parameters:
        extras = {**extras, "labels": labels}
    phase_outputs = frozenset(getattr(model, "phase_outputs", ()))

    def train_step() -> None:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            out = model(images, modalities, **extras)
            total = sum(
                term.weight * losses[name](out[term.input], out.get(f"{term.input}_labels", labels),
                                           out.get(f"{term.input}_modalities", modalities)).float()
                for name, term in terms.items() if term.input in out or term.input not in phase_outputs
            )
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        if hasattr(model, "on_after_step"):
            model.on_after_step()

    model.train()
    losses.train()
    for _ in range(warmup):
        train_step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step()
    sync(device)
    train_ips = steps * images.shape[0] / (time.perf_counter() - t0)

    q_images, _, q_modalities, q_extras = fake_batch(cfg, infer_batch, device, generator)
    q_extras.pop("labels", None)
    if channels_last:
        q_images = q_images.contiguous(memory_format=torch.channels_last)
    model.eval()
    with torch.inference_mode(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
        model(q_images, q_modalities, **q_extras)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        for _ in range(infer_repeats):
            embedding = model(q_images, q_modalities, **q_extras)
        sync(device)
    infer_ips = infer_repeats * infer_batch / (time.perf_counter() - t0)
    return {
        "params_m": params / 1e6,
        "gflops": flops / 1e9,
        "train_batch": int(images.shape[0]),
        "train_ips": train_ips,
        "infer_ips": infer_ips,
        "embed_dim": int(embedding.shape[1]),
    }


def parse_variant(text: str) -> tuple[str, Path, list[str]]:
    """``"LABEL=CONFIG key=value ..."`` -> (label, config path, overrides)."""
    label, _, rest = text.partition("=")
    words = shlex.split(rest)
    if not label.strip() or not words:
        raise SystemExit(f"--variant {text!r} must look like 'LABEL=CONFIG key=value ...'")
    return label.strip(), resolve(words[0]), words[1:]


def _config_label(row: str) -> str:
    """The config column (2nd cell, without backquotes) of a table row ``| method | `label` | ...``."""
    cells = [c.strip() for c in row.strip().strip("|").split("|")]
    return cells[1].strip("`") if len(cells) > 1 else ""


def merge_rows(text: str, name: str, rows: list[str], note: str) -> str:
    """``text`` (a benchmarks document) with ``rows`` merged into the table of section ``name`` and ``note``
    added under it: a row whose config label is already in the table replaces it, a new one is appended.
    The section's header lines (command, machine, run) stay those of the run that wrote the other rows."""
    pattern = re.compile(rf"(<!-- BEGIN {re.escape(name)} -->\n)(.*?)(<!-- END {re.escape(name)} -->)", re.S)
    found = pattern.search(text)
    if found is None:
        raise SystemExit(f"docs/benchmarks.md has no section {name!r} to append to; run without --append first")
    lines = found.group(2).rstrip("\n").split("\n")
    table = [i for i, line in enumerate(lines) if line.startswith("|")]
    if len(table) < 2:
        raise SystemExit(f"section {name!r} of docs/benchmarks.md holds no table to append to; run without --append")
    by_label = {_config_label(lines[i]): i for i in table[2:]}
    extra = []
    for row in rows:
        index = by_label.get(_config_label(row))
        if index is None:
            extra.append(row)
        else:
            lines[index] = row
    end = table[-1] + 1
    lines[end:end] = extra
    # notes of earlier --append runs ("Rows `a`, `b` added ..."): one whose rows are all measured again goes,
    # one with some says which were measured again
    new_labels = {_config_label(row) for row in rows}
    kept = []
    for line in lines:
        labels = re.findall(r"`([^`]+)`", line.split(" added ", 1)[0]) if line.startswith("Rows `") else []
        again = [label for label in labels if label in new_labels]
        if labels and len(again) == len(labels):
            continue
        if again:
            line += " Measured again later: " + ", ".join(f"`{label}`" for label in again) + "."
        kept.append(line)
    body = re.sub(r"\n{3,}", "\n\n", "\n".join(kept).rstrip()) + "\n\n" + note.strip() + "\n"
    return text[: found.start(2)] + body + text[found.start(3):]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("configs", nargs="*", help="config names or paths (default: see above)")
    ap.add_argument("--variant", action="append", default=[], help="extra row 'LABEL=CONFIG key=value ...'")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="synthetic configs, small batch, 1 step; print only")
    ap.add_argument("--synth", action="store_true", help="default list: only the _synth configs")
    ap.add_argument("--num-classes", type=int, default=395)
    ap.add_argument("--steps", type=int, default=3, help="timed training steps")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--infer-batch", type=int, default=64)
    ap.add_argument("--infer-repeats", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    ap.add_argument("--append", action="store_true",
                    help="merge the rows of the named configs into the existing section instead of rewriting it")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.append and not (args.configs or args.variant):
        raise SystemExit("--append needs the configs (or --variant rows) to measure")
    from vireid.config import load_config
    from vireid.errors import VireidError

    device = torch.device(args.device)
    quick_overrides = ["sampler.num_ids=2", "sampler.num_per_modality=2"] if args.quick else []
    steps, warmup, infer_batch, infer_repeats = args.steps, args.warmup, args.infer_batch, args.infer_repeats
    if args.quick:
        steps, warmup, infer_batch, infer_repeats = 1, 1, 8, 1
    rows = [(path.stem, path, []) for path in (map(resolve, args.configs) if args.configs else default_configs(args.synth or args.quick))]
    rows += [parse_variant(v) for v in args.variant]

    header = "| method | config | backbone | input | train batch | Params (M) | GFLOPs | train img/s | infer img/s |"
    lines = [header, "|" + "---|" * 9]
    loads: list[str] = []
    for label, path, overrides in rows:
        load_before = os.getloadavg()[0]
        try:
            cfg = load_config(path, [*overrides, *quick_overrides])
            offline_params(cfg)
            result = measure(cfg, device, args.num_classes, steps, warmup, infer_batch, infer_repeats)
            loads.append(f"`{label}` {load_before:.2f} -> {os.getloadavg()[0]:.2f}")
        except (VireidError, RuntimeError, ValueError, KeyError, TypeError) as err:
            print(f"{label}: failed: {err}", file=sys.stderr)
            lines.append(f"| {label} | `{path.stem}` | | | | failed: {str(err).splitlines()[0][:80]} | | | |")
            continue
        backbone = cfg.model.params.get("backbone") or cfg.model.params.get("clip_model") or "-"
        line = (f"| {cfg.model.method} | `{label}` | {backbone} | {cfg.data.height}x{cfg.data.width} | "
                f"{result['train_batch']} | {result['params_m']:.2f} | {result['gflops']:.3f} | "
                f"{result['train_ips']:.1f} | {result['infer_ips']:.1f} |")
        lines.append(line)
        print(line, flush=True)
    table = "\n".join(lines)
    print(table)
    if args.quick or args.no_write:
        return
    extra = " ".join([f"--variant {v!r}" for v in args.variant] + list(args.configs))
    command = f"python benchmarks/bench_methods.py --device {args.device}" + (f" {extra}" if extra else "")
    name = "bench_methods" if device.type == "cpu" else f"bench_methods_{device.type}"
    if args.append:
        from _report import DOC, _git_revision, machine_description

        settings = (f"--steps {steps} --warmup {warmup} --infer-batch {infer_batch} --infer-repeats {infer_repeats}"
                    + (f" --threads {args.threads}" if args.threads else ""))
        command = command.replace(" --device", f" --append {settings} --device", 1)
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        note = (f"Rows {', '.join(f'`{label}`' for label, _, _ in rows)} added {stamp} (revision {_git_revision()}) by "
                f"`{command}`: {steps} timed optimiser step(s) after {warmup} warm-up, inference batches of "
                f"{infer_batch} images, {infer_repeats} timed; {machine_description()}. The machine is shared: "
                f"1-minute load average before -> after each row: {'; '.join(loads) or 'none measured'}.")
        DOC.write_text(merge_rows(DOC.read_text(), name, lines[2:], note))
        print(f"merged {len(lines) - 2} row(s) into section {name} of docs/benchmarks.md")
        return
    body = (
        f"Each method at its config's input size, {args.num_classes} identities, on `{args.device}`; "
        f"training: {steps} timed optimiser steps (after {warmup} warm-up) of the config's loss table on one "
        f"real-size batch of random images (model cost only, no data loading); inference: batches of "
        f"{infer_batch} images, {infer_repeats} timed. GFLOPs: one image, evaluation forward, torch's "
        f"FLOP counter (a multiply-add = 2 FLOPs; the DFW+SLN paper's Table 2 reports 10.301 G for its ResNet-50 "
        f"baseline and 15.150 G for DFW+SLN on this scale).\n\n{table}\n"
    )
    write_section(name, f"Method costs (params, FLOPs, images/s) on {device.type}", body, command)
    print(f"wrote section {name} of docs/benchmarks.md")


if __name__ == "__main__":
    main()
