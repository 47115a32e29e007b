"""Robustness and paired comparisons of trained runs (``vireid robustness``, ``vireid compare``).

Both load a run (folder or ``.pt``), build its test pool and hand a feature extractor to the
dataset-agnostic functions of :mod:`vireid.evaluation.robustness` and
:mod:`vireid.evaluation.significance`. ``dataset=`` evaluates on another prepared dataset than the
run's own (any object with ``test``/``query``/``gallery`` records and ``protocol_family``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vireid.errors import ConfigError


def _load(run: str | Path, device: str):
    from vireid.engine.trainer import load_model_from_checkpoint, resolve_device

    if not Path(run).exists():
        raise ConfigError(f"run {run} does not exist; pass a run folder or a .pt checkpoint written by vireid train")
    dev = resolve_device(device)
    model, cfg, _ = load_model_from_checkpoint(run, dev)
    return model, cfg, dev


def _protocol(dataset, protocol: str | None) -> str:
    from vireid.workflows.evaluate_model import protocols_for

    names = protocols_for(dataset, [protocol] if protocol else [])
    if names == ["given"]:
        raise ConfigError("robustness and compare need a protocol on a test pool; 'given' query/gallery data is not supported")
    return names[0]


def _options(cfg, protocol: str, trials: int | None, rerank) -> dict:
    from vireid.evaluation.protocols import protocol_accepts

    options: dict = {"metric": cfg.eval.metric, "rerank": rerank}
    if protocol_accepts(protocol, "trials"):
        options["trials"] = trials or cfg.eval.trials
    if protocol_accepts(protocol, "draw"):
        options["draw"] = cfg.eval.draw
        if cfg.eval.draw == "official":
            raise ConfigError("robustness/compare use the seeded SYSU-MM01 draw; evaluate with eval.draw=seeded")
    return options


def robustness_checkpoint(run: str | Path, *, protocol: str | None = None, corruptions=None, severities=(1, 3, 5),
                          apply: str = "query", seed: int = 0, trials: int | None = None, rerank=False,
                          dataset: Any = None, device: str = "auto", progress: bool = False):
    """Corruption robustness of a trained run on ``protocol`` (default: its dataset's first standard one)."""
    from vireid.data.build import build_image_cache, extras_for_records, modality_codes, prepare_dataset
    from vireid.data.extras import select_extras
    from vireid.inference.extract import extract_features
    from vireid.evaluation.robustness import evaluate_robustness

    model, cfg, dev = _load(run, device)
    dataset = dataset if dataset is not None else prepare_dataset(cfg.data, progress=progress)
    name = _protocol(dataset, protocol)
    pool = list(dataset.test)
    cache = build_image_cache(pool, cfg.data, progress=progress)
    mods = modality_codes(pool)
    extras = extras_for_records(pool, cfg.data)

    columns = getattr(model, "gallery_columns", None)  # a text model: its image embedding only

    def features_of(images, indices: np.ndarray):
        feats = extract_features(model, images, mods[indices], dev, cfg.eval.batch_size,
                                 extras=select_extras(extras, indices))
        return feats[:, : int(columns)] if columns else feats

    report = evaluate_robustness(features_of, cache, pool, name, corruptions=corruptions, severities=severities,
                                 apply=apply, seed=seed, protocol_options=_options(cfg, name, trials, rerank),
                                 progress=progress)
    return report


def compare_checkpoints(run_a: str | Path, run_b: str | Path, *, protocol: str | None = None, metric: str = "mAP",
                        unit: str = "query", resamples: int = 10000, confidence: float = 0.95, seed: int = 0,
                        trials: int | None = None, rerank=False, dataset: Any = None, device: str = "auto",
                        progress: bool = False):
    """Paired bootstrap of two runs on one protocol; both are evaluated on ``run_a``'s test set
    (or ``dataset``) with the same draws. Returns ``(comparison, result_a, result_b)``."""
    from vireid.data.build import prepare_dataset
    from vireid.workflows.evaluate_model import evaluate_model
    from vireid.evaluation.significance import compare_results

    model_a, cfg_a, dev = _load(run_a, device)
    model_b, cfg_b, _ = _load(run_b, device)
    dataset = dataset if dataset is not None else prepare_dataset(cfg_a.data, progress=progress)
    name = _protocol(dataset, protocol)
    results = []
    for model, cfg in ((model_a, cfg_a), (model_b, cfg_b)):
        cfg.eval.metric = cfg_a.eval.metric
        if trials is not None:
            cfg.eval.trials = trials
        else:
            cfg.eval.trials = cfg_a.eval.trials
        cfg.eval.draw = cfg_a.eval.draw
        out = evaluate_model(model, dataset, cfg, dev, protocols=[name], rerank=rerank, progress=progress,
                             method=cfg.name)
        results.append(out[0])
    names = (Path(run_a).name or str(run_a), Path(run_b).name or str(run_b))
    if names[0] == names[1]:
        names = (str(run_a), str(run_b))
    comparison = compare_results(results[0], results[1], metric, unit, resamples=resamples, confidence=confidence,
                                 seed=seed, names=names)
    return comparison, results[0], results[1]


def _check_rerank(rerank: str | None) -> None:
    if rerank:
        from vireid.evaluation.rerank_modality import rerank_settings

        rerank_settings(rerank)


def robustness_report(run: Path, *, protocol: str | None = None, corruptions: str = "all", severities: str = "1,3,5",
                      apply: str = "query", seed: int = 0, trials: int | None = None, rerank: str | None = None,
                      out: Path | None = None, device: str = "auto") -> str:
    """``vireid robustness``: check the comma-separated options, run :func:`robustness_checkpoint`, write
    robustness.md/.json/.png into ``out`` (default <run>/robustness) and return the table and the paths."""
    from vireid.data.corruptions import check_corruptions, check_severities
    from vireid.evaluation.robustness import APPLY

    if apply not in APPLY:
        raise ConfigError(f"--apply {apply!r} is unknown; use query, gallery or both")
    names, levels = check_corruptions(corruptions), check_severities(severities)
    _check_rerank(rerank)
    report = robustness_checkpoint(run, protocol=protocol, corruptions=names, severities=levels, apply=apply, seed=seed,
                                   trials=trials, rerank=rerank or False, device=device, progress=True)
    folder = out or (run if run.is_dir() else run.parent) / "robustness"
    paths = report.write(folder)
    return f"{report.table()}\nwritten: {paths['md']}, {paths['json']}, {paths['png']}"


def comparison_report(run_a: Path, run_b: Path, *, protocol: str | None = None, metric: str = "mAP",
                      unit: str = "query", resamples: int = 10000, confidence: float = 0.95, seed: int = 0,
                      trials: int | None = None, rerank: str | None = None, json_out: Path | None = None,
                      device: str = "auto") -> str:
    """``vireid compare``: the paired bootstrap of :func:`compare_checkpoints` as its summary text (and
    as JSON in ``json_out``)."""
    import json

    from vireid.evaluation.significance import METRICS, UNITS, SignificanceError

    if metric not in METRICS:
        raise SignificanceError(f"--metric {metric!r} is unknown; use one of {', '.join(METRICS)}")
    if unit not in UNITS:
        raise SignificanceError(f"--unit {unit!r} is unknown; use query or trial")
    _check_rerank(rerank)
    comparison, _, _ = compare_checkpoints(run_a, run_b, protocol=protocol, metric=metric, unit=unit, resamples=resamples,
                                           confidence=confidence, seed=seed, trials=trials, rerank=rerank or False,
                                           device=device)
    if json_out is not None:
        json_out.write_text(json.dumps(comparison.to_dict(), indent=2))
    return comparison.summary()
