"""A training run: the ``vireid train`` and ``vireid eval`` workflows.

:func:`start_training` turns the command's options (config, overrides, ``--resume``, ``--init-from``,
``--freeze``) into a checked config and a run folder; :func:`run_training` trains, plots the curves,
calibrates the verification threshold and evaluates the best checkpoint; :func:`evaluate_models`
evaluates one or several models (pooling trials of one config).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

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
                # verification threshold on the held-out identities, stored in best.pt (vireid.workflows.calibration)
                from vireid.workflows.calibration import calibrate_after_training

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
    (``data``: a :class:`vireid.workflows.eval_data.DataChoice`); where the results go is described in
    :mod:`vireid.workflows.evaluate_run` (the run folder for its own data, ``out`` when given). ``amp``
    overrides the checkpoint's ``train.amp`` for the feature pass (vireid.engine.precision)."""
    from vireid.workflows.eval_data import DataChoice

    choice = data or DataChoice()
    if data_root is not None:
        choice.data_root = data_root
    if Path(checkpoint).suffix.lower() == ".onnx":  # an exported model (vireid.workflows.evaluate_export)
        from vireid.workflows.evaluate_export import evaluate_exported

        return evaluate_exported(checkpoint, protocols=protocols, rerank=rerank, draw=draw, trials=trials,
                                 rand_perm_cam=rand_perm_cam, device=device, progress=progress, quiet=quiet,
                                 choice=choice, out=out, flip=flip, npu_gallery=npu_gallery)
    from vireid.workflows.evaluate_run import evaluate_run

    return evaluate_run(Path(checkpoint), protocols=protocols, rerank=rerank, choice=choice, draw=draw, trials=trials,
                        rand_perm_cam=rand_perm_cam, device=device, progress=progress, quiet=quiet,
                        verification=verification, out=out, flip=flip, npu_gallery=npu_gallery, amp=amp)


def start_training(*, config: Optional[str] = None, overrides: Sequence[str] = (), resume: Optional[Path] = None,
                   run_dir: Optional[Path] = None, evaluate: bool = True, init_from: Optional[Path] = None,
                   freeze: Optional[int] = None) -> dict:
    """``vireid train``: a new run from ``config`` + ``overrides`` (or a fine-tuning run ``init_from`` a trained
    model, first ``freeze`` stages fixed), or the interrupted run in ``resume`` continued; then
    :func:`run_training`."""
    from vireid.plugins import stored_config, user_config
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
        cfg = stored_config(saved["config"], source=f"run {resume}")
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
                cfg = user_config(resolve_config(config), extra)
                cfg.train.init_from = str(init_from.resolve())
        else:
            cfg = user_config(resolve_config(config) if config else None, extra)
        validate_config(cfg)
        folder = run_dir or Path(cfg.output_dir) / cfg.name
        if (folder / "last.pt").exists():
            raise VireidError(
                f"run folder {folder} already holds a run; continue it with --resume {folder}, "
                f"or choose another folder with --run-dir or name=..."
            )
    return run_training(cfg, folder, resume=resume is not None, evaluate=evaluate)


def evaluate_models(checkpoints: Sequence[Path], *, protocols: Sequence[str] = (), rerank: bool = False,
                    rerank_method: Optional[str] = None, choice=None, draw: Optional[str] = None,
                    trials: Optional[int] = None, rand_perm_cam: Optional[str] = None, device: str = "auto",
                    out: Optional[Path] = None, flip: Optional[bool] = None, npu_gallery: Optional[str] = None,
                    amp: Optional[str] = None) -> list[list]:
    """``vireid eval``: each model's results (:func:`evaluate_checkpoint`); several runs that are trials of one
    config are also pooled into one mean ± std table, other models get one row each. ``choice`` is the
    (unchecked) :class:`~vireid.workflows.eval_data.DataChoice` of the data options."""
    from vireid.workflows.eval_data import DataChoice

    choice = choice if choice is not None else DataChoice()
    from vireid.workflows.eval_data import check_choice
    from vireid.workflows.evaluate_run import poolable
    from vireid.evaluation.protocols import aggregate_results, format_results_table
    from vireid.evaluation.rerank_modality import rerank_settings

    if rerank_method:
        rerank_settings(rerank_method)  # an unknown method fails before any feature is computed
    choice = check_choice(choice)
    if out is not None and len(checkpoints) > 1:
        raise VireidError("--out holds the results of one model; evaluate several models one at a time with --out, "
                          "or drop --out")
    per_model = []
    for ckpt in checkpoints:
        if not ckpt.exists():
            raise VireidError(f"model {ckpt} does not exist; pass a run folder, a .pt checkpoint or an exported model")
        per_model.append(evaluate_checkpoint(
            ckpt, protocols=tuple(protocols), rerank=[False, rerank_method or True] if rerank or rerank_method else [False], draw=draw,
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
    return per_model
