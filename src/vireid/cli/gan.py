"""``vireid gan``: train a visible <-> infrared translator, translate datasets with it, measure it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from vireid.cli.app import app, plugin_options
from vireid.errors import VireidError

gan_app = typer.Typer(help="Cross-modality image generation: a CycleGAN-style visible <-> infrared translator.",
                      no_args_is_help=True)
app.add_typer(gan_app, name="gan")


@gan_app.command("train")
@plugin_options
def gan_train(
    overrides: Optional[list[str]] = typer.Argument(None, help="Config overrides key=value, e.g. train.epochs=3 gan.reid_model=runs/demo."),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="GAN config file or shipped name (gan_synth, gan_sysu)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the GAN run in this folder from its last.pt."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Run folder (default: output_dir/name)."),
) -> None:
    """Train a translator on a dataset's visible and infrared training images (unpaired)."""
    from vireid.workflows.gan import config_of_run, load_gan_config, train_gan

    if resume is not None:
        if overrides or config is not None:
            raise VireidError("--resume continues a GAN run with its own config; drop --config and the key=value overrides")
        cfg = config_of_run(resume)
        folder = resume
    else:
        if config is None:
            raise VireidError("vireid gan train needs --config (a GAN config file, or gan_synth / gan_sysu), or --resume RUN")
        cfg = load_gan_config(config, list(overrides or []))
        folder = run_dir or Path(cfg.output_dir) / cfg.name
    summary = train_gan(cfg, folder, resume=resume is not None)
    typer.echo(f"GAN run {folder}: {summary['epochs']} epochs; translation grids in {folder / 'samples'}; "
               f"translate a dataset with: vireid gan translate {folder} --images SRC --out DST")


@gan_app.command("translate")
def gan_translate(
    run: Path = typer.Argument(..., help="A GAN run folder (or its last.pt)."),
    images: Path = typer.Option(..., "--images", help="Dataset to translate: a folder tree, CSV manifest or dataset layout."),
    out: Path = typer.Option(..., "--out", help="New folder for the translated dataset (vireid's folder layout)."),
    fmt: Optional[str] = typer.Option(None, "--format", help="Format of --images: folder, csv, sysu-mm01, regdb, llcm or npu-reid (default: detected)."),
    split: Optional[list[str]] = typer.Option(None, "--split", help="Split(s) to translate: train (default), val, query, gallery; repeatable."),
    direction: str = typer.Option("both", "--direction", help="both, visible->infrared or infrared->visible."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images translated at once."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Write each image translated to the other modality, keeping its identity and camera."""
    from vireid.workflows.gan import translate_dataset

    if batch_size < 1:
        raise VireidError(f"--batch-size {batch_size} is invalid; use a positive whole number")
    result = translate_dataset(run, images, out, fmt=fmt, splits=tuple(split or ("train",)), direction=direction,
                               batch_size=batch_size, device=device)
    for name, counts in result["images"].items():
        typer.echo(f"{name}: " + ", ".join(f"{n} {m}" for m, n in sorted(counts.items())))
    typer.echo(f"translated dataset in {out} (folder layout; list in {Path(out) / 'translated.csv'}); train on it with "
               f"data.format=combined (see docs/gan.md)")


@gan_app.command("measure")
@plugin_options
def gan_measure(
    run: Path = typer.Argument(..., help="A GAN run folder."),
    reid: Path = typer.Option(..., "--reid", help="A trained vireid ReID run folder or checkpoint: its embedding space."),
    split: str = typer.Option("test", "--split", help="Split of the GAN's dataset to measure on (test: identities the GAN never saw)."),
    max_images: int = typer.Option(2000, "--max-images", help="At most this many images per modality."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="The GAN's dataset folder, if it moved."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Fréchet distances between real and translated images in a ReID model's embedding space."""
    from vireid.workflows.gan import measure_translation

    if max_images < 2:
        raise VireidError(f"--max-images {max_images} is too small; the Fréchet distance needs at least 2 images")
    result = measure_translation(run, reid, split=split, max_images=max_images, device=device, data_root=data_root)
    typer.echo(f"Fréchet distance to real infrared: translated visible {result['fd_translated_ir']:.4f}, untranslated "
               f"visible {result['fd_visible_ir']:.4f}")
    typer.echo(f"Fréchet distance to real visible: translated infrared {result['fd_translated_vis']:.4f}, untranslated "
               f"infrared {result['fd_infrared_vis']:.4f}")
    (Path(run) / "gan_measures.json").write_text(json.dumps(result, indent=2))
    typer.echo(f"saved {Path(run) / 'gan_measures.json'}")
