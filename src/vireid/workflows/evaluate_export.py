"""Test-protocol evaluation of any :class:`~vireid.inference.embedder.Embedder` (e.g. an exported ONNX model).

The features come from the embedder (its own backend and preprocessing) over the same decoded
image cache as the PyTorch evaluation, and the same protocol runners rank them, so a PyTorch
checkpoint and its export are scored identically. This is what ``vireid eval model.onnx`` runs.
Results are written next to the model file as ``<name>.test_results.json`` / ``.md`` (never over
the run folder's own ``test_results.*``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vireid.engine.checkpoint import atomic_write_text
from vireid.errors import VireidError


def embed_cache(embedder: Any, cache: Any, codes: np.ndarray, batch_size: int = 128, progress: bool = False) -> torch.Tensor:
    """L2-normalised embeddings ``[N, D]`` of every image of an :class:`~vireid.data.cache.ImageCache`."""
    starts: Any = range(0, len(cache), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="features", unit="batch", leave=False, dynamic_ncols=True, disable=None)
    out = np.zeros((len(cache), embedder.dim), dtype=np.float32)
    for start in starts:
        stop = min(start + batch_size, len(cache))
        out[start:stop] = embedder.embed_pixels(cache[start:stop], codes[start:stop], batch_size)
    return torch.from_numpy(out)


def evaluate_embedder(embedder: Any, dataset: Any, cfg: Any, *, protocols: Sequence[str] = (),
                      rerank: bool | Sequence[bool] | None = None, progress: bool = True,
                      method: str = "", features_out: dict | None = None) -> list:
    """Embeddings of the dataset's test pool from ``embedder``, then every requested protocol
    (the counterpart of :func:`vireid.workflows.evaluate_model.evaluate_model` for non-PyTorch backends)."""
    from vireid.data.build import modality_codes
    from vireid.workflows.evaluate_model import evaluate_pool

    if tuple(embedder.input_size) != (int(cfg.data.height), int(cfg.data.width)):
        raise VireidError(f"the model takes {embedder.input_size[0]}x{embedder.input_size[1]} images but the config says "
                          f"{cfg.data.height}x{cfg.data.width}; keep data.height/width as exported")
    return evaluate_pool(lambda pool, cache: embed_cache(embedder, cache, modality_codes(pool), cfg.eval.batch_size,
                                                         progress=progress),
                         dataset, cfg, protocols=protocols, rerank=rerank, progress=progress, method=method,
                         features_out=features_out)


def verification_at_threshold(verification: dict | None, features: torch.Tensor, records: list) -> dict | None:
    """TAR/FAR of the stored calibrated threshold on the test pool's cross-modality pairs, plus the
    test set's own EER (None when the model carries no calibration or the pool has one modality)."""
    if not verification:
        return None
    from vireid.workflows.calibration import pair_scores
    from vireid.evaluation.verification import rates_at_threshold, summarize_verification

    try:
        scores = pair_scores(features, records)
    except VireidError:
        return None
    tar, far = rates_at_threshold(scores.genuine, scores.impostor, float(verification["threshold"]))
    test = summarize_verification(scores, float(verification.get("far_target", 0.01)), split="test")
    return {"threshold": float(verification["threshold"]), "tar": tar, "far": far,
            "test_eer": test.get("eer"), "calibration_split": verification.get("split")}


def evaluate_exported(model_path: str | Path, *, protocols: tuple[str, ...] = (), rerank=None,
                      data_root: str | None = None, draw: str | None = None, trials: int | None = None,
                      rand_perm_cam: str | None = None, device: str = "auto", progress: bool = True,
                      quiet: bool = False, choice: Any = None, out: str | Path | None = None,
                      flip: bool | None = None, npu_gallery: str | None = None, **_: Any) -> list:
    """``vireid eval`` for an exported model file (``.onnx``): same arguments as
    :func:`vireid.workflows.train_run.evaluate_checkpoint`. Results go to ``out`` when given, else beside the
    file as ``<model>.test_results.json``/``.md`` (its own data only; see :mod:`vireid.workflows.evaluate_run`)."""
    from vireid.inference.loading import load_embedder
    from vireid.workflows.eval_data import DataChoice, load_eval_dataset, select_data
    from vireid.workflows.evaluate_model import apply_eval_overrides
    from vireid.workflows.evaluate_run import label_results, output_folder
    from vireid.engine.trainer import resolve_device
    from vireid.evaluation.protocols import format_results_table

    choice = choice or DataChoice(data_root=data_root)
    model_path = Path(model_path)
    embedder = load_embedder(model_path, device=resolve_device(device))
    cfg = embedder.config
    if cfg is None:
        raise VireidError(f"{model_path} carries no training config, so its dataset and protocols are unknown; "
                          "re-export it with vireid export")
    # a relative data.root is looked up beside the run folder the model was exported from, then here
    cfg = select_data(cfg, choice, model_path.parent)
    apply_eval_overrides(cfg, draw=draw, trials=trials, rand_perm_cam=rand_perm_cam, npu_gallery=npu_gallery)
    if flip is not None:
        embedder.flip = bool(flip)
    cfg.eval.flip = bool(embedder.flip)
    dataset = load_eval_dataset(cfg, choice, progress=progress)
    pool: dict = {}
    precision = getattr(embedder, "precision", "")
    label = f"{cfg.name} ({model_path.suffix.lstrip('.')}{' ' + precision if precision else ''})"
    results = evaluate_embedder(embedder, dataset, cfg, protocols=protocols, rerank=rerank, progress=progress,
                                method=label, features_out=pool)
    label_results(results, cfg, choice)
    table = format_results_table(results)
    verification = verification_at_threshold(embedder.verification, pool["features"], pool["records"])
    if not quiet:
        print(table)
        if verification:
            print(f"verification at the stored threshold {verification['threshold']:.4f}: TAR {100 * verification['tar']:.2f}% "
                  f"at FAR {100 * verification['far']:.2f}% on the test identities")
    payload: dict = {"model": str(model_path), "results": [r.to_dict() for r in results]}
    if verification:
        payload["verification"] = verification
    folder = output_folder(model_path.parent, choice, out, quiet=quiet)
    if folder is not None:
        stem = model_path.with_suffix("").name
        name = "test_results" if out is not None else stem + ".test_results"
        atomic_write_text(folder / f"{name}.json", json.dumps(payload, indent=2))
        atomic_write_text(folder / f"{name}.md", table + "\n")
    return results


__all__ = ["embed_cache", "evaluate_embedder", "evaluate_exported", "verification_at_threshold"]
