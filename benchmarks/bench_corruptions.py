"""Benchmark: the corruption suite's overhead (time per image of each corruption) against the
feature extraction it precedes, at the SYSU-MM01 input size 288 x 144 (AGW's ResNet-50) and at the
synthetic demo size 64 x 32 (ResNet-10-T baseline).

Images: the real sample images of the repository's test data (SYSU-MM01 figure crops), repeated to
a batch, decoded at each size. Corruptions run through :func:`vireid.data.corruptions.corrupt` as
the robustness evaluation calls them (one seeded generator per image), severity 3. Feature
extraction: :func:`vireid.inference.extract.extract_features` of an untrained model of the shipped
config (weights do not change the time).

    python benchmarks/bench_corruptions.py            # writes its section of docs/benchmarks.md
    python benchmarks/bench_corruptions.py --quick --doc /tmp/bench.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _report import DOC, write_section  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "tests" / "data" / "shared" / "real-mini" / "sysu-mm01-figure"


def images(count: int, height: int, width: int) -> torch.Tensor:
    from vireid.data.images import decode_image

    paths = sorted(p for p in SAMPLES.rglob("*") if p.suffix.lower() in (".png", ".jpg"))
    decoded = [decode_image(str(p), size=(height, width)) for p in paths]
    stack = np.stack([decoded[i % len(decoded)] for i in range(count)])
    return torch.from_numpy(stack).permute(0, 3, 1, 2).contiguous()


def embed_seconds(config: str, overrides: list[str], batch: torch.Tensor, repeats: int) -> float:
    from vireid.workflows.train_run import resolve_config
    from vireid.config import load_config
    from vireid.data.cache import ImageCache
    from vireid.inference.extract import extract_features
    from vireid.engine.trainer import build_model

    cfg = load_config(resolve_config(config), overrides)
    model = build_model(cfg, 100).eval()
    cache = ImageCache(batch.numpy())
    mods = np.zeros(len(batch), dtype=np.int64)
    extract_features(model, ImageCache(batch[:2].numpy()), mods[:2], "cpu", 32)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        extract_features(model, cache, mods, "cpu", 32)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / len(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few images (smoke test)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--doc", type=Path, default=DOC, help="Markdown file to write the section into")
    args = parser.parse_args()

    from vireid.data.corruptions import CORRUPTIONS, corrupt

    count = 8 if args.quick else 32
    repeats = 1 if args.quick else args.repeats
    load = os.getloadavg()[0]
    sizes = [
        ("288 x 144", 288, 144, "agw_sysu", ["model.params.pretrained=false"], "AGW ResNet-50"),
        ("64 x 32", 64, 32, "baseline_synth", [], "baseline ResNet-10-T"),
    ]
    per_size = []
    for label, height, width, config, overrides, model_name in sizes:
        batch = images(count, height, width)
        embed = embed_seconds(config, overrides + [f"data.height={height}", f"data.width={width}"], batch, 1)
        rows = {}
        for name in CORRUPTIONS:
            corrupt(batch[:2], name, 3)  # warm-up
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                corrupt(batch, name, 3, seed=0)
                times.append(time.perf_counter() - t0)
            rows[name] = statistics.median(times) / count
        per_size.append((label, model_name, embed, rows))
        print(label, f"embed {1000 * embed:.2f} ms/img", {k: round(1000 * v, 2) for k, v in rows.items()}, flush=True)

    head = "| corruption | " + " | ".join(f"{label}: ms / image (x embedding)" for label, *_ in per_size) + " |"
    lines = [head, "|" + "---|" * (1 + len(per_size))]
    for name in CORRUPTIONS:
        cells = [f"{1000 * rows[name]:.2f} ({rows[name] / embed:.2f}x)" for _, _, embed, rows in per_size]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    means = [statistics.mean(rows.values()) for *_, rows in per_size]
    lines.append("| **mean** | " + " | ".join(f"{1000 * m:.2f} ({m / e:.2f}x)" for m, (_, _, e, _) in zip(means, per_size)) + " |")
    embed_line = ", ".join(f"{label} {model}: {1000 * e:.2f} ms / image" for label, model, e, _ in per_size)
    body = "\n".join([
        f"Time to corrupt one image (severity 3, `corrupt` with its per-image seeded generator, batches of {count}) and, "
        "in brackets, as a multiple of the time to embed the same image (`extract_features`, batch 32, one pass). Feature "
        f"extraction: {embed_line}. torch threads: {torch.get_num_threads()}; load average at start {load:.2f}.",
        "",
        *lines,
        "",
        "A robustness run costs (corruptions x severities) extra feature passes over the pool plus the corruption "
        "time above; `vireid robustness` reports both (`seconds` in robustness.json).",
    ])
    if args.quick:
        body = "**Smoke run (--quick): few images; the numbers mean little.**\n\n" + body
    print(body)
    write_section("bench_corruptions", "Corruption suite overhead", body,
                  "python benchmarks/bench_corruptions.py" + (" --quick" if args.quick else ""), doc=args.doc)


if __name__ == "__main__":
    main()
