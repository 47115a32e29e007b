"""Benchmark: the full SYSU-MM01 all-search single-shot protocol (10 trials) at the real sizes.

A fake pool with the real test-set shape: 96 identities, 3,803 infrared queries (camera 3: 1,883,
camera 6: 1,920) and 20 visible images per identity and camera in the cameras where the real test
identities appear (cam1/cam2: 56 identities, cam4: 94, cam5: 95 -> 301 gallery images per trial),
2048-d features. The fast path (``sysu_protocol``: one query x union-of-galleries product, then
per trial a column gather and the vectorised ranking) is timed against the plain loop (per trial:
the distances of that gallery, then ``evaluate_ranking_loop``), and their metrics must agree to 1e-6.

    python benchmarks/bench_protocol.py            # writes its section of docs/benchmarks.md
    python benchmarks/bench_protocol.py --quick --doc /tmp/bench.md
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

import vireid  # noqa: E402,F401
from _report import DOC, write_section  # noqa: E402
from vireid.data.records import INFRARED, VISIBLE, ImageRecord  # noqa: E402
from vireid.evaluation import evaluate_ranking, evaluate_ranking_loop, pairwise_distance  # noqa: E402
from vireid.evaluation.protocols import (  # noqa: E402
    METRIC_KEYS,
    _sysu_gallery_draws,
    sysu_gallery_indices,
    sysu_protocol,
)

TARGET_S = 0.2


def build_pool(num_ids: int, per_folder: int, rng: np.random.Generator) -> list[ImageRecord]:
    """Fake SYSU-MM01 test pool with the real test set's proportions (see module docstring)."""
    ids = np.arange(1, num_ids + 1)
    # Visible cameras: as in the real test set, cam1/cam2 hold 56/96 of the identities, cam4 94, cam5 95.
    present = {
        1: ids[: round(num_ids * 56 / 96)],
        2: ids[-round(num_ids * 56 / 96) :],
        4: ids[: round(num_ids * 94 / 96)],
        5: ids[-round(num_ids * 95 / 96) :],
    }
    pool = []
    for cam, cam_ids in present.items():
        for pid in cam_ids:
            pool += [ImageRecord(f"cam{cam}/{pid:04d}/{k:04d}.jpg", int(pid), cam, VISIBLE) for k in range(1, per_folder + 1)]
    # Infrared: camera 6 has 20 images of every identity, camera 3 1,883 images over 93 identities.
    cam3_ids = ids[: round(num_ids * 93 / 96)]
    cam3_total = round(num_ids * 1883 / 96)
    cam3_counts = np.full(len(cam3_ids), cam3_total // len(cam3_ids))
    cam3_counts[: cam3_total - cam3_counts.sum()] += 1
    for pid, n in zip(cam3_ids, cam3_counts):
        pool += [ImageRecord(f"cam3/{pid:04d}/{k:04d}.jpg", int(pid), 3, INFRARED) for k in range(1, n + 1)]
    for pid in ids:
        pool += [ImageRecord(f"cam6/{pid:04d}/{k:04d}.jpg", int(pid), 6, INFRARED) for k in range(1, 21)]
    order = rng.permutation(len(pool))
    return [pool[i] for i in order]


def build_features(pool: list[ImageRecord], dim: int, seed: int) -> torch.Tensor:
    """Identity centre + modality offset + noise: a hard but learnable retrieval problem."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(max(r.pid for r in pool) + 1, dim, generator=gen)
    offsets = torch.randn(2, dim, generator=gen)
    pids = torch.tensor([r.pid for r in pool])
    mods = torch.tensor([r.modality == INFRARED for r in pool]).long()
    return centres[pids] + 0.8 * offsets[mods] + 4.0 * torch.randn(len(pool), dim, generator=gen)


def loop_reference(features: torch.Tensor, pool: list[ImageRecord], trials: int) -> list[dict]:
    """The plain way: per trial, the distances of that trial's gallery and the per-query loop."""
    q = [i for i, r in enumerate(pool) if r.modality == INFRARED and r.camid in (3, 6)]
    out = []
    for t in range(trials):
        g = sysu_gallery_indices(pool, "all", 1, t, "seeded").tolist()
        dist = pairwise_distance(features[q], features[g]).numpy()
        out.append(
            evaluate_ranking_loop(
                dist, [pool[i].pid for i in q], [pool[i].pid for i in g],
                [pool[i].camid for i in q], [pool[i].camid for i in g], cam_rule="sysu", dedup_cmc=True,
            )  # fmt: skip
        )
    return out


def breakdown(features: torch.Tensor, pool: list[ImageRecord], trials: int) -> dict[str, float]:
    """Time the stages of the fast path separately (same steps as the runner)."""
    t0 = time.perf_counter()
    draws = _sysu_gallery_draws(pool, "all", 1, range(trials), "seeded", None)  # as the runner does
    t1 = time.perf_counter()
    union = np.unique(np.concatenate(draws))
    q = np.array([i for i, r in enumerate(pool) if r.modality == INFRARED])
    q_u = pairwise_distance(features[q], features[union])
    t2 = time.perf_counter()
    pids = np.array([r.pid for r in pool])
    cams = np.array([r.camid for r in pool])
    for g in draws:
        dist = q_u[:, torch.as_tensor(np.searchsorted(union, g))]
        evaluate_ranking(dist, pids[q], pids[g], cams[q], cams[g], cam_rule="sysu", dedup_cmc=True)
    t3 = time.perf_counter()
    return {"draw": t1 - t0, "distance": t2 - t1, "rank": t3 - t2, "union": len(union)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--doc", type=Path, default=DOC, help="Markdown file to write the section into")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    num_ids, per_folder, dim, trials = (96, 20, 2048, 10) if not args.quick else (12, 6, 64, 3)
    repeats = args.repeats if not args.quick else 2
    rng = np.random.default_rng(0)
    pool = build_pool(num_ids, per_folder, rng)
    features = build_features(pool, dim, seed=0)
    load = os.getloadavg()[0]

    result = sysu_protocol(features, pool, mode="all", shots=1, trials=trials, draw="seeded")  # warm-up
    default_threads = torch.get_num_threads()
    times_by_threads = {}
    for threads in sorted({1, default_threads}):
        torch.set_num_threads(threads)
        times_by_threads[threads] = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            result = sysu_protocol(features, pool, mode="all", shots=1, trials=trials, draw="seeded")
            times_by_threads[threads].append(time.perf_counter() - t0)
    torch.set_num_threads(default_threads)
    times = times_by_threads[default_threads]
    stages = breakdown(features, pool, trials)

    t0 = time.perf_counter()
    reference = loop_reference(features, pool, trials)
    loop_time = time.perf_counter() - t0

    diffs = []
    for fast, ref in zip(result.trials, reference):
        ref_pct = {"rank1": ref["cmc"][0], "rank5": ref["cmc"][4], "rank10": ref["cmc"][9], "rank20": ref["cmc"][19]}
        ref_pct.update(mAP=ref["mAP"], mINP=ref["mINP"])
        diffs += [abs(fast[k] / 100.0 - ref_pct[k]) for k in METRIC_KEYS]
    max_diff = max(diffs)
    agree = max_diff <= 1e-6

    median, best = statistics.median(times), min(times)
    n_query = result.settings["num_query"]
    n_gallery = result.trials[0]["num_gallery"]
    verdict = "met" if median < TARGET_S else "missed"
    body = f"""Full SYSU-MM01 all-search single-shot protocol, {trials} trials (seeded draw), fake pool at
the real test-set sizes: {n_query} infrared queries, {n_gallery} gallery images per trial drawn from
{sum(r.modality == VISIBLE for r in pool)} visible images of {num_ids} identities, {dim}-d features.
Fast path = `sysu_protocol` (one query x union-of-galleries distance product, per trial a column
gather + the vectorised ranking); loop = per trial the distances of that gallery +
`evaluate_ranking_loop`. Load average at start: {load:.2f} (other jobs on the machine inflate the
figures).

| | time (s) |
|---|---|
| fast path, {default_threads} threads, median of {repeats} | {median:.3f} |
| fast path, {default_threads} threads, best of {repeats} | {best:.3f} |
| fast path, 1 thread, median / best of {repeats} | {statistics.median(times_by_threads[1]):.3f} / {min(times_by_threads[1]):.3f} |
| - of which gallery draws | {stages['draw']:.3f} |
| - of which query x union distances ({n_query} x {stages['union']} x {dim}) | {stages['distance']:.3f} |
| - of which ranking, {trials} trials | {stages['rank']:.3f} |
| plain loop | {loop_time:.3f} |
| speed-up (loop / fast median) | {loop_time / median:.1f}x |

Metrics fast vs loop: max abs difference {max_diff:.2e} over all trials and metrics
({'agree to 1e-6' if agree else 'DISAGREE'}). Mean of the fast path: rank-1 {result.mean['rank1']:.2f} %,
mAP {result.mean['mAP']:.2f} %, mINP {result.mean['mINP']:.2f} %.

Target < {TARGET_S} s: **{verdict}** (median {median:.3f} s). The distance product alone is
{n_query} x {stages['union']} x {dim} multiply-adds (about {2 * n_query * stages['union'] * dim / 1e9:.0f} GFLOP),
which bounds the fast path from below on this CPU."""
    print(body)
    if not agree:
        raise SystemExit(f"fast path and loop disagree: max abs difference {max_diff:.3e}")
    if not args.no_write:
        command = "python benchmarks/bench_protocol.py" + (" --quick" if args.quick else "")
        write_section("bench_protocol", "SYSU-MM01 protocol (10 trials)", body, command, doc=args.doc)


if __name__ == "__main__":
    main()
