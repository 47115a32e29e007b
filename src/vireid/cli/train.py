"""``vireid train`` and ``vireid eval``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vireid.cli.app import app, plugin_options
from vireid.workflows.train_run import PACKAGED_CONFIGS, resolve_config  # noqa: F401  (used by command modules)


@app.command("train")
@plugin_options
def train_command(
    overrides: Optional[list[str]] = typer.Argument(None, help="Config overrides key=value, e.g. optim.lr=0.01 train.epochs=5."),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="YAML config file or shipped config name."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this folder from its last.pt."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Run folder (default: output_dir/name)."),
    evaluate: bool = typer.Option(True, "--eval/--no-eval", help="Evaluate the best checkpoint on the test protocols at the end."),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="Fine-tune a trained model (run folder or .pt) on this config's data with a new identity classifier; without --config its own config is the base (name: <its name>_ft)."),
    freeze: Optional[int] = typer.Option(None, "--freeze", help="Keep the first N backbone stages fixed (train.freeze_stages; 1 = stem, 2 = stem + stage 1)."),
) -> None:
    """Train a model from a config; checkpoints, metrics and curves go to the run folder."""
    from vireid.workflows.train_run import start_training

    start_training(config=config, overrides=list(overrides or []), resume=resume, run_dir=run_dir, evaluate=evaluate,
                   init_from=init_from, freeze=freeze)


#: the data options shared by eval, calibrate, visualize and report (vireid.workflows.eval_data)
DATA_HELP = ("Evaluate other data: FORMAT:ROOT, e.g. csv:mine/manifest.csv or sysu-mm01:/data/SYSU-MM01 "
             "(default: the run's own test data).")
IMAGES_HELP = "Evaluate other data: a CSV manifest or dataset folder, its format detected (or --format)."
FORMAT_HELP = "Format of --images: csv, folder, sysu-mm01, regdb, llcm or npu-reid (default: detected)."
QUERY_HELP = "Modality of the queries (visible or infrared; vis, rgb, ir, nir, thermal also work)."
GALLERY_HELP = "Modality of the gallery (default: the other one)."
DATA_ROOT_HELP = "The run's own dataset folder, if it moved since training."


def data_choice(data: Optional[str], images: Optional[str], fmt: Optional[str], query: Optional[str],
                gallery: Optional[str], data_root: Optional[str]):
    """The checked :class:`~vireid.workflows.eval_data.DataChoice` of a command's data options."""
    from vireid.workflows.eval_data import DataChoice, check_choice

    return check_choice(DataChoice(data=data, images=images, fmt=fmt, query=query, gallery=gallery,
                                   data_root=data_root))


@app.command("eval")
@plugin_options
def eval_command(
    checkpoints: list[Path] = typer.Argument(..., help="Run folder(s) (their best.pt), checkpoint file(s) or exported models. Several runs that are trials of one config (e.g. RegDB's 10 splits) are also pooled into one mean ± std; other models get one row each."),
    protocol: Optional[list[str]] = typer.Option(None, "--protocol", "-p", help="Protocol(s), e.g. sysu-all-single; default: the dataset's standard ones."),
    rerank: bool = typer.Option(False, "--rerank", help="Also report k-reciprocal re-ranking (Zhong et al. 2017)."),
    data: Optional[str] = typer.Option(None, "--data", help=DATA_HELP),
    images: Optional[str] = typer.Option(None, "--images", help=IMAGES_HELP),
    fmt: Optional[str] = typer.Option(None, "--format", help=FORMAT_HELP),
    query: Optional[str] = typer.Option(None, "--query", help=QUERY_HELP + " Default for data without a fixed query: infrared."),
    gallery: Optional[str] = typer.Option(None, "--gallery", help=GALLERY_HELP),
    data_root: Optional[str] = typer.Option(None, "--data-root", help=DATA_ROOT_HELP),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for test_results.json/.md, verification.json and roc.png (default: the run folder for its own data; nothing saved for other data)."),
    flip: Optional[bool] = typer.Option(None, "--flip/--no-flip", help="Test-time flip: average each embedding with its mirror image's (default: the run's eval.flip)."),
    rerank_method: Optional[str] = typer.Option(None, "--rerank-method", help="Re-ranking that --rerank reports: k-reciprocal (default) or modality (modality-aware, docs/evaluation.md); implies --rerank."),
    draw: Optional[str] = typer.Option(None, "--draw", help="SYSU-MM01 gallery draw: official (rand_perm_cam.mat) or seeded."),
    trials: Optional[int] = typer.Option(None, "--trials", help="Number of gallery-draw trials (default 10)."),
    rand_perm_cam: Optional[str] = typer.Option(None, "--rand-perm-cam", help="Official SYSU-MM01 rand_perm_cam.mat (default: <dataset>/exp/rand_perm_cam.mat)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    npu_gallery: Optional[str] = typer.Option(None, "--npu-gallery", help="NPU-ReID gallery draw: per_person (the paper's 1 or 10 images of a person; default) or per_camera."),
    amp: Optional[str] = typer.Option(None, "--amp", help="Mixed precision: auto, none, bf16 or fp16 (default: the model's train.amp)."),
) -> None:
    """Evaluate trained models under the official protocols, or on your own data (--data/--images)."""
    from vireid.workflows.eval_data import DataChoice
    from vireid.workflows.train_run import evaluate_models

    choice = DataChoice(data=data, images=images, fmt=fmt, query=query, gallery=gallery, data_root=data_root)
    evaluate_models(list(checkpoints), protocols=tuple(protocol or ()), rerank=rerank, rerank_method=rerank_method,
                    choice=choice, draw=draw, trials=trials, rand_perm_cam=rand_perm_cam, device=device, out=out,
                    flip=flip, npu_gallery=npu_gallery, amp=amp)
