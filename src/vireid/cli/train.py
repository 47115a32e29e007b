"""``vireid train`` and ``vireid eval``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from vireid.cli import app, plugin_options
from vireid.config import SHIPPED_CONFIGS, find_yaml, shipped_names
from vireid.errors import VireidError

PACKAGED_CONFIGS = SHIPPED_CONFIGS


def resolve_config(path: str) -> Path:
    """A config path, or the name of a config shipped with vireid (``agw_sysu`` -> configs/agw_sysu.yaml)."""
    found = find_yaml(path, PACKAGED_CONFIGS)
    if found is None:
        raise VireidError(
            f"config {path!r} is neither a file nor a shipped config; shipped configs: {shipped_names(PACKAGED_CONFIGS)}"
        )
    return found


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
    from vireid.config import config_from_dict, load_config
    from vireid.engine.checkpoint import load_checkpoint
    from vireid.engine.trainer import validate_config

    if resume is not None:
        ckpt_path = resume / "last.pt"
        if not ckpt_path.is_file():
            if (resume / "config.yaml").is_file():
                raise VireidError(f"cannot resume: run {resume} has no checkpoint yet (it stopped during its first "
                                  "epoch); start it again with the same command without --resume")
            raise VireidError(f"cannot resume: {ckpt_path} does not exist; pass the folder of an interrupted run")
        from vireid.modeling.modules.non_local import upgrade_non_local_params

        saved = load_checkpoint(ckpt_path)
        cfg = config_from_dict(saved["config"], source=f"run {resume}")
        upgrade_non_local_params(cfg.model.params, saved["model"])  # a run started when "agw" meant C/2 blocks
        if overrides or init_from is not None or freeze is not None:
            raise VireidError("--resume continues a run with its own config; drop the key=value overrides, --init-from and --freeze")
        folder = resume
    else:
        extra = list(overrides or []) + ([f"train.freeze_stages={freeze}"] if freeze is not None else [])
        if init_from is not None:  # transfer (vireid.engine.transfer)
            from vireid.engine.transfer import transfer_config

            if not init_from.exists():
                raise VireidError(f"--init-from {init_from} does not exist; pass a trained run folder or .pt checkpoint")
            if config is None:
                cfg = transfer_config(init_from.resolve(), extra)
            else:
                cfg = load_config(resolve_config(config), extra)
                cfg.train.init_from = str(init_from.resolve())
        else:
            cfg = load_config(resolve_config(config) if config else None, extra)
        validate_config(cfg)
        folder = run_dir or Path(cfg.output_dir) / cfg.name
        if (folder / "last.pt").exists():
            raise VireidError(
                f"run folder {folder} already holds a run; continue it with --resume {folder}, "
                f"or choose another folder with --run-dir or name=..."
            )
    run_training(cfg, folder, resume=resume is not None, evaluate=evaluate)


def run_training(cfg, folder: Path, resume: bool = False, evaluate: bool = True) -> dict:
    """Train (or resume), then plot the curves and evaluate the best checkpoint on the test protocols.

    Everything printed also goes to ``folder/log.txt``, which starts with the run's summary
    (:func:`vireid.engine.run_logging.run_summary`). ``data.root`` is stored absolute, so the run
    can be evaluated from any folder. Ctrl+C stops the run and prints how to resume it.
    """
    import os

    from vireid.engine.run_logging import RunLog, run_summary
    from vireid.engine.trainer import Trainer

    if not resume:
        cfg.data.root = str(Path(cfg.data.root).expanduser().absolute())
    main = int(os.environ.get("RANK", "0")) == 0
    with RunLog(folder, enabled=main):
        trainer = Trainer(cfg, folder, resume=resume)
        try:
            if trainer.dist.is_main:
                print(run_summary(trainer), flush=True)
            try:
                summary = trainer.fit()
            except KeyboardInterrupt:
                if trainer.dist.is_main:
                    last = folder / "last.pt"
                    state = f"{last} holds the last finished epoch" if last.is_file() else "no epoch finished yet"
                    print(f"\ninterrupted ({state}); continue with: vireid train --resume {folder}", flush=True)
                raise
            if trainer.dist.is_main:
                from vireid.viz.curves import plot_training_curves

                plot_training_curves(folder)
                # verification threshold on the held-out identities, stored in best.pt (vireid.engine.calibration)
                from vireid.engine.calibration import calibrate_after_training

                summary["verification"] = calibrate_after_training(folder, trainer.data, trainer.device)
                if evaluate:
                    results = evaluate_checkpoint(folder, progress=cfg.train.progress)
                    summary["test"] = [r.to_dict() for r in results]
        finally:
            trainer.close()
    return summary


def evaluate_checkpoint(checkpoint: Path, *, protocols: tuple[str, ...] = (), rerank=None, data_root: str | None = None,
                        draw: str | None = None, trials: int | None = None, rand_perm_cam: str | None = None,
                        device: str = "auto", progress: bool = True, quiet: bool = False,
                        verification: bool = True, data=None, out: Path | None = None, flip: bool | None = None,
                        npu_gallery: str | None = None, amp: str | None = None) -> list:
    """Evaluate a checkpoint, run folder or exported model on its test protocols or on other data
    (``data``: a :class:`vireid.engine.eval_data.DataChoice`); where the results go is described in
    :mod:`vireid.engine.run_eval` (the run folder for its own data, ``out`` when given). ``amp``
    overrides the checkpoint's ``train.amp`` for the feature pass (vireid.engine.precision)."""
    from vireid.engine.eval_data import DataChoice

    choice = data or DataChoice()
    if data_root is not None:
        choice.data_root = data_root
    if Path(checkpoint).suffix.lower() == ".onnx":  # an exported model (vireid.export.evaluate)
        from vireid.export.evaluate import evaluate_exported

        return evaluate_exported(checkpoint, protocols=protocols, rerank=rerank, draw=draw, trials=trials,
                                 rand_perm_cam=rand_perm_cam, device=device, progress=progress, quiet=quiet,
                                 choice=choice, out=out, flip=flip, npu_gallery=npu_gallery)
    from vireid.engine.run_eval import evaluate_run

    return evaluate_run(Path(checkpoint), protocols=protocols, rerank=rerank, choice=choice, draw=draw, trials=trials,
                        rand_perm_cam=rand_perm_cam, device=device, progress=progress, quiet=quiet,
                        verification=verification, out=out, flip=flip, npu_gallery=npu_gallery, amp=amp)


#: the data options shared by eval, calibrate, visualize and report (vireid.engine.eval_data)
DATA_HELP = ("Evaluate other data: FORMAT:ROOT, e.g. csv:mine/manifest.csv or sysu-mm01:/data/SYSU-MM01 "
             "(default: the run's own test data).")
IMAGES_HELP = "Evaluate other data: a CSV manifest or dataset folder, its format detected (or --format)."
FORMAT_HELP = "Format of --images: csv, folder, sysu-mm01, regdb, llcm or npu-reid (default: detected)."
QUERY_HELP = "Modality of the queries (visible or infrared; vis, rgb, ir, nir, thermal also work)."
GALLERY_HELP = "Modality of the gallery (default: the other one)."
DATA_ROOT_HELP = "The run's own dataset folder, if it moved since training."


def data_choice(data: Optional[str], images: Optional[str], fmt: Optional[str], query: Optional[str],
                gallery: Optional[str], data_root: Optional[str]):
    """The checked :class:`~vireid.engine.eval_data.DataChoice` of a command's data options."""
    from vireid.engine.eval_data import DataChoice, check_choice

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
    from vireid.engine.run_eval import poolable
    from vireid.evaluation.protocols import aggregate_results, format_results_table
    from vireid.evaluation.rerank_modality import rerank_settings

    if rerank_method:
        rerank_settings(rerank_method)  # an unknown method fails before any feature is computed
    choice = data_choice(data, images, fmt, query, gallery, data_root)
    if out is not None and len(checkpoints) > 1:
        raise VireidError("--out holds the results of one model; evaluate several models one at a time with --out, "
                          "or drop --out")
    per_model = []
    for ckpt in checkpoints:
        if not ckpt.exists():
            raise VireidError(f"model {ckpt} does not exist; pass a run folder, a .pt checkpoint or an exported model")
        per_model.append(evaluate_checkpoint(
            ckpt, protocols=tuple(protocol or ()), rerank=[False, rerank_method or True] if rerank or rerank_method else [False], draw=draw,
            trials=trials, rand_perm_cam=rand_perm_cam, device=device, data=choice, out=out, flip=flip,
            npu_gallery=npu_gallery, amp=amp))
    if len(per_model) > 1:
        pool, why = poolable(list(checkpoints))
        if pool:
            groups: dict[tuple, list] = {}
            for results in per_model:
                for r in results:
                    groups.setdefault((r.name, bool(r.settings.get("rerank"))), []).append(r)
            pooled = [aggregate_results(group) for group in groups.values()]
            print(f"\nmean ± std over {len(per_model)} models ({why}; their trials pooled):")
            print(format_results_table(pooled))
        else:
            rows = []
            for path, results in zip(checkpoints, per_model):
                for r in results:
                    r.settings["method"] = str(path)
                    rows.append(r)
            print(f"\none row per model (not pooled: {why}):")
            print(format_results_table(rows))
