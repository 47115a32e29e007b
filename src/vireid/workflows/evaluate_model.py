"""Test-set evaluation of a model (or of precomputed features) under a dataset's official protocols."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from vireid.config import Config
from vireid.errors import ConfigError

#: The protocols run when ``eval.protocols`` is empty, per dataset family.
DEFAULT_PROTOCOLS = {
    "sysu": ["sysu-all-single", "sysu-indoor-single"],
    "regdb": ["regdb-v2t", "regdb-t2v"],
    "llcm": ["llcm-v2i", "llcm-i2v"],
    "npu": ["npu-v2t-all-single", "npu-t2v-all-single", "npu-v2t-indoor-single", "npu-t2v-indoor-single"],
    "vcm": ["vcm-i2v", "vcm-v2i"],  # tracklet to tracklet (vireid.evaluation.tracklets)
    "given": ["given"],
}


def protocols_for(dataset, requested: Sequence[str] = ()) -> list[str]:
    family = getattr(dataset, "protocol_family", "given")
    names = list(requested) or DEFAULT_PROTOCOLS.get(family, ["given"])
    from vireid.evaluation import PROTOCOLS  # the package registers every protocol module

    for name in names:
        if name not in PROTOCOLS:
            raise ConfigError(f"unknown protocol {name!r}; choose from {', '.join(PROTOCOLS.names())}")
        fits = getattr(PROTOCOLS.get(name), "protocol_family", name.split("-")[0]) in (family, "any")
        if not fits and getattr(PROTOCOLS.get(name), "unit", "") == "tracklet":  # any data whose frames name tracklets
            fits = any(int(getattr(r, "tracklet", -1)) >= 0 for r in getattr(dataset, "test", ()) or ())
        if not fits and name != "given":
            raise ConfigError(
                f"protocol {name!r} does not fit a {family} dataset; use one of {', '.join(DEFAULT_PROTOCOLS.get(family, ['given']))}"
            )
    return names


def find_rand_perm_cam(dataset, explicit: str | Path | None = None) -> Path:
    """The official SYSU-MM01 gallery permutation file: ``explicit``, else the dataset's
    ``exp/rand_perm_cam.mat`` or ``evaluation/data_split/rand_perm_cam.mat``."""
    candidates = [Path(explicit)] if explicit else [
        Path(dataset.root) / "exp" / "rand_perm_cam.mat",
        Path(dataset.root) / "evaluation" / "data_split" / "rand_perm_cam.mat",
    ]
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(
        f"the official SYSU-MM01 gallery draw needs rand_perm_cam.mat (looked for {', '.join(map(str, candidates))}); "
        "copy it from the SYSU-MM01 evaluation code (data_split/) into <dataset>/exp/, pass --rand-perm-cam PATH "
        "(eval.rand_perm_cam=PATH), or use the seeded draw"
    )


def evaluate_features(features: torch.Tensor, dataset, protocols: Sequence[str], *, rerank: bool = False,
                      metric: str = "euclidean", trials: int = 10, draw: str = "seeded",
                      rand_perm_cam: str | Path | None = None, method: str = "",
                      npu_gallery: str = "per_person", pool: Sequence | None = None,
                      gallery_columns: int | None = None) -> list:
    """Run each protocol on features of ``dataset.test`` (same order; or of ``pool``, the test frames a method
    chose to embed, :func:`evaluate_pool`); returns ProtocolResults.
    ``npu_gallery`` is the NPU-ReID gallery draw (``eval.npu_gallery``: per_person or per_camera).
    ``gallery_columns``: the features' leading image columns when they carry more (a text method's image +
    query-side embeddings); protocols that do not read the query side (``reads_query_side``) get those only."""
    from vireid.evaluation.mixed import with_modality_rows
    from vireid.evaluation.protocols import PROTOCOLS, protocol_accepts, run_protocol

    perm_path = None
    if draw == "official" and any(protocol_accepts(name, "rand_perm_cam") for name in protocols):
        perm_path = find_rand_perm_cam(dataset, rand_perm_cam)

    results = []
    all_features = features
    for name in protocols:
        features = all_features
        if gallery_columns and not getattr(PROTOCOLS.get(name), "reads_query_side", False):
            features = all_features[:, : int(gallery_columns)]
        offered = {"rerank": rerank, "metric": metric, "trials": trials, "draw": draw, "gallery": npu_gallery}
        if perm_path is not None:
            offered["rand_perm_cam"] = perm_path
        options = {key: value for key, value in offered.items() if protocol_accepts(name, key)}  # what its spec takes
        if name == "given":
            from vireid.workflows.eval_data import same_modality

            if same_modality(dataset):  # one modality on both sides: a query never matches its own image
                options["cam_rule"] = "same-camera"
            nq = len(dataset.query)
            res = run_protocol(name, features[:nq], list(dataset.query), gallery_features=features[nq:],
                               gallery_records=list(dataset.gallery), **options)
        else:
            res = run_protocol(name, features, list(pool) if pool is not None else dataset.test, **options)
        if method:
            res.settings["method"] = method
        results.extend(with_modality_rows(res))  # mixed galleries add one row per gallery modality
    return results


def apply_eval_overrides(cfg: Config, *, data_root: str | None = None, draw: str | None = None,
                         trials: int | None = None, rand_perm_cam: str | None = None,
                         npu_gallery: str | None = None) -> Config:
    """The ``vireid eval`` options that override a trained model's config (None keeps the config's value)."""
    if data_root is not None:
        cfg.data.root = data_root
    if draw is not None:
        cfg.eval.draw = draw
    if trials is not None:
        cfg.eval.trials = trials
    if rand_perm_cam is not None:
        cfg.eval.rand_perm_cam = rand_perm_cam
    if npu_gallery is not None:
        from vireid.evaluation.npu import NPU_GALLERY_DRAWS

        if npu_gallery not in NPU_GALLERY_DRAWS:
            raise ConfigError(f"--npu-gallery must be one of {', '.join(NPU_GALLERY_DRAWS)}, got {npu_gallery!r}")
        cfg.eval.npu_gallery = npu_gallery
    return cfg


def evaluate_pool(features_of: Callable[[list, object], torch.Tensor], dataset, cfg: Config, *,
                  protocols: Sequence[str] = (), rerank: bool | Sequence[bool] | None = None, progress: bool = True,
                  method: str = "", features_out: dict | None = None, gallery_columns: int | None = None) -> list:
    """Features of the whole test pool, computed once by ``features_of(pool_records, image_cache)``, then
    every requested protocol. Shared by PyTorch models (:func:`evaluate_model`) and other backends.
    ``gallery_columns``: see :func:`evaluate_features`.

    ``rerank`` None follows ``eval.rerank``; a list such as ``[False, True]`` runs both.
    ``features_out`` (a dict) receives ``features`` and ``records`` of the pool, for further reports
    (e.g. the verification ROC) without a second feature pass.
    """
    from vireid.data.build import build_image_cache

    names = protocols_for(dataset, protocols or cfg.eval.protocols)
    # "given" data (explicit query and gallery) is evaluated on query + gallery, in that order
    pool = list(dataset.query) + list(dataset.gallery) if names == ["given"] else list(dataset.test)
    if names != ["given"]:  # a method that chooses its test frames (temporal: seq_len per tracklet) embeds only those
        from vireid.modeling.registries import METHODS

        method_cls = METHODS.get(cfg.model.method) if cfg.model.method in METHODS else None
        if method_cls is not None and hasattr(method_cls, "frames_to_embed"):
            pool = method_cls.frames_to_embed(pool, dict(cfg.model.params or {}))
    cache = build_image_cache(pool, cfg.data, progress=progress)
    feats = features_of(pool, cache)
    if features_out is not None:
        features_out.update(features=feats, records=pool)
    out = []
    settings = rerank if isinstance(rerank, (list, tuple)) else [cfg.eval.rerank if rerank is None else rerank]
    for rr in settings:
        out += evaluate_features(feats, dataset, names, rerank=rr, metric=cfg.eval.metric,
                                 trials=cfg.eval.trials, draw=cfg.eval.draw, rand_perm_cam=cfg.eval.rand_perm_cam,
                                 method=method, npu_gallery=cfg.eval.npu_gallery,
                                 pool=pool if names != ["given"] else None, gallery_columns=gallery_columns)
    return out


def evaluate_model(model: nn.Module, dataset, cfg: Config, device: torch.device | str = "cpu", *,
                   protocols: Sequence[str] = (), rerank: bool | Sequence[bool] | None = None, progress: bool = True,
                   method: str = "", features_out: dict | None = None, amp: str | None = None) -> list:
    """:func:`evaluate_pool` with the features of a PyTorch model (the configured side inputs passed, e.g. body joints),
    computed in the precision ``amp`` resolves to on ``device`` (default: the run's ``cfg.train.amp``
    where it runs well there, :func:`vireid.engine.precision.inference_amp`)."""
    from vireid.data.build import extras_for_records, modality_codes
    from vireid.inference.extract import extract_features
    from vireid.engine.precision import announce_precision, inference_amp, resolve_precision

    precision = resolve_precision(amp or inference_amp(cfg.train.amp, device), device, cfg.train.channels_last)
    announce_precision(precision, enabled=progress)

    def features_of(pool: list, cache) -> torch.Tensor:
        return extract_features(model, cache, modality_codes(pool), device, cfg.eval.batch_size, progress=progress,
                                extras=extras_for_records(pool, cfg.data), flip=bool(cfg.eval.flip),
                                precision=precision)

    return evaluate_pool(features_of, dataset, cfg, protocols=protocols, rerank=rerank, progress=progress,
                         method=method, features_out=features_out,
                         gallery_columns=getattr(model, "gallery_columns", None))
