"""Fused-query evaluation of a trained model on registered visible/infrared pairs (the survey §4.1/§4.2).

:func:`extract_fusion_features` embeds every test image alone (the model's evaluation forward) and
every registered pair as one set (``model.embed_sets``, :class:`~vireid.modeling.methods.multimodal_fusion.FusionReID`).
A model without ``embed_sets`` (e.g. the two-stream baseline) gets no fused embeddings; its pairs are
then fused at the decision level (average / vote), which makes any single-image model a late-fusion
baseline. :func:`evaluate_fusion_checkpoint` runs :func:`vireid.evaluation.fusion_eval.evaluate_fusion`
for a checkpoint and writes ``fusion_results.json`` / ``fusion_results.md`` into its run folder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vireid.errors import ConfigError

#: ``fusion="auto"``: decision-level fusion for late-fusion models and single-image models, the
#: model's fused embedding otherwise.
AUTO = "auto"


@torch.no_grad()
def extract_fused_embeddings(model: nn.Module, cache, modalities: np.ndarray, pairs: np.ndarray,
                             device: torch.device | str = "cpu", batch_size: int = 128,
                             progress: bool = False) -> torch.Tensor:
    """Fused embeddings ``[P, D]`` (float32, CPU) of the ``pairs`` (``[P, 2]`` rows into ``cache``) via
    ``model.embed_sets``; each batch gathers the pairs' images with one fancy index into the cache."""
    from vireid.data.transforms import build_eval_transform

    if not hasattr(model, "embed_sets"):
        raise ConfigError(f"model {type(model).__name__} has no embed_sets(); fuse its pairs with fusion='average' or 'vote'")
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    codes = torch.as_tensor(np.asarray(modalities), dtype=torch.long)
    transform = build_eval_transform()
    was_training = model.training
    model.eval()
    chunks: list[torch.Tensor] = []
    per_batch = max(1, batch_size // 2)
    starts = range(0, pairs.shape[0], per_batch)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="fused pairs", leave=False, dynamic_ncols=True, disable=None)
    for start in starts:
        block = torch.as_tensor(pairs[start : start + per_batch])
        index = block.reshape(-1)
        images = transform(cache[index].to(device))
        sets = torch.arange(index.shape[0], device=images.device).view(-1, 2)
        chunks.append(model.embed_sets(images, codes[index].to(images.device), sets).float().cpu())
    model.train(was_training)
    return torch.cat(chunks) if chunks else torch.zeros(0, 0)


def extract_fusion_features(model: nn.Module, cache, modalities: np.ndarray, pairs: np.ndarray,
                            device: torch.device | str = "cpu", batch_size: int = 128,
                            progress: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Single-image embeddings ``[N, D]`` and fused pair embeddings ``[P, D]`` (None without ``embed_sets``)."""
    from vireid.inference.extract import extract_features

    single = extract_features(model, cache, modalities, device, batch_size, progress=progress)
    fused = None
    if hasattr(model, "embed_sets"):
        fused = extract_fused_embeddings(model, cache, modalities, pairs, device, batch_size, progress)
    return single, fused


def resolve_fusion_level(model: nn.Module, fusion: str = AUTO) -> tuple[str, tuple[float, ...]]:
    """The fusion level (``embedding``/``average``/``vote``) and late-fusion weights for ``model``."""
    from vireid.evaluation.fusion_eval import FUSION_LEVELS

    late = getattr(model, "late", None)
    weights = tuple(float(w) for w in late.weights.tolist()) if late is not None else (0.5, 0.5)
    if fusion == AUTO:
        if getattr(model, "strategy", None) == "late":
            return str(late.mode), weights
        return ("embedding" if hasattr(model, "embed_sets") else "average"), weights
    if fusion not in FUSION_LEVELS:
        raise ConfigError(f"fusion {fusion!r} is unknown; use auto, {', '.join(FUSION_LEVELS)}")
    if fusion == "embedding" and not hasattr(model, "embed_sets"):
        raise ConfigError(
            f"model {type(model).__name__} has no fused embedding (not a fusion method); use fusion average or vote"
        )
    return fusion, weights


def paired_dataset(cfg, progress: bool = True):
    """The run's dataset read with registered pairs (``paired=True`` added for RegDB-layout data)."""
    from vireid.data.build import prepare_dataset

    options = dict(cfg.data.options)
    if cfg.data.format in ("regdb", "synthetic-regdb"):
        options["paired"] = True
        cfg.data.options = options
    dataset = prepare_dataset(cfg.data, progress=progress)
    pairs = getattr(dataset, "test_pairs", None)
    if pairs is None or len(pairs) == 0:
        raise ConfigError(
            f"dataset {cfg.data.root} ({cfg.data.format}) has no registered visible/infrared pairs; fused queries "
            "need co-located pairs (RegDB or synthetic-regdb data), so pass --data-root of such a dataset"
        )
    return dataset, np.asarray(pairs, dtype=np.int64)


def evaluate_fusion_checkpoint(checkpoint: Path, *, queries: Sequence[str] = ("fused", "visible", "infrared"),
                               galleries: Sequence[str] = ("fused", "visible", "infrared"), fusion: str = AUTO,
                               trials: int = 10, seed: int = 0, data_root: str | None = None, data_format: str | None = None,
                               device: str = "auto", progress: bool = True, write: bool = True) -> list[dict]:
    """Fused/single query x fused/single gallery retrieval for a checkpoint (or run folder) on its
    dataset's test pairs; returns :func:`~vireid.evaluation.fusion_eval.evaluate_fusion` rows (with
    ``method``) and, with ``write``, saves them as ``fusion_results.json`` / ``.md`` in the run folder."""
    from vireid.data.build import build_image_cache, modality_codes
    from vireid.engine.checkpoint import atomic_write_text
    from vireid.engine.trainer import load_model_from_checkpoint, resolve_device
    from vireid.evaluation.fusion_eval import evaluate_fusion, format_fusion_table

    dev = resolve_device(device)
    model, cfg, _ = load_model_from_checkpoint(checkpoint, dev)
    if data_root is not None:
        cfg.data.root = data_root
    if data_format is not None:
        cfg.data.format = data_format
    level, weights = resolve_fusion_level(model, fusion)
    dataset, pairs = paired_dataset(cfg, progress=progress)
    pool = list(dataset.test)
    cache = build_image_cache(pool, cfg.data, progress=progress)
    single, fused = extract_fusion_features(model, cache, modality_codes(pool), pairs, dev,
                                            cfg.eval.batch_size, progress=progress)
    pids = np.asarray([pool[i].orig_pid for i in pairs[:, 0]])
    rows = evaluate_fusion(single, pairs, pids, fused=fused if level == "embedding" else None, queries=queries,
                           galleries=galleries, fusion=level, weights=weights, metric=cfg.eval.metric,
                           trials=trials, seed=seed)
    strategy = getattr(model, "strategy", None) or cfg.model.method
    for row in rows:
        row["method"] = cfg.name
        row["strategy"] = strategy
    if write:
        run_dir = checkpoint if checkpoint.is_dir() else checkpoint.parent
        atomic_write_text(run_dir / "fusion_results.json", json.dumps(rows, indent=2))
        atomic_write_text(run_dir / "fusion_results.md", format_fusion_table(rows, "method") + "\n")
    return rows


__all__ = [
    "AUTO",
    "evaluate_fusion_checkpoint",
    "extract_fused_embeddings",
    "extract_fusion_features",
    "paired_dataset",
    "resolve_fusion_level",
]


FUSION_KINDS = ("fused", "visible", "infrared")


def _kinds(values: Sequence[str] | None, option: str) -> tuple[str, ...]:
    chosen = tuple(values or FUSION_KINDS)
    unknown = [v for v in chosen if v not in FUSION_KINDS]
    if unknown:
        raise ConfigError(f"{option} {unknown[0]!r} is unknown; use fused, visible or infrared (repeat the option for several)")
    return chosen


def fusion_report(checkpoint: Path, *, queries: Sequence[str] | None = None, galleries: Sequence[str] | None = None,
                  fusion: str = AUTO, trials: int = 10, seed: int = 0, data_root: str | None = None,
                  data_format: str | None = None, device: str = "auto") -> str:
    """``vireid eval-fusion``: check the query/gallery kinds (default: all three), run
    :func:`evaluate_fusion_checkpoint` (which writes fusion_results.json/.md) and return its table."""
    from vireid.evaluation.fusion_eval import format_fusion_table

    if not Path(checkpoint).exists():
        raise ConfigError(f"checkpoint {checkpoint} does not exist; pass a run folder or a .pt file written by vireid train")
    rows = evaluate_fusion_checkpoint(checkpoint, queries=_kinds(queries, "--query"), galleries=_kinds(galleries, "--gallery"),
                                      fusion=fusion, trials=trials, seed=seed, data_root=data_root,
                                      data_format=data_format, device=device)
    return format_fusion_table(rows, "method")
