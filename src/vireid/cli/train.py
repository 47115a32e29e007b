"""``vireid train`` and ``vireid eval``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from vireid.cli import app
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
            raise VireidError(f"cannot resume: {ckpt_path} does not exist; pass the folder of an interrupted run")
        from vireid.modeling.modules.non_local import upgrade_non_local_params

        saved = load_checkpoint(ckpt_path)
        cfg = config_from_dict(saved["config"])
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
    """Train (or resume), then plot the curves and evaluate the best checkpoint on the test protocols."""
    from vireid.engine.trainer import Trainer

    trainer = Trainer(cfg, folder, resume=resume)
    try:
        summary = trainer.fit()
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
                        verification: bool = True) -> list:
    """Evaluate a checkpoint (or run folder) on its dataset's test protocols; writes results into the run folder."""
    if Path(checkpoint).suffix.lower() == ".onnx":  # an exported model (vireid.export.evaluate)
        from vireid.export.evaluate import evaluate_exported

        return evaluate_exported(checkpoint, protocols=protocols, rerank=rerank, data_root=data_root, draw=draw,
                                 trials=trials, rand_perm_cam=rand_perm_cam, device=device, progress=progress, quiet=quiet)
    from vireid.data.build import prepare_dataset
    from vireid.engine.checkpoint import atomic_write_text
    from vireid.engine.evaluate import apply_eval_overrides, evaluate_model
    from vireid.engine.trainer import load_model_from_checkpoint, resolve_device
    from vireid.evaluation.protocols import format_results_table

    dev = resolve_device(device)
    model, cfg, ckpt = load_model_from_checkpoint(checkpoint, dev)
    apply_eval_overrides(cfg, data_root=data_root, draw=draw, trials=trials, rand_perm_cam=rand_perm_cam)
    dataset = prepare_dataset(cfg.data, progress=progress)
    pool: dict = {}
    results = evaluate_model(model, dataset, cfg, dev, protocols=protocols, rerank=rerank, progress=progress,
                             method=cfg.name, features_out=pool)
    table = format_results_table(results)
    if not quiet:
        print(table)
    run_dir = checkpoint if checkpoint.is_dir() else checkpoint.parent
    atomic_write_text(run_dir / "test_results.json", json.dumps([r.to_dict() for r in results], indent=2))
    atomic_write_text(run_dir / "test_results.md", table + "\n")
    if verification:  # verification ROC/EER/TAR@FAR and roc.png (vireid.engine.calibration)
        from vireid.engine.calibration import report_verification

        report_verification(checkpoint, model, cfg, ckpt, dataset, pool["features"], pool["records"], dev,
                            progress=progress, quiet=quiet)
    return results


@app.command("eval")
def eval_command(
    checkpoints: list[Path] = typer.Argument(..., help="Run folder(s) (their best.pt) or checkpoint file(s). Several, e.g. the 10 RegDB splits, are also pooled into one mean ± std."),
    protocol: Optional[list[str]] = typer.Option(None, "--protocol", "-p", help="Protocol(s), e.g. sysu-all-single; default: the dataset's standard ones."),
    rerank: bool = typer.Option(False, "--rerank", help="Also report k-reciprocal re-ranking (Zhong et al. 2017)."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Dataset folder, if it moved since training."),
    draw: Optional[str] = typer.Option(None, "--draw", help="SYSU-MM01 gallery draw: official (rand_perm_cam.mat) or seeded."),
    trials: Optional[int] = typer.Option(None, "--trials", help="Number of gallery-draw trials (default 10)."),
    rand_perm_cam: Optional[str] = typer.Option(None, "--rand-perm-cam", help="Official SYSU-MM01 rand_perm_cam.mat (default: <dataset>/exp/rand_perm_cam.mat)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Evaluate trained models under the official protocols (mean ± std over trials, and over models)."""
    from vireid.evaluation.protocols import aggregate_results, format_results_table

    per_model = [
        evaluate_checkpoint(ckpt, protocols=tuple(protocol or ()), rerank=[False, True] if rerank else [False],
                            data_root=data_root, draw=draw, trials=trials, rand_perm_cam=rand_perm_cam, device=device)
        for ckpt in checkpoints
    ]
    if len(per_model) > 1:
        groups: dict[tuple, list] = {}
        for results in per_model:
            for r in results:
                groups.setdefault((r.name, bool(r.settings.get("rerank"))), []).append(r)
        pooled = [aggregate_results(group) for group in groups.values()]
        print(f"\nmean ± std over {len(per_model)} models (their trials pooled):")
        print(format_results_table(pooled))
