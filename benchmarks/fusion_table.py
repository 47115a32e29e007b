"""Multi-modal fusion (the survey §4.1/§4.2) on paired synthetic data: early / late (average, vote) /
attention fusion against single-modality use of the models and a two-stream single-image baseline,
written into the "Multi-modal fusion (the survey §4.2)" section of docs/results.md.

Every model is trained from its shipped config (``fusion_{early,late,attention}_synth``; the baseline is
``fusion_late_synth`` with the ``baseline`` method of ``baseline_synth``) on the same paired synthetic
RegDB-layout data, then evaluated with ``vireid eval-fusion``'s protocol (each test identity's moments
split into query and gallery moments, 10 random splits, plain CMC).

    python benchmarks/fusion_table.py [--out runs/fusion-table] [--threads 1] [--retrain]
    python benchmarks/fusion_table.py --quick --doc /tmp/results.md     # seconds-long smoke run
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import SMOKE_BANNER, table_parser, train_once, write_section  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SECTION = "fusion-table"
TITLE = "Multi-modal fusion (the survey §4.2)"
#: (query, gallery) columns of the table.
COMBOS = (("visible", "visible"), ("infrared", "infrared"), ("infrared", "visible"),
          ("fused", "fused"), ("fused", "visible"), ("fused", "infrared"))
SHORT = {"visible": "V", "infrared": "I", "fused": "F"}
QUICK = ["data.synth.ids=8", "data.synth.images_per_camera=3", "sampler.num_ids=3", "sampler.num_per_modality=2",
         "sampler.epoch_length=2", "train.epochs=1"]


def model_specs() -> list[tuple[str, str, list[str], tuple[str, ...]]]:
    """(label, config, extra overrides, fusion levels to evaluate) per trained model."""
    baseline = ["model.method=baseline", "model.params={backbone: resnet10t, specific_stages: 1, last_stride: 1, "
                "pooling: gem, non_local: null}"]
    return [
        ("two-stream baseline", "fusion_late_synth", baseline, ("average",)),
        ("early fusion", "fusion_early_synth", [], ("embedding",)),
        ("late fusion", "fusion_late_synth", [], ("average", "vote")),
        ("attention fusion", "fusion_attention_synth", [], ("embedding",)),
    ]


def load(config: str, overrides: list[str]):
    from vireid.workflows.train_run import resolve_config
    from vireid.config import load_config

    cfg = load_config(resolve_config(config), [o for o in overrides if not o.startswith("model.params=")])
    for o in overrides:  # a whole params mapping replaces the config's one (overrides merge keys)
        if o.startswith("model.params="):
            import yaml

            cfg.model.params = yaml.safe_load(o.split("=", 1)[1])
    return cfg


def main() -> None:
    ap = table_parser(__doc__, REPO / "runs" / "fusion-table", 'tiny data, one short epoch, 2 trials (a smoke test)')
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per training")
    ap.add_argument("--trials", type=int, default=10, help="query/gallery splits per evaluation")
    args = ap.parse_args()

    from vireid.workflows.evaluate_fusion import evaluate_fusion_checkpoint

    trials = 2 if args.quick else args.trials
    common = [f"data.root={args.out / 'data'}", f"output_dir={args.out}", f"train.threads={args.threads}",
              "train.progress=false", "train.device=cpu", "data.workers=1"] + (QUICK if args.quick else [])
    rows, seconds = [], {}
    for label, config, extra, levels in model_specs():
        name = label.replace(" ", "_").replace("-", "_")
        cfg = load(config, common + extra + [f"name={name}"])
        folder, seconds[label] = train_once(args.out / name, lambda: cfg, args.retrain)
        for level in levels:
            results = evaluate_fusion_checkpoint(folder, fusion=level, trials=trials, device="cpu", progress=False,
                                                 write=False)
            by_combo = {(r["query"], r["gallery"]): r for r in results}
            rows.append((label, level, by_combo, cfg))
        print(f"{label}: trained in {seconds[label]:.0f} CPU-s", flush=True)

    head = "| model | fusion | " + " | ".join(f"{SHORT[q]}→{SHORT[g]} R1 / mAP" for q, g in COMBOS) + " |"
    lines = [head, "|" + "---|" * (2 + len(COMBOS))]
    for label, level, by_combo, _ in rows:
        cells = [f"{100 * by_combo[c]['rank1']:.1f} / {100 * by_combo[c]['mAP']:.1f}" for c in COMBOS]
        lines.append(f"| {label} | {level} | " + " | ".join(cells) + " |")
    cfg = rows[0][3]
    s = cfg.data.synth
    body = "\n".join([
        "Paired synthetic data (`data.format: synthetic-regdb`, one co-located visible + thermal camera pair, "
        f"both images of a moment rendered from one pose): {s.ids} identities x {s.images_per_camera} moments, "
        f"{s.height}x{s.width}, RegDB trial 1 (half of the identities train, half test). Every model is a "
        f"ResNet-10-T from scratch, epochs: {cfg.train.epochs}, the recipe of `fusion_late_synth.yaml`; the "
        "baseline is the two-stream `baseline` method (modality-specific stem) trained on the same pairs.",
        "",
        "Evaluation (`vireid eval-fusion`): each test identity's moments are split at random into query and gallery "
        f"moments, mean over {trials} splits. V = visible image, I = infrared image, F = the fused pair. The V→V and "
        "I→I columns use one modality of the model only (single-modality retrieval), I→V is the usual "
        "cross-modality task; F→F / F→V / F→I query with both images of a moment. *fusion*: `embedding` = the "
        "model's fused embedding; `average` / `vote` = decision-level late fusion of the single-modality "
        "distances (weighted average, or weighted rank voting), which for the baseline means fusing its "
        "single-image results.",
        "",
        "Rank voting gives every ballot the same say whatever its quality: when a fused query meets a "
        "single-modality gallery, one ballot is a cross-modality comparison (far weaker than a same-modality "
        "one), which averaging distances tolerates better than voting.",
        "",
        *lines,
        "",
        "Training CPU time per model (all threads of the process; generating the data on first use included): "
        + ", ".join(f"{k} {v / 60:.1f} min" for k, v in seconds.items()) + ".",
    ])
    if args.quick:
        body = SMOKE_BANNER + body
    command = "python benchmarks/fusion_table.py" + (" --quick" if args.quick else "") + \
        (f" --threads {args.threads}" if args.threads != 1 else "")
    doc = args.doc
    write_section(SECTION, TITLE, body, command, doc=doc)
    print("\n".join(lines))
    print(f"written to {doc}")


if __name__ == "__main__":
    main()
