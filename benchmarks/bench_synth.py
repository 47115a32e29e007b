"""Synthetic generator speed: 200 identities x 6 cameras x 10 images at 288x144 (the issue's target:
under a minute on 2 cores), written in the SYSU-MM01 layout with joints and split files.

    python benchmarks/bench_synth.py [--ids 200] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import write_section  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids", type=int, default=200)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="20 identities, print only")
    args = ap.parse_args()
    from vireid.data.synth import generate_dataset

    ids = 20 if args.quick else args.ids
    out = Path(tempfile.mkdtemp(prefix="vireid-bench-synth-"))
    load = os.getloadavg()[0]
    try:
        t0 = time.perf_counter()
        cpu0 = os.times()
        generate_dataset(out / "sysu", ids=ids, format="sysu-mm01", images_per_camera=10, height=288, width=144,
                         seed=0, workers=args.workers, progress=False)
        wall = time.perf_counter() - t0
        cpu1 = os.times()
        cpu = (cpu1.user + cpu1.children_user + cpu1.system + cpu1.children_system) - (
            cpu0.user + cpu0.children_user + cpu0.system + cpu0.children_system)
        n = sum(1 for _ in (out / "sysu").glob("cam*/*/*.jpg"))
        size_mb = sum(p.stat().st_size for p in (out / "sysu").rglob("*") if p.is_file()) / 2**20
    finally:
        shutil.rmtree(out, ignore_errors=True)
    verdict = "met" if wall < 60 else "missed"
    body = (
        f"`vireid synth --ids {ids} --format sysu-mm01` at 288x144, 10 images per camera, 6 cameras: "
        f"{n} images ({size_mb:.0f} MB with joints and split files).\n\n"
        "| | value |\n|---|---|\n"
        f"| wall time | {wall:.1f} s |\n| CPU time (all workers) | {cpu:.1f} s |\n"
        f"| images/s | {n / wall:.0f} |\n\n"
        f"Load average at start: {load:.2f}. Target (200 ids) under 60 s on 2 cores: **{verdict}**."
    )
    print(body)
    if not args.quick:
        write_section("bench_synth", "Synthetic data generation", body, "python benchmarks/bench_synth.py")


if __name__ == "__main__":
    main()
