"""``vireid demo``: the main job on a fresh machine, end to end on the synthetic data.

1. generate the synthetic visible-infrared dataset (SYSU-MM01 layout) if it is absent;
2. evaluate two reference matchers under the SYSU-MM01 protocol: random features (the chance
   level) and a colour-histogram matcher (what colour alone achieves across modalities);
3. train a two-stream CNN on CPU (``configs/demo_synth.yaml``: baseline_synth.yaml with a tone-curve augmentation, no
   random erasing, AdamW and 50 epochs);
4. evaluate its best checkpoint (chosen on held-out validation identities; test-time flip, as the config sets) with
   and without k-reciprocal re-ranking, and print one table with everything side by side.

:func:`run_demo` is the job; ``vireid demo`` (:mod:`vireid.cli.demo`) parses its options. The run folder holds the config, checkpoints, metrics (JSON lines + TensorBoard), the training
curves plot and the results table.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from vireid.workflows.train_run import resolve_config


def _plain(text: str, bold: bool = False) -> None:
    print(text, flush=True)


def baseline_results(dataset, cfg, progress: bool = True) -> list:
    """SYSU-protocol results of random features and the colour-histogram matcher on ``dataset.test``."""
    import torch

    from vireid.baselines.color_histogram import color_histogram_features, random_features
    from vireid.data.build import build_image_cache
    from vireid.workflows.evaluate_model import evaluate_features, protocols_for

    names = protocols_for(dataset, cfg.eval.protocols)
    pool = list(dataset.test)
    cache = build_image_cache(pool, cfg.data, progress=progress)
    images = cache[list(range(len(pool)))].permute(0, 2, 3, 1).numpy()
    feats = {
        "random features (chance)": torch.as_tensor(random_features(len(pool), 256, seed=cfg.seed)),
        "colour histogram": torch.as_tensor(color_histogram_features(images)),
    }
    out = []
    for method, f in feats.items():
        out += evaluate_features(f.float(), dataset, names, metric="euclidean", trials=cfg.eval.trials,
                                 draw=cfg.eval.draw, method=method, npu_gallery=cfg.eval.npu_gallery)
    return out


def run_demo(config: str = "demo_synth", overrides: Sequence[str] = (), run_dir: Path = Path("runs/demo"),
             say: Callable[..., None] = _plain) -> list:
    """Generate synthetic data, evaluate reference matchers, train a two-stream model and evaluate it;
    ``say(text, bold=...)`` prints each line. Returns the results (reference matchers, then the trained model)."""
    from vireid.workflows.train_run import evaluate_checkpoint, run_training
    from vireid.config import save_config
    from vireid.plugins import user_config
    from vireid.data.build import prepare_dataset
    from vireid.engine.checkpoint import atomic_write_text
    from vireid.evaluation.protocols import format_results_table

    run_dir = Path(run_dir)
    t_start = time.perf_counter()
    cfg = user_config(resolve_config(config), overrides or [])
    say("[1/4] synthetic visible-infrared data", bold=True)
    dataset = prepare_dataset(cfg.data)
    splits = dataset.summary()["splits"]
    counts = ", ".join(f"{name} {v['ids']} ids / {v['images']} images" for name, v in splits.items() if v["images"])
    say(f"      {cfg.data.root}: {counts}")

    say("[2/4] reference matchers (random features = chance level, colour histogram)", bold=True)
    reference = baseline_results(dataset, cfg)

    say(f"[3/4] training {cfg.model.method} ({cfg.model.params.get('backbone', '')}) for {cfg.train.epochs} epochs on {cfg.train.device}", bold=True)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_training(cfg, run_dir, evaluate=False)

    say("[4/4] evaluation of the best checkpoint (without / with re-ranking)", bold=True)
    trained = evaluate_checkpoint(run_dir, rerank=[False, True], progress=True, quiet=True)
    for r in trained:
        r.settings["method"] = f"two-stream {cfg.model.params.get('backbone', '')} (trained)"
    table = format_results_table(reference + trained)
    minutes = (time.perf_counter() - t_start) / 60
    say("")
    say(table)
    say(f"\nrun folder: {run_dir} (config.yaml, best.pt, last.pt, metrics.jsonl, tensorboard/, curves.png, results.md)")
    say(f"total time: {minutes:.1f} min")
    save_config(cfg, run_dir / "config.yaml")
    atomic_write_text(run_dir / "results.md", table + "\n")
    atomic_write_text(run_dir / "results.json", json.dumps([r.to_dict() for r in reference + trained], indent=2))
    return reference + trained
