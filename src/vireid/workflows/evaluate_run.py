"""``vireid eval`` of one model (run folder, ``.pt`` or exported ``.onnx``) on any data, and where
its results go.

What is evaluated: :mod:`vireid.workflows.eval_data` (the run's own test data, never regenerated, or
``--data``/``--images`` with ``--query``/``--gallery``). Where the results go:

* ``out`` (``--out DIR``): ``test_results.json``/``.md``, ``verification.json`` and ``roc.png``
  in that folder; the run is not touched.
* no ``out``, the run's own data: the run folder, as ``vireid train`` does -- results of the
  protocols evaluated *replace their own entries* of ``test_results.json`` and keep the others
  (``vireid eval RUN -p X`` no longer drops the other protocols' results). A read-only run folder
  is evaluated all the same; the results are printed and a note says where ``--out`` would keep
  them. An exported model writes ``<model>.test_results.*`` beside its file instead.
* no ``out``, other data: nothing is written (those results are not about the run's test data);
  the note names ``--out``.

Evaluation never writes into a checkpoint: when a model carries no calibrated verification
threshold, one is computed on the held-out identities for the report only (store one with
``vireid calibrate``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vireid.workflows.eval_data import DataChoice, load_eval_dataset, select_data


def _result_key(entry: dict) -> tuple:
    settings = entry.get("settings") or {}
    return (entry.get("name"), bool(settings.get("rerank")), bool(settings.get("flip")))


def merge_results(previous: Any, new: list[dict]) -> list[dict]:
    """``previous`` entries of ``test_results.json`` whose (protocol, re-rank, flip) was not
    evaluated again, then the new entries."""
    if not isinstance(previous, list):
        return list(new)
    fresh = {_result_key(e) for e in new}
    kept = [e for e in previous if isinstance(e, dict) and _result_key(e) not in fresh]
    return kept + list(new)


def writable(folder: Path) -> bool:
    """True when files can be created in ``folder`` (created if absent)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def output_folder(run_dir: Path, choice: DataChoice, out: str | Path | None, *, quiet: bool = False) -> Path | None:
    """Where an evaluation's files go (see the module docstring); None: nowhere (a note is printed)."""
    if out is not None:
        folder = Path(out).expanduser()
        if folder.exists() and not folder.is_dir():
            from vireid.errors import VireidError

            raise VireidError(f"--out {folder} is a file; pass a folder for the results")
        if not writable(folder):
            from vireid.errors import VireidError

            raise VireidError(f"--out {folder} cannot be written; pass a folder you may write to")
        return folder
    if not choice.own:
        if not quiet:
            print(f"results on {choice.describe()} are not saved into the run; pass --out DIR to keep them")
        return None
    if not writable(run_dir):
        if not quiet:
            print(f"run folder {run_dir} is read-only, so the results were not saved; pass --out DIR to keep them")
        return None
    return run_dir


def write_results(folder: Path, results: list, merge: bool, stem: str = "test_results") -> None:
    """``<stem>.json`` (merged with the previous one when ``merge``) and ``<stem>.md`` in ``folder``."""
    from vireid.engine.checkpoint import atomic_write_text
    from vireid.evaluation.protocols import format_results_table

    from vireid.evaluation.protocols import ProtocolResult

    entries = [r.to_dict() for r in results]
    path = folder / f"{stem}.json"
    if merge and path.is_file():
        try:
            entries = merge_results(json.loads(path.read_text()), entries)
        except (OSError, json.JSONDecodeError):
            pass
    atomic_write_text(path, json.dumps(entries, indent=2))
    try:  # the table shows every entry the JSON holds
        table = format_results_table([ProtocolResult(**{**e, "cmc": e.get("cmc", [])}) for e in entries])
    except (TypeError, KeyError):
        table = format_results_table(results)
    atomic_write_text(folder / f"{stem}.md", table + "\n")


def evaluate_run(checkpoint: Path, *, protocols: tuple[str, ...] = (), rerank=None, choice: DataChoice | None = None,
                 draw: str | None = None, trials: int | None = None, rand_perm_cam: str | None = None,
                 device: str = "auto", progress: bool = True, quiet: bool = False, verification: bool = True,
                 out: str | Path | None = None, flip: bool | None = None, npu_gallery: str | None = None,
                 amp: str | None = None) -> list:
    """Evaluate a PyTorch checkpoint (or run folder); see the module docstring for the files."""
    from vireid.workflows.evaluate_model import apply_eval_overrides, evaluate_model
    from vireid.engine.trainer import load_model_from_checkpoint, resolve_device
    from vireid.evaluation.protocols import format_results_table

    choice = choice or DataChoice()
    checkpoint = Path(checkpoint)
    run_dir = checkpoint if checkpoint.is_dir() else checkpoint.parent
    dev = resolve_device(device)
    model, cfg, ckpt = load_model_from_checkpoint(checkpoint, dev)
    cfg = select_data(cfg, choice, run_dir)
    apply_eval_overrides(cfg, draw=draw, trials=trials, rand_perm_cam=rand_perm_cam, npu_gallery=npu_gallery)
    if flip is not None:
        cfg.eval.flip = bool(flip)
    dataset = load_eval_dataset(cfg, choice, progress=progress)
    if not quiet and getattr(dataset, "description", None):
        print(f"evaluating {cfg.data.root}: {dataset.description}")
    pool: dict = {}
    results = evaluate_model(model, dataset, cfg, dev, protocols=protocols, rerank=rerank, progress=progress,
                             method=cfg.name, features_out=pool, amp=amp)
    label_results(results, cfg, choice)
    if not quiet:
        print(format_results_table(results))
    folder = output_folder(run_dir, choice, out, quiet=quiet)
    if folder is not None:
        write_results(folder, results, merge=out is None or folder == run_dir)
    if verification:  # verification ROC/EER/TAR@FAR and roc.png (vireid.workflows.calibration)
        from vireid.workflows.calibration import report_verification

        report_verification(checkpoint, model, cfg, ckpt, dataset, pool["features"], pool["records"], dev,
                            progress=progress, quiet=quiet, folder=folder, own_data=choice.own)
    return results


def label_results(results: list, cfg: Any, choice: DataChoice) -> None:
    """Record in each result what it was computed on (data, query/gallery modalities, flip)."""
    for r in results:
        r.settings["flip"] = bool(cfg.eval.flip)
        if not choice.own:
            r.settings["data"] = f"{cfg.data.format}:{cfg.data.root}"
        if choice.query or choice.gallery:
            r.settings["query"] = choice.query or "-"
            r.settings["gallery"] = choice.gallery or "-"


def experiment_config(model_path: Path) -> dict | None:
    """The training config of a model file or run folder, as a dict (None when it records none)."""
    if model_path.suffix.lower() == ".onnx":
        try:
            from vireid.inference.onnx_embedder import read_metadata

            meta = read_metadata(model_path)
            return json.loads(meta["config"]) if "config" in meta else None
        except Exception:  # noqa: BLE001 - an unreadable file fails in its own evaluation first
            return None
    from vireid.engine.checkpoint import load_checkpoint

    try:
        return dict(load_checkpoint(model_path).get("config") or {})
    except Exception:  # noqa: BLE001
        return None


def split_trial(config: dict) -> tuple[dict, Any]:
    """(the config without what differs between the splits of one experiment, its trial)."""
    import copy

    cfg = copy.deepcopy(config)
    cfg.pop("name", None)
    cfg.pop("output_dir", None)
    options = (cfg.get("data") or {}).get("options") or {}
    trial = options.pop("trial", None)
    return cfg, trial


def poolable(paths: list[Path]) -> tuple[bool, str]:
    """Whether several models are the splits of one experiment -- the same training config apart
    from the run name and ``data.options.trial``, each a different trial, all PyTorch runs or all
    exports of one precision -- so that pooling their trials (RegDB's 10 splits) means something.
    Returns (decision, reason in words)."""
    configs = [experiment_config(p) for p in paths]
    if any(c is None for c in configs):
        return False, "a model records no training config"
    kinds = {p.suffix.lower() == ".onnx" for p in paths}
    if len(kinds) > 1 or any(".int8" in p.name for p in paths) != all(".int8" in p.name for p in paths):
        return False, "they are different kinds of model (checkpoint, fp32 or int8 export)"
    stripped = [split_trial(c) for c in configs]
    base = stripped[0][0]
    if any(s[0] != base for s in stripped[1:]):
        return False, "their configs differ beyond the trial"
    trials = [s[1] for s in stripped]
    if any(t is None for t in trials) or len(set(map(str, trials))) != len(trials):
        return False, "they are not different trials (data.options.trial) of one config"
    return True, f"trials {', '.join(map(str, trials))} of one config"


__all__ = ["evaluate_run", "experiment_config", "label_results", "merge_results", "output_folder", "poolable",
           "split_trial", "write_results"]
