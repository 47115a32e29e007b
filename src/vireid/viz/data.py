"""The model and test-set features of a run, computed once and shared by the pictures.

Ranked lists and the t-SNE plot need the embeddings of the run's test images; the activation maps
need the model itself. :func:`load_run` loads the checkpoint (``best.pt`` of a run folder,
or a given ``.pt``), reads the dataset the run was trained on (its ``data`` config section; the
root may be overridden if the data moved) and, on first use of :attr:`LoadedRun.features`,
embeds the test pool with
:func:`vireid.inference.extract.extract_features` -- the very features the evaluation ranks.
Embeddings are L2-normalised, so ``a @ b.T`` is the cosine similarity shown in the pictures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from vireid.data.records import INFRARED, MODALITY_CODE, VISIBLE, ImageRecord
from vireid.errors import VireidError

#: Query -> gallery directions: ``i2v`` is SYSU-MM01's (infrared queries, visible gallery).
DIRECTIONS = {"i2v": (INFRARED, VISIBLE), "v2i": (VISIBLE, INFRARED)}
#: SYSU-MM01 camera rule: queries of camera 3 ignore gallery images of camera 2 (same room).
SYSU_EXCLUDED_CAMERAS = {3: 2}


class LoadedRun:
    """A loaded run: model (eval mode), config, checkpoint dict, dataset and its test pool.

    ``records[i]`` is the image of row ``i`` of :attr:`features` (``[N, D]``, float32,
    L2-normalised, computed on first use and kept); ``pids``, ``cams`` and ``modalities`` (codes
    0 visible / 1 infrared) are its columns.
    """

    def __init__(self, model: torch.nn.Module, cfg: Any, ckpt: dict, dataset: Any, device: torch.device,
                 run_dir: Path, progress: bool = False) -> None:
        self.model = model
        self.cfg = cfg
        self.ckpt = ckpt
        self.dataset = dataset
        self.device = device
        self.run_dir = run_dir
        self.progress = progress
        self.records: list[ImageRecord] = _pool(dataset)
        if not self.records:
            raise VireidError(f"the dataset at {cfg.data.root} has no test images; pictures need its test split (check data.root)")
        self.pids = np.fromiter((r.orig_pid for r in self.records), dtype=np.int64, count=len(self.records))
        self.cams = np.fromiter((r.camid for r in self.records), dtype=np.int64, count=len(self.records))
        self.modalities = np.fromiter((MODALITY_CODE[r.modality] for r in self.records), dtype=np.int64,
                                      count=len(self.records))
        self._features: torch.Tensor | None = None

    @property
    def name(self) -> str:
        return str(self.cfg.name or self.run_dir.name)

    @property
    def features(self) -> torch.Tensor:
        """L2-normalised embeddings of the whole test pool (computed once, then kept).

        The pool's decoded images go through :func:`~vireid.data.build.build_image_cache`, so a
        ``data.cache_dir`` cache written by the evaluation (same pool, same order) is reused.
        """
        if self._features is None:
            from vireid.data.build import build_image_cache

            cache = build_image_cache(self.records, self.cfg.data, progress=self.progress)
            self._features = self._embed(cache, np.arange(len(self.records)))
        return self._features

    def features_for(self, rows: np.ndarray) -> torch.Tensor:
        """Embeddings of the pool rows ``rows`` (in that order): taken from :attr:`features` when
        those were computed, else computed for these rows only (decoded in memory)."""
        rows = np.asarray(rows, dtype=np.int64)
        if self._features is not None:
            return self._features[torch.as_tensor(rows)]
        from vireid.data.cache import ImageCache

        h, w = self.cfg.data.height, self.cfg.data.width
        cache = ImageCache.build([self.records[i].path for i in rows.tolist()], h, w, cache_dir=None,
                                 workers=self.cfg.data.workers, progress=self.progress)
        return self._embed(cache, rows)

    def _embed(self, cache, rows: np.ndarray) -> torch.Tensor:
        from vireid.inference.extract import extract_features

        extras = record_extras([self.records[i] for i in rows.tolist()], self.cfg)
        feats = extract_features(self.model, cache, self.modalities[rows], self.device, self.cfg.eval.batch_size,
                                 progress=self.progress, flip=bool(getattr(self.cfg.eval, "flip", False)), extras=extras)
        columns = getattr(self.model, "gallery_columns", None)  # a text model: its image embedding only
        if columns:
            feats = feats[:, : int(columns)]
        return torch.nn.functional.normalize(feats.float(), dim=1)

    def query_gallery(self, direction: str = "i2v") -> tuple[np.ndarray, np.ndarray]:
        """Row indices of the queries and of the gallery.

        Data with a fixed query/gallery (``protocol_family == "given"``) uses them as given (the
        pool is query + gallery in that order). Otherwise the queries are every test image of the
        first modality of ``direction`` and the gallery every test image of the other one (the
        whole pool, not a single-shot draw, so that several correct matches can show).
        """
        if direction not in DIRECTIONS:
            raise VireidError(f"direction {direction!r} is unknown; use one of {', '.join(DIRECTIONS)}")
        if _given(self.dataset):
            nq = len(self.dataset.query)
            return np.arange(nq), np.arange(nq, len(self.records))
        q_mod, g_mod = (MODALITY_CODE[m] for m in DIRECTIONS[direction])
        return np.flatnonzero(self.modalities == q_mod), np.flatnonzero(self.modalities == g_mod)

    def excluded(self, q_idx: np.ndarray, g_idx: np.ndarray) -> torch.Tensor | None:
        """Bool ``[Q, G]`` mask of gallery entries a query must not see (SYSU-MM01's camera rule), or None."""
        if getattr(self.dataset, "protocol_family", "") != "sysu":
            return None
        cams = torch.as_tensor(self.cams)
        q_cams, g_cams = cams[torch.as_tensor(q_idx)], cams[torch.as_tensor(g_idx)]
        mask = torch.zeros(len(q_idx), len(g_idx), dtype=torch.bool)
        for q_cam, g_cam in SYSU_EXCLUDED_CAMERAS.items():
            mask |= (q_cams == q_cam)[:, None] & (g_cams == g_cam)[None, :]
        return mask if bool(mask.any()) else None


def record_extras(records: list[ImageRecord], cfg: Any) -> dict:
    """The configured side inputs of ``records`` (e.g. joints for pose-guided models; {} when none)."""
    from vireid.data.build import extras_for_records

    return extras_for_records(records, cfg.data)


def _given(dataset) -> bool:
    return getattr(dataset, "query", None) is not None and getattr(dataset, "gallery", None) is not None


def load_run_model(run: str | Path, device: str | torch.device = "auto"):
    """(model in eval mode, config, checkpoint dict, device, run folder) of a run folder or ``.pt`` file."""
    from vireid.engine.trainer import load_model_from_checkpoint, resolve_device

    run = Path(run)
    dev = resolve_device(str(device))
    model, cfg, ckpt = load_model_from_checkpoint(run, dev)
    run_dir = run if run.is_dir() else run.parent
    return model, cfg, ckpt, dev, run_dir


def _pool(dataset) -> list[ImageRecord]:
    return list(dataset.query) + list(dataset.gallery) if _given(dataset) else list(dataset.test)


def load_run(run: str | Path, device: str | torch.device = "auto", data_root: str | None = None,
             progress: bool = False, choice: Any = None) -> LoadedRun:
    """Load a run (folder or checkpoint) and read its dataset, or the data ``choice`` names
    (:mod:`vireid.workflows.eval_data`; never generated); features are computed on first use."""
    from vireid.workflows.eval_data import DataChoice, load_eval_dataset, select_data

    model, cfg, ckpt, dev, run_dir = load_run_model(run, device)
    choice = choice or DataChoice()
    if data_root is not None:
        choice.data_root = data_root
    cfg = select_data(cfg, choice, run_dir)
    dataset = load_eval_dataset(cfg, choice, progress=progress)
    return LoadedRun(model, cfg, ckpt, dataset, dev, run_dir, progress=progress)
