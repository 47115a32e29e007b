"""One dataset's training images split into per-client datasets (CSV manifests), for simulations and
for trying the network mode on one machine.

* ``identity``: the training identities are shuffled (seeded) and dealt into N disjoint groups; every
  client sees all cameras but its own people (institutions that never see the same person).
* ``camera``: the visible cameras and the infrared cameras are each dealt round-robin, so every client
  owns at least one camera of each modality and no camera is shared (institutions that own different
  camera networks). A person seen by two clients' cameras is a different class in each, which is why
  classifier heads stay private. Only identities with images of both modalities in a client's cameras
  are kept, since cross-modality training needs both. SYSU-MM01's layout (and vireid's synthetic data)
  has two infrared cameras, so it splits by camera into at most two clients.

Each client gets ``<out>/client_<i>/manifest.csv`` (vireid's ``csv`` format, split ``train``), which a
client's config names with ``data.format=csv data.root=<that file>``.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from vireid.data.records import INFRARED, VISIBLE, ImageRecord
from vireid.errors import ConfigError

SPLIT_BY = ("identity", "camera")
MAX_CLIENTS = 64


def _both_modalities(records: list[ImageRecord]) -> list[ImageRecord]:
    seen: dict[int, set[str]] = defaultdict(set)
    for r in records:
        seen[r.orig_pid].add(r.modality)
    keep = {pid for pid, mods in seen.items() if len(mods) == 2}
    return [r for r in records if r.orig_pid in keep]


def split_records(records: list[ImageRecord], clients: int, by: str, seed: int = 0) -> list[list[ImageRecord]]:
    """``records`` (a dataset's training images) as ``clients`` disjoint client datasets (module docstring)."""
    if by not in SPLIT_BY:
        raise ConfigError(f"--split-by is {by!r}; use identity or camera")
    if not 2 <= clients <= MAX_CLIENTS:
        raise ConfigError(f"--clients is {clients}; federated training needs between 2 and {MAX_CLIENTS} clients")
    if by == "identity":
        pids = sorted({r.orig_pid for r in records})
        if len(pids) < 2 * clients:
            raise ConfigError(f"the dataset has {len(pids)} training identities, too few for {clients} clients "
                              "(at least 2 each); use fewer clients or more identities")
        order = np.random.default_rng(seed).permutation(len(pids))
        groups = [set(np.asarray(pids)[idx].tolist()) for idx in np.array_split(order, clients)]
        parts = [[r for r in records if r.orig_pid in g] for g in groups]
    else:
        visible = sorted({r.camid for r in records if r.modality == VISIBLE})
        infrared = sorted({r.camid for r in records if r.modality == INFRARED})
        most = min(len(visible), len(infrared))
        if clients > most:
            raise ConfigError(
                f"the dataset has {len(visible)} visible and {len(infrared)} infrared cameras, so a camera split "
                f"gives at most {most} clients that each own cameras of both modalities; use --clients {most} "
                "or --split-by identity"
            )
        parts = []
        for i in range(clients):
            cams = set(visible[i::clients]) | set(infrared[i::clients])
            parts.append(_both_modalities([r for r in records if r.camid in cams]))
    for i, part in enumerate(parts):
        if len({r.orig_pid for r in part}) < 2:
            raise ConfigError(f"client {i} would get fewer than 2 identities with images of both modalities; "
                              "use fewer clients or another --split-by")
    return parts


def write_manifest(records: list[ImageRecord], path: Path) -> Path:
    """A vireid CSV manifest (split ``train``) of ``records``, paths absolute."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "identity", "camera", "modality", "split"])
        for r in records:
            writer.writerow([str(Path(r.path).absolute()), r.orig_pid, r.camid, r.modality, "train"])
    return path


def write_client_manifests(records: list[ImageRecord], clients: int, by: str, out: Path, seed: int = 0) -> list[Path]:
    """Split and write ``out/client_<i>/manifest.csv`` for each client; returns the manifest paths."""
    parts = split_records(records, clients, by, seed)
    return [write_manifest(part, Path(out) / f"client_{i}" / "manifest.csv") for i, part in enumerate(parts)]


def describe(parts: list[list[ImageRecord]]) -> list[dict]:
    """Per client: images, identities and cameras (for the run's summary)."""
    return [{"images": len(p), "identities": len({r.orig_pid for r in p}), "cameras": sorted({r.camid for r in p})}
            for p in parts]
