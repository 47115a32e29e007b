"""``vireid extract``, ``vireid index`` and ``vireid search``: embed a gallery, index it, query it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vireid.cli.app import app, plugin_options
from vireid.errors import VireidError


def _reader_options(trial: Optional[int], split_dir: Optional[Path]) -> dict:
    options: dict = {}
    if trial is not None:
        options["trial"] = trial
    if split_dir is not None:
        options["split_dir"] = split_dir
    return options


@app.command("extract")
@plugin_options
def extract_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="Run folder, .pt checkpoint or exported model."),
    images: Path = typer.Option(..., "--images", "-i", help="Image source: a dataset root (SYSU-MM01, RegDB, LLCM, "
                                "folder layout), a CSV manifest, or any folder of images."),
    out: Path = typer.Option(..., "--out", "-o", help="Feature folder to write (features.safetensors + meta.csv)."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="Layout of --images: sysu-mm01, regdb, llcm, "
                                      "folder, csv or plain (default: detected)."),
    modality: Optional[str] = typer.Option(None, "--modality", "-m", help="visible or infrared: the modality of a "
                                           "plain folder's images, or keep only that modality of a dataset."),
    split: str = typer.Option("all", "--split", help="Dataset split to embed: all, train, val, test, query, gallery."),
    trial: Optional[int] = typer.Option(None, "--trial", help="RegDB trial 1..10."),
    split_dir: Optional[Path] = typer.Option(None, "--split-dir", help="Folder with the dataset's split files."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per forward pass."),
    device: str = typer.Option("cpu", "--device", help="Torch device: cpu, cuda or cuda:N."),
    flip: Optional[bool] = typer.Option(None, "--flip/--no-flip", help="Test-time flip: average each embedding "
                                        "with its mirror image's (default: the model's eval.flip); recorded in the folder."),
    amp: Optional[str] = typer.Option(None, "--amp", help="Mixed precision: auto, none, bf16 or fp16 (default: the model's train.amp)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary instead of text."),
    tracklets: bool = typer.Option(False, "--tracklets", help="One embedding per tracklet: per tracklet id of a "
                                   "video dataset, or per folder of frames of any other folder."),
) -> None:
    """Embed every image of a dataset, manifest or folder and save the features with their metadata
    (and the model's fingerprint, which vireid search and serve check). With --tracklets, every tracklet
    (a sequence of frames) is one embedding."""
    from vireid.workflows.search import extract_features

    typer.echo(extract_features(checkpoint, images, out, fmt=fmt, modality=modality, split=split,
                                options=_reader_options(trial, split_dir), batch_size=batch_size, device=device,
                                flip=flip, amp=amp, as_json=as_json, tracklets=tracklets))


@app.command("index")
def index_command(
    features: Path = typer.Argument(..., help="Feature folder written by vireid extract."),
    out: Path = typer.Option(..., "--out", "-o", help="Index folder to write."),
    kind: str = typer.Option("auto", "--kind", help="auto, flat (exact), ivfpq or hnsw."),
    nlist: Optional[int] = typer.Option(None, "--nlist", help="ivfpq: number of k-means cells."),
    nprobe: Optional[int] = typer.Option(None, "--nprobe", help="ivfpq: cells visited per query (default stored)."),
    pq_m: Optional[int] = typer.Option(None, "--pq-m", help="ivfpq: sub-quantisers (code bits = pq_m x pq_nbits)."),
    pq_nbits: Optional[int] = typer.Option(None, "--pq-nbits", help="ivfpq: 4 (SIMD fast scan, default) or 8 bits."),
    train_size: Optional[int] = typer.Option(None, "--train-size", help="ivfpq: training vectors per modality."),
    pca: Optional[int] = typer.Option(None, "--pca", help="ivfpq: PCA dims before coding (0: none)."),
    refine: Optional[str] = typer.Option(None, "--refine", help="ivfpq: exact re-scoring from fp16, flat or none."),
    k_factor: Optional[int] = typer.Option(None, "--k-factor", help="ivfpq: candidates re-scored = k x this."),
    hnsw_m: Optional[int] = typer.Option(None, "--hnsw-m", help="hnsw: links per node."),
    ef_construction: Optional[int] = typer.Option(None, "--ef-construction", help="hnsw: build-time beam width."),
    ef_search: Optional[int] = typer.Option(None, "--ef-search", help="hnsw: search-time beam width."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary instead of text."),
) -> None:
    """Build a FAISS index (exact, IVF-PQ or HNSW; one per modality) over a feature folder and save it."""
    from vireid.workflows.search import build_index

    params = {"nlist": nlist, "nprobe": nprobe, "pq_m": pq_m, "pq_nbits": pq_nbits, "train_size": train_size,
              "pca": pca, "refine": refine, "k_factor": k_factor, "hnsw_m": hnsw_m,
              "ef_construction": ef_construction, "ef_search": ef_search}
    typer.echo(build_index(features, out, kind, params=params, as_json=as_json))


@app.command("search")
@plugin_options
def search_command(
    queries: Optional[list[Path]] = typer.Argument(None, help="Query image file(s), or tracklet folder(s): a "
                                                   "folder's frames (sorted by name) are one query; with --text at "
                                                   "most one image (the described person's)."),
    index: Path = typer.Option(..., "--index", "-i", help="Index folder written by vireid index."),
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="The model the index was built with."),
    k: int = typer.Option(10, "--top-k", "-k", min=1, help="Results per query."),
    modality: Optional[str] = typer.Option(None, "--modality", "-m", help="Query modality: visible or infrared "
                                           "(also vis, rgb, ir, nir, thermal) or auto (default: guessed per image, "
                                           "grey images are infrared; the decision is printed)."),
    cross_modality: bool = typer.Option(False, "--cross-modality", "-x", help="Search only the gallery images of the "
                                        "other modality than each query's."),
    gallery_modality: Optional[str] = typer.Option(None, "--gallery-modality", help="Search only this gallery "
                                                   "modality (visible or infrared)."),
    rerank: bool = typer.Option(False, "--rerank", help="k-reciprocal re-ranking of the top candidates."),
    rerank_candidates: int = typer.Option(100, "--rerank-candidates", min=1, help="Candidates per query re-ranked."),
    nprobe: Optional[int] = typer.Option(None, "--nprobe", help="ivfpq: cells visited (overrides the stored value)."),
    ef_search: Optional[int] = typer.Option(None, "--ef-search", help="hnsw: beam width (overrides the stored value)."),
    device: str = typer.Option("cpu", "--device", help="Torch device: cpu, cuda or cuda:N."),
    flip: Optional[bool] = typer.Option(None, "--flip/--no-flip", help="Test-time flip for the queries (default: "
                                        "as the index's features were extracted)."),
    force: bool = typer.Option(False, "--force", help="Search even when the index was built by another model "
                               "(its recorded fingerprint differs): a warning instead of a refusal."),
    amp: Optional[str] = typer.Option(None, "--amp", help="Mixed precision: auto, none, bf16 or fp16 (default: the model's train.amp)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    where: Optional[str] = typer.Option(None, "--where", "-w", help="Keep only gallery images matching "
                                        "name=value clauses, comma-separated, | between alternatives: modality or "
                                        "an attribute, e.g. 'modality=infrared,backpack=yes' (an unknown name or "
                                        "value is answered with the known ones; README: Attributes)."),
    text: Optional[str] = typer.Option(None, "--text", "-t", help="Search with a description of the person, e.g. "
                                       "\"man, dark coat, backpack\" (a text model: text_synth, text_fusion_synth); "
                                       "with one query image, the image and the words together."),
) -> None:
    """Rank the gallery images of an index for query images (a folder: one tracklet query from its frames), or for
    a description (--text): path, score, identity and camera. Refuses an index built with another model (see
    --force). --where filters by modality and attribute labels (the gallery's own, else the model's predictions;
    the output says which)."""
    from vireid.workflows.search import search_gallery, search_gallery_text

    queries = list(queries or [])
    if text is not None:
        if len(queries) > 1:
            raise VireidError(f"--text takes at most one query image (the described person's), got {len(queries)}")
        notes, out = search_gallery_text(text, index, checkpoint, image=queries[0] if queries else None, k=k,
                                         modality=modality, cross_modality=cross_modality,
                                         gallery_modality=gallery_modality, rerank=rerank,
                                         rerank_candidates=rerank_candidates,
                                         search_params={"nprobe": nprobe, "ef_search": ef_search}, device=device,
                                         force=force, amp=amp, as_json=as_json, where=where)
        for note in notes:
            typer.echo(note, err=True)
        typer.echo(out)
        return
    if not queries:
        raise VireidError("give one or more query images, or a description with --text")
    notes, text = search_gallery(queries, index, checkpoint, k=k, modality=modality, cross_modality=cross_modality,
                                 gallery_modality=gallery_modality, rerank=rerank,
                                 rerank_candidates=rerank_candidates,
                                 search_params={"nprobe": nprobe, "ef_search": ef_search}, device=device, flip=flip,
                                 force=force, amp=amp, as_json=as_json, where=where)
    for note in notes:
        typer.echo(note, err=True)
    typer.echo(text)
