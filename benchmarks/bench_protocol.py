"""Benchmark: the full SYSU-MM01 all-search single-shot protocol (10 trials) at the real sizes.

A fake pool with the real test-set shape: 96 identities, 3,803 infrared queries (camera 3: 1,883,
camera 6: 1,920) and 20 visible images per identity and camera in the cameras where the real test
identities appear (cam1/cam2: 56 identities, cam4: 94, cam5: 95 -> 301 gallery images per trial),
2048-d features. Both precisions of ``sysu_protocol`` (``"fp32"``: one query x union-of-galleries
product, then all trials ranked in one batched pass; ``"auto"``: the certified bf16 screen where a
bf16 product is fast, falling back to fp32 when the bound cannot decide) are timed against the plain
loop (per trial: the distances of that gallery, then ``evaluate_ranking_loop``); all metrics must
agree to 1e-6. The screen's statistics (how many query rows and comparisons the bf16 bound leaves
undecided) are measured over all rows.

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
from _report import DOC, times_by_threads, write_section  # noqa: E402
from vireid.data.records import INFRARED, VISIBLE, ImageRecord  # noqa: E402
from vireid.evaluation import evaluate_ranking_loop, pairwise_distance  # noqa: E402
from vireid.evaluation.distance import SCREEN_MARGIN, bf16_matmul_is_fast, bf16_screen, prepare_screen  # noqa: E402
from vireid.evaluation.metrics import TrialTable, rank_trials, undecided_comparisons  # noqa: E402
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


def _setup(features: torch.Tensor, pool: list[ImageRecord], trials: int):
    draws = _sysu_gallery_draws(pool, "all", 1, range(trials), "seeded", None)
    union = np.unique(np.concatenate(draws))
    q = np.array([i for i, r in enumerate(pool) if r.modality == INFRARED])
    pids = np.array([r.pid for r in pool])
    cams = np.array([r.camid for r in pool])
    cols = [np.searchsorted(union, g) for g in draws]
    table = TrialTable.build(pids[q], pids[union], cols, cams[q], cams[union], "sysu", features.device)
    return draws, union, q, table


def breakdown(features: torch.Tensor, pool: list[ImageRecord], trials: int) -> dict[str, float]:
    """Time the stages of the fp32 path separately (same steps as the runner)."""
    t0 = time.perf_counter()
    _sysu_gallery_draws(pool, "all", 1, range(trials), "seeded", None)
    t1 = time.perf_counter()
    _, union, q, table = _setup(features, pool, trials)
    q_u = pairwise_distance(features[q], features[union])
    t2 = time.perf_counter()
    rank_trials(q_u, table, dedup_cmc=True)
    t3 = time.perf_counter()
    screen = prepare_screen(features[q], features[union])
    z, w = bf16_screen(screen)
    t4 = time.perf_counter()
    return {"draw": t1 - t0, "distance": t2 - t1, "rank": t3 - t2, "screen": t4 - t3, "union": len(union)}


def screen_statistics(features: torch.Tensor, pool: list[ImageRecord], trials: int) -> dict[str, float]:
    """Over all query rows: rows and (other-identity entry, correct match) comparisons the bf16
    bound leaves undecided, and the median half-width of the bound."""
    _, union, q, table = _setup(features, pool, trials)
    screen = prepare_screen(features[q], features[union])
    z, w = bf16_screen(screen)
    undecided = undecided_comparisons(z, w, table, near_zero=SCREEN_MARGIN)
    keep = table.keep(slice(0, len(q)))
    positions, real = table.correct_positions(slice(0, len(q)))
    own = table.label.unsqueeze(0) == table.q_label[:, None, None]
    num_correct = (real & keep.gather(2, positions)).sum(dim=2)  # [Q, T]
    comparisons = int(((keep & ~own).sum(dim=2) * num_correct).sum())
    return {
        "rows_undecided": float((undecided > 0).double().mean()),
        "comparisons_undecided": float(undecided.sum()) / max(comparisons, 1),
        "comparisons": comparisons,
        "median_half_width": float(w.median()),
    }


def _max_diff(result, reference) -> float:
    diffs = []
    for fast, ref in zip(result.trials, reference):
        ref_pct = {"rank1": ref["cmc"][0], "rank5": ref["cmc"][4], "rank10": ref["cmc"][9], "rank20": ref["cmc"][19]}
        ref_pct.update(mAP=ref["mAP"], mINP=ref["mINP"])
        diffs += [abs(fast[k] / 100.0 - ref_pct[k]) for k in METRIC_KEYS]
    return max(diffs)


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

    default_threads = torch.get_num_threads()
    results, times = {}, {}
    for precision in ("fp32", "auto"):
        results[precision] = sysu_protocol(features, pool, trials=trials, draw="seeded", precision=precision)  # warm-up
        times[precision] = times_by_threads(
            lambda: sysu_protocol(features, pool, mode="all", shots=1, trials=trials, draw="seeded", precision=precision),
            repeats,
        )
    stages = breakdown(features, pool, trials)
    stats = screen_statistics(features, pool, trials)

    t0 = time.perf_counter()
    reference = loop_reference(features, pool, trials)
    loop_time = time.perf_counter() - t0
    diff = {p: _max_diff(results[p], reference) for p in results}
    max_diff = max(diff.values())
    agree = max_diff <= 1e-6

    result = results["auto"]
    auto_info = result.settings["precision"]
    median = {p: statistics.median(times[p][default_threads]) for p in times}
    best = {p: min(times[p][default_threads]) for p in times}
    one = {p: (statistics.median(times[p][1]), min(times[p][1])) for p in times}
    fastest = min(median.values())
    n_query = result.settings["num_query"]
    n_gallery = result.trials[0]["num_gallery"]
    verdict = "met" if fastest < TARGET_S else "missed"
    bf16 = "yes" if bf16_matmul_is_fast("cpu") else "no"
    body = f"""Full SYSU-MM01 all-search single-shot protocol, {trials} trials (seeded draw), fake pool at
the real test-set sizes: {n_query} infrared queries, {n_gallery} gallery images per trial drawn from
{sum(r.modality == VISIBLE for r in pool)} visible images of {num_ids} identities, {dim}-d features.
`precision="fp32"`: one query x union-of-galleries fp32 distance product, then all trials ranked in
one batched pass. `precision="auto"` (default): on a CPU with bf16 units (this one: {bf16}) a
certified bf16 screen first; it ranks only when its rigorous error bound decides every comparison of
every query, otherwise the fp32 distances are computed as in the fp32 path. Loop = per trial the
distances of that gallery + `evaluate_ranking_loop`. Load average at start: {load:.2f} (other jobs
on the machine inflate the figures).

| | fp32 (s) | auto (s) |
|---|---|---|
| {default_threads} threads, median of {repeats} | {median['fp32']:.3f} | {median['auto']:.3f} |
| {default_threads} threads, best of {repeats} | {best['fp32']:.3f} | {best['auto']:.3f} |
| 1 thread, median / best of {repeats} | {one['fp32'][0]:.3f} / {one['fp32'][1]:.3f} | {one['auto'][0]:.3f} / {one['auto'][1]:.3f} |

Path taken by auto: **{auto_info['path']}** ({auto_info['reason']}; {auto_info.get('screened_rows', 0)} rows
screened before the decision).

| stage (fp32 path, {default_threads} threads) | time (s) |
|---|---|
| gallery draws | {stages['draw']:.3f} |
| query x union distances ({n_query} x {stages['union']} x {dim}) | {stages['distance']:.3f} |
| batched ranking, {trials} trials | {stages['rank']:.3f} |
| (bf16 screen of all rows, with its bound) | {stages['screen']:.3f} |
| plain loop | {loop_time:.3f} |
| speed-up (loop / fastest median) | {loop_time / fastest:.1f}x |

bf16 screen over all rows: median certified half-width {stats['median_half_width']:.2e} (in units of the
similarity); {100 * stats['comparisons_undecided']:.2f} % of the {stats['comparisons']:,} (other-identity
entry, correct match) comparisons and {100 * stats['rows_undecided']:.1f} % of the query rows are left undecided, so
on this data the screen cannot replace the fp32 product (one undecided comparison needs the fp32 values of its
row, and the fp32 product's rounding is only reproduced by the identical full-size call).

Metrics vs loop: max abs difference fp32 {diff['fp32']:.2e}, auto {diff['auto']:.2e} over all trials and
metrics ({'agree to 1e-6' if agree else 'DISAGREE'}). Mean: rank-1 {result.mean['rank1']:.2f} %,
mAP {result.mean['mAP']:.2f} %, mINP {result.mean['mINP']:.2f} %.

Target < {TARGET_S} s: **{verdict}** (fastest median {fastest:.3f} s). The fp32 distance product alone
is {n_query} x {stages['union']} x {dim} multiply-adds (about {2 * n_query * stages['union'] * dim / 1e9:.0f} GFLOP),
which bounds the exact path from below on this CPU."""
    print(body)
    if not agree:
        raise SystemExit(f"fast path and loop disagree: max abs difference {max_diff:.3e}")
    if not args.no_write:
        command = "python benchmarks/bench_protocol.py" + (" --quick" if args.quick else "")
        write_section("bench_protocol", "SYSU-MM01 protocol (10 trials)", body, command, doc=args.doc)


if __name__ == "__main__":
    main()
