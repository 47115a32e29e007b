"""Learning with few or no labels on synthetic data, written into the "Unsupervised and semi-supervised"
section of docs/results.md.

At one training budget (the same epochs, batches per epoch, model and optimiser for every row): the
unsupervised recipe (``usl_synth``: no identity label), the semi-supervised one with 10 % and 30 % of the
training identities labelled (``semi_synth``), and the supervised demo recipe (``baseline_synth``: all
labels); against random features (chance) and the colour-histogram matcher (``vireid.baselines``). Every
model is trained from scratch (ResNet-10-T, 64 x 32, one CPU thread) on one synthetic SYSU-MM01-layout
dataset and evaluated on its test identities (sysu-all-single, seeded galleries). A second table follows
the pseudo-labels of the unsupervised run over its re-clusterings (the ``cluster`` records of its
``metrics.jsonl``). Runs already finished in ``--out`` are reused, so the rows can be trained by several
processes (``--rows``) and the table written at the end.

    python benchmarks/usl_table.py --seeds 0 1 2            # three seeds at the default budget
    python benchmarks/usl_table.py --seeds 0 1 2 --epochs 30 --batches 40 --out runs/usl-table-long
    python benchmarks/usl_table.py --seeds 0 --rows usl semi10   # train some rows only, no table
    python benchmarks/usl_table.py --quick --doc /tmp/results.md # smoke run
    python benchmarks/usl_table.py --published-only              # only the published figures, no training
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import RESULTS_DOC, write_section  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SECTION = "usl"
TITLE = "Unsupervised and semi-supervised training (synthetic data)"
SIZE = {"ids": 90, "images_per_camera": 4, "epochs": 6, "batches": 20, "trials": 5}
QUICK = {"ids": 24, "images_per_camera": 3, "epochs": 2, "batches": 2, "trials": 2}
#: row name -> (config, overrides, label)
ROWS = {
    "usl": ("usl_synth", [], "unsupervised (usl_synth, no label)"),
    "semi10": ("semi_synth", ["data.labelled_fraction=0.1"], "semi-supervised, 10 % identities labelled"),
    "semi30": ("semi_synth", ["data.labelled_fraction=0.3"], "semi-supervised, 30 % identities labelled"),
    "supervised": ("baseline_synth", [], "supervised (baseline_synth, all labels)"),
}
PROTOCOL = "sysu-all-single"

#: What the real-data recipes aim at: SYSU-MM01 all-search single-shot and RegDB visible-to-thermal
#: (rank-1 / mAP, %), each with where the figure was read; a method whose figures no stored source holds says so.
PUBLISHED = [
    ("PGM (Wu & Ye, CVPR 2023)", "56.29 / 51.36", "69.03 / 64.04 (trial 5 only, last epoch)",
     "the authors' released training logs: zesenwu23/USL-VI-ReID training_logs_example/SYSU-MM01/sysu_s1_s2.log "
     "(all-search \"All Average\" of the best model; mINP 35.06) and RegDB/regdb_s1_s2.log"),
    ("ADCA (Yang et al., ACM MM 2022)", "not listed", "not listed",
     "no stored source holds its figures: the authors' yangbincv/ADCA README.md (every stored version) and "
     "repository list none, so none are quoted"),
    ("SDCL (Yang, Chen & Ye, CVPR 2024)", "mAP 63.24 (rank-1 not given)", "not listed",
     "second-hand: the \"Paper Targets\" of a third-party reproduction, yucking/VI-ReID_SDCL_CVPR2024 "
     "docs/research/BASELINE_FREEZE.md (all-search mAP / mINP 63.24 / 51.06); the authors' yangbincv/SDCL "
     "README.md lists no figures"),
    ("CEIL (camera-proxy enhanced identity-recalibration learning, IEEE TCSVT 2025)", "68.19 / 63.68 "
     "(86.75 / 83.97 with its GCR re-ranking)", "91.97 / 89.13 (94.30 / 95.29 with GCR)",
     "the authors' maybeextra/CEIL README.md, \"Performance\" tables (mINP 48.65 on SYSU-MM01, 82.75 on RegDB "
     "without re-ranking)"),
]


def published_lines() -> list[str]:
    """The "What the real-data recipes target" subsection (markdown lines) of :data:`PUBLISHED`."""
    lines = ["", "### What the real-data recipes target", "",
             "`usl_sysu`, `usl_regdb` and `semi_sysu` follow ADCA's / PGM's recipe; these are the figures the "
             "published unsupervised methods report (rank-1 / mAP, %), not numbers vireid has reproduced (no real "
             "dataset and no GPU were available for this work). SDCL (a ViT) and CEIL (CLIP-initialised, per an "
             "earlier version of its README, and with a re-ranking of its own) are stronger models than these ResNet-50 recipes; they show where the field "
             "is, not what the recipes should reach:", "",
             "| Method | SYSU-MM01 all-search | RegDB visible to thermal | Source |", "|---|---|---|---|"]
    return lines + [f"| {m} | {s} | {r} | {src} |" for m, s, r, src in PUBLISHED]


def rewrite_published(doc: Path) -> None:
    """Replace only the published-figures subsection of the section in ``doc`` (the trained tables, their
    command and run stamp stay as the last full run wrote them): no training, no evaluation."""
    import re

    text = doc.read_text()
    pattern = re.compile(rf"(<!-- BEGIN {SECTION} -->\n.*?)\n### What the real-data recipes target\n.*?"
                         rf"(\n<!-- END {SECTION} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"{doc} has no '{SECTION}' section with a published-figures part; run the full table first")
    text = pattern.sub(lambda m: m.group(1) + "\n".join(published_lines()) + m.group(2), text)
    doc.write_text(text)


def make_data(out: Path, size: dict) -> Path:
    from vireid.data.synth import generate_dataset

    root = out / "data"
    generate_dataset(root, ids=size["ids"], format="sysu-mm01", images_per_camera=size["images_per_camera"],
                     height=64, width=32, seed=0, workers=1, progress=False)
    return root


def overrides_for(row: str, seed: int, root: Path, out: Path, size: dict) -> list[str]:
    config, extra, _ = ROWS[row]
    half = max(size["epochs"] // 2, 1)
    common = [f"name={row}-s{seed}", f"output_dir={out}", f"seed={seed}", f"data.root={root}",
              f"data.synth.ids={size['ids']}", f"data.synth.images_per_camera={size['images_per_camera']}",
              f"train.epochs={size['epochs']}", f"sampler.epoch_length={size['batches']}", "train.eval_every=0",
              "train.select_best=last", "train.threads=1", "train.progress=false", "train.device=cpu",
              "data.workers=1", f"eval.trials={size['trials']}", f"eval.protocols=[{PROTOCOL}]"]
    if config != "baseline_synth":
        common.append(f"losses.cluster_memory.params.cross_start_epoch={half}")
        if size is QUICK:  # a few images per identity: smaller neighbourhoods (as tests/data/test_usl.py)
            common += ["losses.cluster_memory.params.k1=6", "losses.cluster_memory.params.k2=2",
                       "losses.cluster_memory.params.min_samples=2", "losses.cluster_memory.params.eps=0.6",
                       "sampler.num_ids=2"]
    return common + extra


def train_row(row: str, seed: int, root: Path, out: Path, size: dict) -> Path:
    from vireid.workflows.train_run import resolve_config, run_training
    from vireid.config import load_config

    folder = out / f"{row}-s{seed}"
    if (folder / "test_results.json").is_file():
        return folder
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    cfg = load_config(resolve_config(ROWS[row][0]), overrides_for(row, seed, root, out, size))
    t0 = time.process_time()
    run_training(cfg, folder, evaluate=True)
    (folder / "table_train_cpu_seconds.txt").write_text(f"{time.process_time() - t0:.1f}\n")
    return folder


def result_of(folder: Path) -> dict:
    rows = json.loads((folder / "test_results.json").read_text())
    return next(r for r in rows if r["name"] == PROTOCOL)["mean"]


def references(root: Path, size: dict) -> dict[str, dict]:
    from vireid.workflows.demo import baseline_results
    from vireid.workflows.train_run import resolve_config
    from vireid.config import load_config
    from vireid.data.build import prepare_dataset

    cfg = load_config(resolve_config("baseline_synth"), [f"data.root={root}", f"eval.trials={size['trials']}",
                                                         "data.workers=1", f"eval.protocols=[{PROTOCOL}]"])
    dataset = prepare_dataset(cfg.data, progress=False, generate=False)
    out = {}
    for res in baseline_results(dataset, cfg, progress=False):
        if res.name == PROTOCOL and "method" in res.settings:
            out[res.settings["method"]] = res.mean
    return out


def fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"


def _reading(out: Path, seeds: list[int], size: dict, refs: dict[str, dict]) -> str:
    """The "Reading" paragraph, computed from the runs: each trained row against random features (chance), with
    the seed spread, and the last pseudo-label purity of the unsupervised run."""
    from vireid.engine.run_logging import read_metrics

    chance = next((m["mAP"] for name, m in refs.items() if "random" in name), float("nan"))
    steps = size["epochs"] * size["batches"]
    verdicts = []
    for row, (_, _, label) in ROWS.items():
        maps = [result_of(out / f"{row}-s{s}")["mAP"] for s in seeds if (out / f"{row}-s{s}" / "test_results.json").is_file()]
        if not maps:
            continue
        mean, std = float(np.mean(maps)), float(np.std(maps, ddof=1)) if len(maps) > 1 else 0.0
        above = len(maps) > 1 and min(maps) > chance and mean - chance > 2 * std
        verdict = ("above chance in every seed, by more than twice the seed spread" if above
                   else "not distinguishable from chance at this spread")
        verdicts.append(f"{label}: {mean - chance:+.2f} mAP over chance ({verdict})")
    cluster = [r for r in read_metrics(out / f"usl-s{seeds[0]}") if r["kind"] == "cluster"] if (out / f"usl-s{seeds[0]}").is_dir() else []
    purity = (f" The unsupervised run's last re-clustering (seed {seeds[0]}) has pairwise precision "
              f"{cluster[-1]['pair_precision']:.3f} and recall {cluster[-1]['pair_recall']:.3f} (ARI {cluster[-1]['ari']:.3f}): "
              "features of a network trained from scratch on few identities are a weak start for clustering, which is "
              "why the real-data recipes start from ImageNet weights.") if cluster else ""
    return (f"Reading ({steps} optimiser steps per run from scratch, {len(seeds)} seed{'s' if len(seeds) > 1 else ''}; "
            f"random features give {chance:.2f} mAP): " + "; ".join(verdicts) + "." + purity)


def write_table(out: Path, root: Path, seeds: list[int], size: dict, doc: Path, command: str) -> None:
    from vireid.engine.run_logging import read_metrics

    refs = references(root, size)
    spread = f"mean ± std over {len(seeds)} training seeds" if len(seeds) > 1 else "one training seed"
    lines = [f"### {PROTOCOL} (mean over {size['trials']} gallery draws; {spread}, %)", "",
             "| Training | labels used | rank-1 | mAP | mINP | train CPU s |", "|---|---|---|---|---|---|"]
    for method, mean in refs.items():
        lines.append(f"| {method} | none | {mean['rank1']:.2f} | {mean['mAP']:.2f} | {mean['mINP']:.2f} | 0 |")
    used = {"usl": "0 %", "semi10": "10 % of identities", "semi30": "30 % of identities", "supervised": "100 %"}
    for row, (_, _, label) in ROWS.items():
        folders = [out / f"{row}-s{s}" for s in seeds if (out / f"{row}-s{s}" / "test_results.json").is_file()]
        if not folders:
            continue
        res = [result_of(f) for f in folders]
        cpu = [float((f / "table_train_cpu_seconds.txt").read_text()) for f in folders]
        lines.append(f"| {label} | {used[row]} | {fmt([r['rank1'] for r in res])} | {fmt([r['mAP'] for r in res])} | "
                     f"{fmt([r['mINP'] for r in res])} | {np.mean(cpu):.0f} |")
    quality = ["", f"### Pseudo-labels of the unsupervised run (seed {seeds[0]}) at each re-clustering", "",
               "ARI / NMI / pairwise precision and recall compare the cross-modality pseudo-labels (visible and "
               "infrared clusters joined by the association) with the true identities of the training images; the "
               "per-modality ARI scores each modality's clustering before association. All are logged, never used "
               "for training.", "",
               "| epochs done | clusters visible / infrared | outliers | association cost | ARI visible / infrared "
               "(each modality alone) | ARI | NMI | pair precision | pair recall |",
               "|---|---|---|---|---|---|---|---|---|"]
    for r in (r for r in read_metrics(out / f"usl-s{seeds[0]}") if r["kind"] == "cluster"):
        alone = (f"{r['ari_visible']:.3f} / {r['ari_infrared']:.3f}" if "ari_visible" in r else "not logged")
        quality.append(f"| {r['epoch']} | {r['clusters_visible']} / {r['clusters_infrared']} | {100 * r['outliers']:.1f} % | "
                       f"{r['association_cost']:.3f} | {alone} | {r['ari']:.3f} | {r['nmi']:.3f} | "
                       f"{r['pair_precision']:.3f} | {r['pair_recall']:.3f} |")
    published = published_lines()
    intro = (f"Synthetic SYSU-MM01-layout data ({size['ids']} identities, {size['images_per_camera']} images per camera, "
             f"64 x 32), every model a ResNet-10-T from scratch trained for {size['epochs']} epochs of {size['batches']} "
             "batches (8 identities or pseudo-identities x (4 visible + 4 infrared)), the last epoch evaluated. The "
             f"unsupervised and semi-supervised rows re-cluster every epoch and add the cross-modality term from epoch "
             f"{max(size['epochs'] // 2, 1) + 1}. {len(seeds)} training seed{'s' if len(seeds) > 1 else ''} "
             f"({', '.join(map(str, seeds))}).")
    reading = _reading(out, seeds, size, refs)
    body = "\n".join([intro, "", *lines, "", reading, *quality, *published])
    write_section(SECTION, TITLE, body, command, doc=doc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "usl-table", help="folder of the runs and data")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rows", nargs="+", choices=list(ROWS), help="train only these rows (no table written)")
    ap.add_argument("--epochs", type=int, help=f"training epochs of every row (default {SIZE['epochs']})")
    ap.add_argument("--batches", type=int, help=f"batches per epoch (default {SIZE['batches']})")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    ap.add_argument("--doc", type=Path, default=RESULTS_DOC)
    ap.add_argument("--published-only", action="store_true",
                    help="rewrite only the published-figures part of the section (no training)")
    args = ap.parse_args()
    if args.published_only:
        rewrite_published(args.doc)
        print(f"rewrote the published figures of section {SECTION} in {args.doc}")
        return
    size = QUICK if args.quick else dict(SIZE)
    if not args.quick:
        size.update({k: v for k, v in (("epochs", args.epochs), ("batches", args.batches)) if v is not None})
    args.out.mkdir(parents=True, exist_ok=True)
    root = make_data(args.out, size)
    for seed in args.seeds:
        for row in args.rows or list(ROWS):
            print(f"[{row} seed {seed}] {train_row(row, seed, root, args.out, size)}", flush=True)
    if args.rows:
        return
    command = "python benchmarks/usl_table.py --seeds " + " ".join(map(str, args.seeds)) + (" --quick" if args.quick else "")
    command += "".join(f" --{k} {v}" for k, v in (("epochs", args.epochs), ("batches", args.batches)) if v is not None)
    write_table(args.out, root, args.seeds, size, args.doc, command)


if __name__ == "__main__":
    main()
