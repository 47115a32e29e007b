"""Features from a model, and the evaluations that use them (validation, official protocols).

The model sees each image with its modality (two-stream models route by it). Features are
computed once for a whole evaluation pool; the protocol runners then only index and rank.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from vireid.data.records import INFRARED, VISIBLE, ImageRecord


@torch.no_grad()
def extract_features(model: nn.Module, cache, modalities: np.ndarray, device: torch.device | str = "cpu",
                     batch_size: int = 128, progress: bool = False, flip: bool = False,
                     extras: dict | None = None, precision=None) -> torch.Tensor:
    """Embeddings [N, D] (float32, CPU) of every image of ``cache`` in order.

    ``precision`` (a :class:`~vireid.engine.precision.Precision`, None: fp32) runs the model under
    its autocast and memory format, as training did; the features are returned in float32.

    ``extras`` (``{name: values}``, one row per cached image, e.g. PDFENet's ``joints``; see
    :mod:`vireid.data.extras`) are passed to the model as ``model(images, modalities, **batch_extras)``.

    ``flip=True`` averages the embedding of the image and of its mirror (a common test-time trick;
    off by default so numbers compare with the papers' plain evaluation); each extra is mirrored as
    its kind says (joints: ``x -> W - 1 - x`` with left/right swapped).
    """
    from vireid.data.extras import check_model_extras, mirror_extras
    from vireid.data.loader import EvalLoader
    from vireid.data.transforms import build_eval_transform

    was_training = model.training
    model.eval()
    if precision is not None:
        precision.prepare_model(model)
    autocast = precision.autocast if precision is not None else contextlib.nullcontext
    mods = torch.as_tensor(np.asarray(modalities), dtype=torch.long)
    loader = EvalLoader(cache, batch_size=batch_size, transform=build_eval_transform(), device=device, extras=extras)
    check_model_extras(model, loader.extras)  # the whole pool once, not per batch (vireid.data.extras)
    chunks: list[torch.Tensor] = []
    iterator = loader
    if progress:
        from tqdm import tqdm

        iterator = tqdm(loader, desc="features", leave=False, dynamic_ncols=True, disable=None)
    for images, indices, extras in iterator:
        m = mods[torch.as_tensor(indices, dtype=torch.long)].to(images.device)
        if precision is not None:
            images = precision.prepare_input(images)
        with autocast():
            feats = model(images, m, **extras).float()
        if flip:
            extras = mirror_extras(extras, images.shape[3], images.shape[2])
            with autocast():
                feats = (feats + model(torch.flip(images, dims=[3]), m, **extras).float()) / 2
        chunks.append(feats.float().cpu())
    model.train(was_training)
    if not chunks:
        return torch.zeros(0, 0)
    return torch.cat(chunks)


def _modality_codes(records: Sequence[ImageRecord]) -> np.ndarray:
    from vireid.data.build import modality_codes

    return modality_codes(list(records))


def validation_metrics(model: nn.Module, data, device: torch.device, batch_size: int = 128,
                       metric: str = "euclidean", precision=None, flip: bool = False) -> dict:
    """Infrared -> visible retrieval over the held-out validation identities (all their images).

    Used only to choose the best epoch; the test identities are never looked at during training. Frames of
    video data are ranked as tracklets (:func:`vireid.evaluation.tracklets.tracklet_pool`: one row per tracklet).
    ``precision``: the training run's (:func:`extract_features`); ``flip``: the config's ``eval.flip``, so the
    epoch is chosen on the same embeddings (image and mirror averaged) the test is evaluated with.
    """
    from vireid.evaluation import evaluate_ranking
    from vireid.evaluation.distance import pairwise_distance

    records = data.val_records
    feats = extract_features(model, data.val_cache, _modality_codes(records), device, batch_size, flip=flip,
                             extras=getattr(data, "val_extras", None), precision=precision)
    if any(int(getattr(r, "tracklet", -1)) >= 0 for r in records):  # video data: rank tracklets, not frames
        from vireid.evaluation.tracklets import tracklet_pool

        feats, records, _ = tracklet_pool(feats, records)
    mods = np.asarray([r.modality for r in records])
    pids = np.asarray([r.orig_pid for r in records])
    cams = np.asarray([r.camid for r in records])
    q = np.flatnonzero(mods == INFRARED)
    g = np.flatnonzero(mods == VISIBLE)
    dist = pairwise_distance(feats[q], feats[g], metric=metric)
    res = evaluate_ranking(dist, pids[q], pids[g], cams[q], cams[g])
    return {"mAP": float(res["mAP"]), "mINP": float(res["mINP"]), "rank1": float(res["cmc"][0])}
