"""``vireid visualize ranked|cmc|cam|tsne|curves RUN_DIR ... --out FILE.png``: the pictures of a run.

Every sub-command reads a run folder (or a checkpoint file) and writes one PNG (default: a file
named after the picture in the run folder). Ranked lists, heatmaps and t-SNE use the test split of
the dataset the run was trained on (``--data-root`` if it moved), or other data named by
``--data FORMAT:ROOT`` / ``--images MANIFEST|ROOT`` with ``--query``/``--gallery`` modalities
(:mod:`vireid.workflows.eval_data`); queries are drawn with ``--seed``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vireid.cli.app import app, plugin_options

visualize_app = typer.Typer(
    name="visualize",
    help="Pictures of a run: ranked lists, CMC curves, Grad-CAM heatmaps, t-SNE, training curves.",
    no_args_is_help=True,
)
app.add_typer(visualize_app, name="visualize")

_DEVICE = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N.")
_DATA_ROOT = typer.Option(None, "--data-root", help="Dataset folder, if it moved since training.")
_DATA = typer.Option(None, "--data", help="Other data: FORMAT:ROOT, e.g. csv:mine/manifest.csv (default: the run's test data).")
_IMAGES = typer.Option(None, "--images", help="Other data: a CSV manifest or dataset folder, its format detected (or --format).")
_FORMAT = typer.Option(None, "--format", help="Format of --images (default: detected).")
_QUERY = typer.Option(None, "--query", help="Modality of the queries (visible or infrared) for other data.")
_GALLERY = typer.Option(None, "--gallery", help="Modality of the gallery (default: the other one).")


def _choice(data, images, fmt, query, gallery, data_root):
    from vireid.cli.train import data_choice

    return data_choice(data, images, fmt, query, gallery, data_root)
_SEED = typer.Option(0, "--seed", help="Seed of the random choice of queries / identities.")


@visualize_app.command("ranked")
@plugin_options
def ranked_command(
    run: Path = typer.Argument(..., help="Run folder (its best.pt) or checkpoint file."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG to write (default RUN_DIR/ranked.png)."),
    num_queries: int = typer.Option(6, "--num-queries", "-n", help="Number of random test queries (rows)."),
    top_k: int = typer.Option(10, "--top-k", "-k", help="Gallery images shown per query."),
    direction: str = typer.Option("i2v", "--direction", help="i2v: infrared queries vs visible gallery (SYSU-MM01); v2i: the reverse."),
    seed: int = _SEED,
    device: str = _DEVICE,
    data_root: Optional[str] = _DATA_ROOT,
    data: Optional[str] = _DATA,
    images: Optional[str] = _IMAGES,
    fmt: Optional[str] = _FORMAT,
    query: Optional[str] = _QUERY,
    gallery: Optional[str] = _GALLERY,
) -> None:
    """Query and its top-k gallery images with cosine scores; green = same identity, red = wrong."""
    from vireid.workflows.visualize import ranked_picture

    typer.echo(ranked_picture(run, out, choice=_choice(data, images, fmt, query, gallery, data_root),
                              num_queries=num_queries, top_k=top_k, direction=direction, seed=seed, device=device))


@visualize_app.command("cmc")
def cmc_command(
    runs: list[Path] = typer.Argument(..., help="One or several run folders (their test_results.json)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG to write (default FIRST_RUN/cmc.png)."),
    protocol: Optional[list[str]] = typer.Option(None, "--protocol", "-p", help="Only these protocols (e.g. sysu-all-single)."),
    rerank: Optional[bool] = typer.Option(None, "--rerank/--no-rerank", help="Only re-ranked / only plain curves (default: both)."),
    max_rank: int = typer.Option(20, "--max-rank", help="Last rank on the x axis."),
    data: Optional[str] = _DATA,
    images: Optional[str] = _IMAGES,
    fmt: Optional[str] = _FORMAT,
    query: Optional[str] = _QUERY,
    gallery: Optional[str] = _GALLERY,
    device: str = _DEVICE,
) -> None:
    """CMC curves of one or several runs on one plot: from their test_results.json (or the --out folder
    of vireid eval), or evaluated now on other data (--data/--images)."""
    from vireid.workflows.visualize import cmc_picture

    typer.echo(cmc_picture(runs, out, choice=_choice(data, images, fmt, query, gallery, None),
                           protocols=tuple(protocol or ()), rerank=rerank, max_rank=max_rank, device=device))


@visualize_app.command("cam")
@plugin_options
def cam_command(
    run: Path = typer.Argument(..., help="Run folder (its best.pt) or checkpoint file."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG to write (default RUN_DIR/cam.png)."),
    num_ids: int = typer.Option(4, "--num-ids", "-n", help="Random test identities (one visible + one infrared image each)."),
    target: Optional[str] = typer.Option(None, "--target", help="similarity: cosine similarity to the partner image (default for pairs); norm: embedding norm (default with --image)."),
    layer: Optional[str] = typer.Option(None, "--layer", help="Module to explain (dotted name); default: the backbone's last feature stage."),
    method: str = typer.Option("auto", "--method", help="auto: attention rollout for transformers (ViT, CLIP ViT), Grad-CAM otherwise; rollout; gradcam."),
    image: Optional[list[Path]] = typer.Option(None, "--image", help="Explain these image files instead of test identities (repeat)."),
    modality: Optional[list[str]] = typer.Option(None, "--modality", help="visible/infrared for each --image (or one for all)."),
    seed: int = _SEED,
    device: str = _DEVICE,
    data_root: Optional[str] = _DATA_ROOT,
    data: Optional[str] = _DATA,
    images: Optional[str] = _IMAGES,
    fmt: Optional[str] = _FORMAT,
) -> None:
    """Heatmaps over visible and infrared person images: Grad-CAM, or attention rollout for transformers."""
    from vireid.workflows.visualize import cam_picture

    choice = None if image else _choice(data, images, fmt, None, None, data_root)
    typer.echo(cam_picture(run, out, choice=choice, images=tuple(image or ()), modalities=tuple(modality or ()),
                           num_ids=num_ids, target=target, layer=layer, seed=seed, device=device, method=method))


@visualize_app.command("tsne")
@plugin_options
def tsne_command(
    run: Path = typer.Argument(..., help="Run folder (its best.pt) or checkpoint file."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG to write (default RUN_DIR/tsne.png)."),
    num_ids: int = typer.Option(10, "--num-ids", "-n", help="Random test identities shown."),
    per_modality: int = typer.Option(10, "--per-modality", help="At most this many images per identity and modality."),
    perplexity: Optional[float] = typer.Option(None, "--perplexity", help="t-SNE perplexity (default min(30, (N-1)/3))."),
    seed: int = _SEED,
    device: str = _DEVICE,
    data_root: Optional[str] = _DATA_ROOT,
    data: Optional[str] = _DATA,
    images: Optional[str] = _IMAGES,
    fmt: Optional[str] = _FORMAT,
) -> None:
    """2-D t-SNE of test embeddings: colour = identity, circle = visible, triangle = infrared."""
    from vireid.workflows.visualize import tsne_picture

    typer.echo(tsne_picture(run, out, choice=_choice(data, images, fmt, None, None, data_root), num_ids=num_ids,
                            per_modality=per_modality, perplexity=perplexity, seed=seed, device=device))


@visualize_app.command("curves")
def curves_command(
    run: Path = typer.Argument(..., help="Run folder (its metrics.jsonl)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG to write (default RUN_DIR/curves.png)."),
) -> None:
    """Training curves: loss, learning rate and validation mAP / rank-1 per evaluation."""
    from vireid.workflows.visualize import curves_picture

    typer.echo(curves_picture(run, out))
