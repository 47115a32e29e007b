"""Resume state of an ablation row: what its folder already holds (nothing, an interrupted run, a finished
training, results) and whether it was made with the same config."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from vireid.config import Config
from vireid.errors import VireidError
from vireid.plugins import stored_config

#: Config keys that do not change what a run computes (ignored when checking a folder's config).
RUNTIME_KEYS = ("output_dir", "train.progress", "train.threads", "train.device", "data.workers")


def _comparable(tree: dict) -> dict:
    tree = json.loads(json.dumps(tree, default=str))
    data = tree.get("data")
    if isinstance(data, dict) and isinstance(data.get("root"), str):  # training stores data.root absolute
        data["root"] = str(Path(data["root"]).expanduser().absolute())
    for dotted in RUNTIME_KEYS:
        *parents, key = dotted.split(".")
        node = tree
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(key, None)
    return tree


def row_state(cfg: Config, folder: Path) -> str:
    """``done``, ``evaluate``, ``resume`` or ``new``; refuses a folder made with another config (unless
    that run died before saving anything: then the row starts afresh)."""
    saved = folder / "config.yaml"
    if not saved.is_file():
        if (folder / "last.pt").exists() or (folder / "test_results.json").exists():
            raise VireidError(f"{folder} holds a run without its config.yaml; delete the folder to re-run this row")
        return "new"
    previous = yaml.safe_load(saved.read_text()) or {}
    try:  # fill in keys a newer vireid added since that run (with their defaults), so they compare equal
        previous = stored_config(previous).to_dict()
    except VireidError:
        pass  # an old key that no longer exists: compared as saved, so the folder is refused below
    finished_nothing = not any((folder / f).exists() for f in ("last.pt", "train_summary.json", "test_results.json"))
    if finished_nothing:
        return "new"  # an attempt that failed before its first checkpoint (e.g. bad data): start afresh
    if _comparable(previous) != _comparable(cfg.to_dict()):
        raise VireidError(
            f"{folder} holds a run made with a different config (the grid or the overrides changed); "
            "delete that folder to re-run the row, or pass another --out"
        )
    if (folder / "test_results.json").is_file():
        return "done"
    summary = folder / "train_summary.json"
    if summary.is_file() and json.loads(summary.read_text()).get("epochs", -1) >= cfg.train.epochs:
        return "evaluate"
    if (folder / "last.pt").is_file():
        return "resume"
    return "new"


def row_results(folder: Path) -> dict[str, dict]:
    """``{protocol: {"mean": {...}, "std": {...}, "trials": n}}`` from a run's test_results.json
    (without re-ranking)."""
    rows = json.loads((folder / "test_results.json").read_text())
    out: dict[str, dict] = {}
    for item in rows:
        if (item.get("settings") or {}).get("rerank"):
            continue
        out[item["name"]] = {"mean": item["mean"], "std": item["std"], "trials": len(item.get("trials", []))}
    return out
