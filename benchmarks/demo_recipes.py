"""The recipe search behind the demo's config ``demo_synth`` (a stronger demo in the same time), written into
the "demo-recipes" section of docs/results.md.

Every candidate is ``baseline_synth`` (the base recipe ``demo_synth`` extends; the demo trained it as it is
until this search) with a few overrides, trained from scratch
on the demo's own synthetic data (200 identities, 64x32, seed 0: the same images, split and test identities as
``make demo``) and evaluated on the unseen test identities with the demo's protocols (sysu-all-single and
sysu-indoor-single, 10 seeded gallery draws). The table gives each candidate's training time (the sum of its
epochs' seconds, from the run's train_summary.json; validation excluded) next to its accuracy. Runs already
finished in ``--out`` are reused (also runs made with ``vireid train --config baseline_synth <overrides>
name=<candidate> output_dir=<out>``), so candidates can be trained by two processes at once (``--rows``, one
thread each) and the table written at the end. Times of runs trained side by side on a 2-core machine are not the
demo's time: ``benchmarks/bench_demo.py`` times the demo itself.

    python benchmarks/demo_recipes.py                       # every candidate, one thread each
    python benchmarks/demo_recipes.py --rows r64e40 tone40  # train some rows only (then run without --rows)
    python benchmarks/demo_recipes.py --quick --doc /tmp/results.md
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import SMOKE_BANNER, command_line, shipped_config, table_parser, train_once, write_section  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SECTION = "demo-recipes"
TITLE = "The demo's recipe: what was tried (synthetic data)"
TONE = "augment.steps=[{type: tone_curve, before: normalize, p: 0.5}]"
#: name -> (overrides of baseline_synth, what it changes)
CANDIDATES = {
    "e14": (["train.epochs=14", "augment.steps=[]"], "the previous demo recipe: 14 epochs at 64x32"),
    "r128e14": (["train.epochs=14", "augment.steps=[]", "data.height=128", "data.width=64"],
                "input upsampled to 128x64 (the same 64x32 images)"),
    "tone14": (["train.epochs=14", TONE], "tone curve (p 0.5, 4 knots)"),
    "r64e40": (["train.epochs=40", "augment.steps=[]"], "40 epochs"),
    "tone40": (["train.epochs=40", TONE], "tone curve (p 0.5, 4 knots), 40 epochs"),
    "tone05k8_e40": (["train.epochs=40", TONE.replace("p: 0.5", "p: 0.5, knots: 8")],
                     "tone curve (p 0.5, 8 knots), 40 epochs"),
    "tone40_s1": (["train.epochs=40", TONE, "seed=1"], "tone curve (p 0.5, 4 knots), 40 epochs, training seed 1"),
    "tone05k8_e40_s1": (["train.epochs=40", TONE.replace("p: 0.5", "p: 0.5, knots: 8"), "seed=1"],
                        "tone curve (p 0.5, 8 knots), 40 epochs, training seed 1"),
}
QUICK = ["data.synth.ids=12", "data.synth.images_per_camera=2", "sampler.num_ids=3", "sampler.num_per_modality=2",
         "sampler.epoch_length=2", "train.epochs=1", "train.eval_every=1", "eval.trials=2"]
METRICS = (("rank1", "Rank-1"), ("mAP", "mAP"), ("mINP", "mINP"))


def _mean_std(result: dict) -> tuple[dict, dict]:
    """Mean and standard deviation (percent) of a stored protocol result's trials."""
    trials = result["trials"]
    keys = [k for k, _ in METRICS]
    mean = {k: statistics.fmean(t[k] for t in trials) for k in keys}
    std = {k: statistics.pstdev(t[k] for t in trials) if len(trials) > 1 else 0.0 for k in keys}
    return mean, std


def main() -> None:
    ap = table_parser(__doc__, REPO / "runs" / "demo-recipes", "tiny data, one short epoch per candidate (a smoke test)")
    ap.add_argument("--rows", nargs="*", default=None, help=f"train only these candidates ({', '.join(CANDIDATES)})")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per training")
    args = ap.parse_args()
    unknown = [r for r in args.rows or () if r not in CANDIDATES]
    if unknown:
        raise SystemExit(f"unknown candidate {unknown[0]!r}; choose from {', '.join(CANDIDATES)}")

    from vireid.workflows.evaluate_run import evaluate_run

    common = [f"data.root={args.out / 'data'}", f"output_dir={args.out}", f"train.threads={args.threads}",
              "train.progress=false"]
    quick = QUICK if args.quick else []  # after each candidate's overrides: one short epoch whatever they say
    rows = args.rows if args.rows is not None else list(CANDIDATES)
    lines_by_protocol: dict[str, list[str]] = {}
    val_by_recipe: dict[str, list[float]] = {}  # recipe (candidate name without its _s<seed> suffix) -> best val mAP
    for name in rows:
        overrides, what = CANDIDATES[name]
        make = shipped_config("baseline_synth", common + overrides + quick + [f"name={name}"])
        folder = args.out / name
        if args.retrain or not (folder / "best.pt").is_file() or not (folder / "train_summary.json").is_file():
            train_once(folder, make, retrain=True)
        summary = json.loads((folder / "train_summary.json").read_text())
        seconds = sum(float(h.get("seconds", 0.0)) for h in summary["history"])
        best = summary.get("best_epoch", "?")
        best_val = 100 * float(summary.get("best_val_mAP", float("nan")))
        val_by_recipe.setdefault(re.sub(r"_s\d+$", "", name), []).append(best_val)
        print(f"{name}: {seconds:.0f} s of training (best epoch {best})", flush=True)
        if args.rows is not None:
            continue
        cfg = make()
        stored = folder / "test_results.json"
        if stored.is_file():  # written by `vireid train` at its end, from the same best.pt
            entries = [(r["name"], _mean_std(r)) for r in json.loads(stored.read_text()) if not r["settings"].get("rerank")]
        else:
            entries = [(e.name, (e.mean, e.std)) for e in
                       evaluate_run(folder, device="cpu", progress=False, quiet=True, verification=False)]
        for protocol, (mean, std) in entries:
            cells = " | ".join(f"{mean[k]:.2f} ± {std[k]:.2f}" for k, _ in METRICS)
            lines_by_protocol.setdefault(protocol, []).append(
                f"| {name} | {what} | {cfg.data.height}x{cfg.data.width} | {cfg.train.epochs} | {best} | {best_val:.2f} | "
                f"{seconds / 60:.1f} min | {cells} |")
    if args.rows is not None:
        return

    tables = []
    for protocol, lines in lines_by_protocol.items():
        tables += [f"### {protocol} (test identities; mean ± std over the gallery draws, %)", "",
                   "| candidate | change | input | epochs | best epoch (val) | val mAP | training time | "
                   + " | ".join(h for _, h in METRICS) + " |",
                   "|---|---|---|---|---|---|---|" + "---|" * len(METRICS), *lines, ""]
    means = {recipe: statistics.fmean(v) for recipe, v in val_by_recipe.items()}
    chosen = max(means, key=means.get)
    choice = ("Selection uses the validation identities only (never the test columns): best validation mAP per recipe, "
              "averaged over its training seeds: " + ", ".join(f"{r} {m:.2f} ({len(val_by_recipe[r])} seed"
                                                              f"{'s' if len(val_by_recipe[r]) > 1 else ''})"
                                                              for r, m in sorted(means.items(), key=lambda kv: -kv[1]))
              + f". The highest is **{chosen}**.")
    body = "\n".join([
        "Each candidate is `baseline_synth` with the overrides named, trained once from scratch (training seed 0 "
        "unless the row says otherwise) on the demo's "
        f"data ({'tiny smoke data' if args.quick else '200 identities, 64x32, seed 0'}) with {args.threads} torch "
        "thread(s) (a run found in the folder keeps the threads it was trained with), the checkpoint chosen on the "
        "validation identities, then evaluated on the test identities. The "
        "training time is the sum of the epochs' wall seconds (`make demo` adds data generation, the reference "
        "matchers, validation and the evaluation); candidates trained two at a time on 2 cores, or beside other jobs, "
        "show two or more times the time they take alone. In bf16 the same recipe gives somewhat different numbers "
        "with another thread count (reductions are split differently): the demo's own run is in docs/benchmarks.md, "
        "\"The demo\". One seed per candidate: training randomness moves all-search mAP by 1-2 points, so only larger "
        "differences are findings.",
        "",
        choice,
        "",
        *tables,
    ])
    if args.quick:
        body = SMOKE_BANNER + body
    command = command_line("demo_recipes.py", ap, args, ["quick", "threads"])
    write_section(SECTION, TITLE, body, command, doc=args.doc)
    print("\n".join(tables))
    print(f"written to {args.doc}")


if __name__ == "__main__":
    main()
