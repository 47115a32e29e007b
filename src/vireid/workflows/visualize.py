"""The pictures of a run (``vireid visualize ranked|cmc|cam|tsne|curves``): load the run and its data,
draw one PNG with :mod:`vireid.viz`, and return the sentence the command prints.

Ranked lists, heatmaps and t-SNE use the test split of the dataset the run was trained on, or the
other data of a :class:`~vireid.workflows.eval_data.DataChoice`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from vireid.errors import VireidError


def picture_path(out: Optional[Path], run: Path, name: str) -> Path:
    """``out``, or the file ``name`` in the run folder (the checkpoint's folder for a ``.pt`` file)."""
    if out is not None:
        return out
    return (run if run.is_dir() else run.parent) / name


def wrote(path: Path) -> str:
    """``wrote PATH (WxH pixels)``: what a visualize command prints about the PNG it wrote."""
    from PIL import Image

    with Image.open(path) as img:
        return f"wrote {path} ({img.size[0]}x{img.size[1]} pixels)"


def ranked_picture(run: Path, out: Optional[Path], *, choice, num_queries: int = 6, top_k: int = 10,
                   direction: str = "i2v", seed: int = 0, device: str = "auto") -> str:
    """Queries and their top-k gallery images (:func:`vireid.viz.ranking.ranked_lists_for_run`)."""
    from vireid.viz.data import load_run
    from vireid.viz.ranking import ranked_lists_for_run

    loaded = load_run(run, device=device, progress=True, choice=choice)
    path = picture_path(out, run, "ranked.png")
    ranked_lists_for_run(loaded, path, num_queries=num_queries, k=top_k, seed=seed, direction=direction)
    return wrote(path)


def cmc_picture(runs: Sequence[Path], out: Optional[Path], *, choice, protocols: Sequence[str] = (),
                rerank: Optional[bool] = None, max_rank: int = 20, device: str = "auto") -> str:
    """CMC curves of several runs on one plot: their stored test results, or evaluated now on the
    other data of ``choice`` (:func:`vireid.workflows.train_run.evaluate_checkpoint`)."""
    from vireid.viz.cmc import cmc_curves_from_runs, plot_cmc

    results = None
    if not choice.own:
        from vireid.workflows.train_run import evaluate_checkpoint

        results = [[r.to_dict() for r in evaluate_checkpoint(
            run, protocols=tuple(protocols), rerank=[False, True] if rerank else [False], device=device,
            progress=True, quiet=True, verification=False, data=choice)] for run in runs]
    curves = cmc_curves_from_runs(list(runs), protocols=tuple(protocols), rerank=rerank, results=results)
    path = picture_path(out, runs[0], "cmc.png")
    plot_cmc(curves, path, max_rank=max_rank)
    return wrote(path)


def cam_picture(run: Path, out: Optional[Path], *, choice=None, images: Sequence[Path] = (),
                modalities: Sequence[str] = (), num_ids: int = 4, target: Optional[str] = None,
                layer: Optional[str] = None, seed: int = 0, device: str = "auto", method: str = "auto") -> str:
    """Heatmaps (:mod:`vireid.viz.cam`; Grad-CAM, or attention rollout for transformers, ``method``): of the
    given image files, or of random test identities."""
    path = picture_path(out, run, "cam.png")
    if images:
        import numpy as np

        from vireid.data.images import decode_image
        from vireid.inference.embedder import modality_codes
        from vireid.viz.cam import explain_images, plot_cams
        from vireid.viz.data import load_run_model

        if not modalities:
            raise VireidError("--image needs --modality visible or infrared (one for all images, or one per image)")
        model, cfg, _, _, _ = load_run_model(run, device)
        codes = modality_codes(list(modalities) if len(modalities) > 1 else modalities[0], len(images))
        pixels = np.stack([decode_image(p, size=(cfg.data.height, cfg.data.width)) for p in images])
        target = target or "norm"
        partners = None
        if target == "similarity":
            if len(images) % 2:
                raise VireidError("--target similarity pairs consecutive --image files (1 with 2, 3 with 4, ...); give an even number")
            partners = [i ^ 1 for i in range(len(images))]
        cams = explain_images(model, pixels, codes, target=target, partners=partners, layer=layer, method=method)
        plot_cams(list(pixels), cams, path, labels=[p.name for p in images], modalities=codes.tolist(),
                  columns=min(len(images), 8))
    else:
        from vireid.viz.cam import cams_for_run
        from vireid.viz.data import load_run

        loaded = load_run(run, device=device, progress=True, choice=choice)
        cams_for_run(loaded, path, num_ids=num_ids, seed=seed, target=target or "similarity", layer=layer,
                     method=method)
    return wrote(path)


def tsne_picture(run: Path, out: Optional[Path], *, choice, num_ids: int = 10, per_modality: int = 10,
                 perplexity: Optional[float] = None, seed: int = 0, device: str = "auto") -> str:
    """2-D t-SNE of test embeddings (:func:`vireid.viz.embedding.embedding_for_run`)."""
    from vireid.viz.data import load_run
    from vireid.viz.embedding import embedding_for_run

    loaded = load_run(run, device=device, progress=True, choice=choice)
    path = picture_path(out, run, "tsne.png")
    embedding_for_run(loaded, path, num_ids=num_ids, per_modality=per_modality, seed=seed, perplexity=perplexity)
    return wrote(path)


def curves_picture(run: Path, out: Optional[Path]) -> str:
    """Training curves from the run's metrics.jsonl (:func:`vireid.viz.curves.plot_training_curves`)."""
    from vireid.viz.curves import plot_training_curves

    if not (run / "metrics.jsonl").is_file():
        raise VireidError(f"{run / 'metrics.jsonl'} does not exist; pass the run folder written by `vireid train`")
    path = picture_path(out, run, "curves.png")
    plot_training_curves(run, path)
    return wrote(path)
