"""Cross-dataset generalisation table (``vireid generalisation``): each trained run evaluated on its
own test data (the in-domain row) and on every other dataset named with ``FORMAT:ROOT``, under each
dataset's own test protocol.

The cross-dataset setting: train on one dataset, test under another's official protocol (e.g.
SYSU-MM01 -> RegDB's ``regdb-t2v`` or LLCM's ``llcm-v2i``, as defined in docs/protocols.md). The data of each
row is chosen exactly as ``vireid eval RUN --data FORMAT:ROOT`` chooses it
(:mod:`vireid.workflows.eval_data`): nothing is generated, evaluation-only copies of a dataset are read
as they are, and data without a standard protocol (e.g. a CSV manifest) is ranked as its query and
gallery say. Rank-1 (CMC), mAP and mINP (the inverse negative penalty of Ye et al., "Deep Learning
for Person Re-identification: A Survey and Outlook", TPAMI 2021) are the means over the protocol's
gallery draws, in percent, as :mod:`vireid.evaluation.protocols` computes them.

Protocols (``protocols``): each dataset is evaluated under the requested protocols that fit it (a
RegDB layout under ``regdb-*``, SYSU-MM01 under ``sysu-*``, ...); a dataset that none of them fits
is evaluated under its standard ones; a requested protocol that fits none of the datasets is a
mistake (one sentence). Nothing is written into any run folder: :func:`write_table` writes
``generalisation.md`` and ``generalisation.json`` into the folder the caller names.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from vireid.errors import DatasetError, VireidError

IN_DOMAIN = "in-domain"
CROSS_DOMAIN = "cross-domain"


@dataclass
class GeneralisationRow:
    """One (model, dataset, protocol) cell: means (and stds over gallery draws) in percent."""

    model: str
    trained_on: str
    data: str
    domain: str  # in-domain | cross-domain
    protocol: str
    trials: int
    rank1: float
    mAP: float
    mINP: float
    rank1_std: float
    mAP_std: float
    mINP_std: float


def _describe(fmt: str, root: str | Path) -> str:
    return f"{fmt}:{root}"


def _check_spec(spec: str) -> None:
    """Fail early, with one sentence, on a ``FORMAT:ROOT`` whose format is unknown or root is missing."""
    from vireid.data.datasets import DATASETS
    from vireid.workflows.eval_data import SYNTHETIC_FORMATS, DataChoice, check_choice

    check_choice(DataChoice(data=spec))
    fmt, _, root = spec.partition(":")
    if fmt in SYNTHETIC_FORMATS:
        raise VireidError(f"--data {spec!r} would generate data; read generated data by its layout "
                          "(e.g. sysu-mm01:ROOT or regdb:ROOT) or make it with vireid synth")
    if fmt not in DATASETS:
        raise VireidError(f"--data {spec!r}: format {fmt!r} is unknown; use one of {', '.join(DATASETS.names())}")
    if not Path(root).expanduser().exists():
        raise VireidError(f"--data {spec!r}: {root} does not exist; pass an existing dataset folder or CSV manifest")


def _fitting(dataset: Any, requested: Sequence[str]) -> list[str]:
    """The requested protocols that fit ``dataset`` (all its standard ones when none does)."""
    from vireid.workflows.evaluate_model import protocols_for

    family = getattr(dataset, "protocol_family", "given")
    fit = [p for p in requested if p.startswith(family) or (p == "given" and family == "given")]
    return protocols_for(dataset, fit)


def _model_name(path: Path, paths: Sequence[Path]) -> str:
    """A short label: the run folder's name (``folder/file.pt`` for a checkpoint); the full path when
    two runs would share a label."""
    def short(p: Path) -> str:
        return p.name if p.is_dir() else f"{p.parent.name}/{p.name}"

    return str(path) if sum(short(p) == short(path) for p in paths) > 1 else short(path)


def generalisation_table(runs: Sequence[str | Path], datasets: Sequence[str], *, protocols: Sequence[str] = (),
                         in_domain: bool = True, trials: int | None = None, flip: bool | None = None,
                         device: str = "auto", progress: bool = False) -> list[GeneralisationRow]:
    """One :class:`GeneralisationRow` per (run, dataset, protocol).

    ``runs``: run folders or ``.pt`` checkpoints written by ``vireid train``. ``datasets``:
    ``FORMAT:ROOT`` strings as ``vireid eval --data`` takes them (e.g. ``regdb:/data/RegDB``). With
    ``in_domain`` each run's own test data comes first (its ``data.root`` as stored, else relative
    to the run folder); a ``--data`` naming that same folder is not evaluated twice. Bad input --
    a missing run, an unknown format, a missing root, a protocol that fits none of the data -- is
    one :class:`~vireid.errors.VireidError` sentence, raised before any image is embedded.
    """
    from vireid.workflows.eval_data import DataChoice, load_eval_dataset, select_data
    from vireid.workflows.evaluate_model import apply_eval_overrides, evaluate_model
    from vireid.engine.trainer import load_model_from_checkpoint, resolve_device
    from vireid.evaluation import PROTOCOLS

    paths = [Path(r) for r in runs]
    if not paths:
        raise VireidError("no run given; pass one or more run folders (or .pt checkpoints) written by vireid train")
    for path in paths:
        if not path.exists():
            raise VireidError(f"run {path} does not exist; pass a run folder or a .pt checkpoint written by vireid train")
        if path.suffix.lower() == ".onnx":
            raise VireidError(f"{path} is an exported model; the generalisation table evaluates run folders or .pt "
                              "checkpoints (evaluate an export with vireid eval MODEL --data FORMAT:ROOT)")
    specs = list(dict.fromkeys(datasets))
    for spec in specs:
        _check_spec(spec)
    if not specs and not in_domain:
        raise VireidError("nothing to evaluate: name datasets with --data FORMAT:ROOT or keep the in-domain row")
    for name in protocols:
        if name not in PROTOCOLS:
            raise VireidError(f"unknown protocol {name!r}; choose from {', '.join(PROTOCOLS.names())}")

    dev = resolve_device(device)
    rows: list[GeneralisationRow] = []
    for path in paths:
        model, cfg, _ = load_model_from_checkpoint(path, dev)
        run_dir = path if path.is_dir() else path.parent
        trained_on = _describe(cfg.data.format, cfg.data.root)
        # Every dataset is loaded (records only) and every protocol matched before any image is embedded.
        plan: list[tuple[str, Any, Any, list[str]]] = []
        own_root = None
        if in_domain:
            choice = DataChoice()
            try:
                own_cfg = select_data(cfg, choice, run_dir)
            except DatasetError:
                raise VireidError(
                    f"the dataset {path} was trained on ({cfg.data.root}) is not there for its in-domain row; name "
                    "where it is now with --data FORMAT:ROOT and pass --no-in-domain, or restore the folder") from None
            own_root = Path(own_cfg.data.root).resolve()
            plan.append((IN_DOMAIN, own_cfg, load_eval_dataset(own_cfg, choice), []))
        for spec in specs:
            choice = DataChoice(data=spec)
            data_cfg = select_data(cfg, choice, run_dir)
            if own_root is not None and Path(data_cfg.data.root).resolve() == own_root:
                continue  # the in-domain row already evaluates this folder
            plan.append((CROSS_DOMAIN, data_cfg, load_eval_dataset(data_cfg, choice), []))
        fitted = set()
        for domain, data_cfg, dataset, names in plan:
            names.extend(_fitting(dataset, protocols))
            fitted.update(names)
        unfit = [p for p in protocols if p not in fitted]
        if unfit:
            families = sorted({getattr(d, "protocol_family", "given") for _, _, d, _ in plan})
            raise VireidError(f"protocol {unfit[0]!r} fits none of the data of {path} (protocol families "
                              f"{', '.join(families)}); drop it or add a dataset it belongs to with --data FORMAT:ROOT")
        label = _model_name(path, paths)
        for domain, data_cfg, dataset, names in plan:
            apply_eval_overrides(data_cfg, trials=trials)
            if flip is not None:
                data_cfg.eval.flip = bool(flip)
            results = evaluate_model(model, dataset, data_cfg, dev, protocols=names, rerank=[False],
                                     progress=progress, method=label)
            for r in results:
                rows.append(GeneralisationRow(
                    model=label, trained_on=trained_on, data=_describe(data_cfg.data.format, data_cfg.data.root),
                    domain=domain, protocol=r.name, trials=len(r.trials),
                    rank1=float(r.mean["rank1"]), mAP=float(r.mean["mAP"]), mINP=float(r.mean["mINP"]),
                    rank1_std=float(r.std["rank1"]), mAP_std=float(r.std["mAP"]), mINP_std=float(r.std["mINP"])))
    return rows


def format_table(rows: Sequence[GeneralisationRow]) -> str:
    """The rows as a markdown table (mean ± std over gallery draws, percent)."""
    lines = ["| model | trained on | evaluated on | domain | protocol | trials | Rank-1 | mAP | mINP |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.model} | {r.trained_on} | {r.data} | {r.domain} | {r.protocol} | {r.trials} | "
                     f"{r.rank1:.2f} ± {r.rank1_std:.2f} | {r.mAP:.2f} ± {r.mAP_std:.2f} | "
                     f"{r.mINP:.2f} ± {r.mINP_std:.2f} |")
    return "\n".join(lines)


def write_table(rows: Sequence[GeneralisationRow], folder: str | Path) -> dict[str, Path]:
    """``generalisation.md`` and ``generalisation.json`` in ``folder`` (created); returns their paths."""
    from vireid.engine.checkpoint import atomic_write_text

    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise VireidError(f"--out {folder} is a file; pass a folder for the generalisation table")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise VireidError(f"--out {folder} cannot be created ({err.strerror}); pass a folder you may write to") from None
    paths = {"md": folder / "generalisation.md", "json": folder / "generalisation.json"}
    atomic_write_text(paths["md"], format_table(rows) + "\n")
    atomic_write_text(paths["json"], json.dumps([asdict(r) for r in rows], indent=2))
    return paths


__all__ = ["CROSS_DOMAIN", "IN_DOMAIN", "GeneralisationRow", "format_table", "generalisation_table", "write_table"]
