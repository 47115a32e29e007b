"""Which images an evaluation uses: the run's own test data, or any data the user names.

``vireid eval``, ``calibrate``, ``visualize ranked|tsne|cam`` and ``report`` share this choice:

* by default, the dataset the run was trained on (its ``data`` config section). Its ``data.root``
  is looked up as stored (absolute), else relative to the run folder, else relative to the current
  folder; ``--data-root`` points elsewhere. Nothing is ever generated here: a synthetic run whose
  data folder is missing gets one sentence, not a new dataset (data is generated only by
  ``vireid synth`` or by the first ``vireid train`` of a run).
* ``--data FORMAT:ROOT`` (e.g. ``csv:/data/mine/manifest.csv``, ``sysu-mm01:/data/SYSU-MM01``) or
  ``--images MANIFEST|ROOT [--format F]`` (format detected from the files when not given): any
  layout vireid reads. Data with its own test protocol (SYSU-MM01, RegDB, LLCM, NPU-ReID) is
  evaluated under that protocol. Data with a fixed query and gallery (a manifest or folder tree
  with ``query``/``gallery`` splits) is ranked as given. Other data -- e.g. a manifest without a
  ``split`` column -- is ranked with the images of the ``--query`` modality as queries against
  those of the ``--gallery`` modality (default: infrared queries, visible gallery, as SYSU-MM01).
  ``--query``/``--gallery`` also restrict a fixed query/gallery to one modality each.

The chosen data is described by :class:`DataChoice`; :func:`load_eval_dataset` returns a dataset
object with ``test`` (and for a fixed query/gallery ``query``/``gallery``) that the protocol code
(:func:`vireid.workflows.evaluate_model.evaluate_pool`) evaluates.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import vireid.builtins  # noqa: F401  (the dataset readers)
from vireid.data.datasets.base import parse_modality
from vireid.data.records import INFRARED, VISIBLE
from vireid.errors import DatasetError, VireidError

SYNTHETIC_FORMATS = ("synthetic", "synthetic-regdb", "synthetic-npu")


@dataclass
class DataChoice:
    """The data options of an evaluation command (all None: the run's own test data)."""

    data: str | None = None  # FORMAT:ROOT
    images: str | None = None  # MANIFEST | ROOT
    fmt: str | None = None  # format of --images (default: detected)
    query: str | None = None  # modality of the queries
    gallery: str | None = None  # modality of the gallery
    data_root: str | None = None  # the run's own dataset, moved

    @property
    def own(self) -> bool:
        """True when the run's own dataset is evaluated."""
        return self.data is None and self.images is None

    def describe(self) -> str:
        return "the run's own test data" if self.own else f"{self.data or self.images}"


def check_choice(choice: DataChoice) -> DataChoice:
    """Validate the combination of options (one sentence for each mistake) and normalise modalities."""
    if choice.data is not None and choice.images is not None:
        raise VireidError("--data and --images name the same thing; pass only one of them")
    if choice.fmt is not None and choice.images is None:
        raise VireidError("--format goes with --images (with --data write FORMAT:ROOT)")
    if choice.data_root is not None and not choice.own:
        raise VireidError("--data-root moves the run's own dataset; with --data or --images drop it")
    if choice.data is not None:
        fmt, sep, root = choice.data.partition(":")
        if not sep or not fmt or not root:
            raise VireidError(f"--data {choice.data!r} is not FORMAT:ROOT; e.g. csv:my/manifest.csv or "
                              "sysu-mm01:/data/SYSU-MM01 (or pass --images ROOT and let the format be detected)")
    for name in ("query", "gallery"):
        value = getattr(choice, name)
        if value is not None:
            parsed = parse_modality(value)
            if parsed is None:
                raise VireidError(f"--{name} {value!r} is not a modality; use visible or infrared "
                                  "(also: vis, rgb, ir, nir, thermal)")
            setattr(choice, name, parsed)
    return choice


def resolve_root(root: str | Path, run_dir: Path | None) -> Path | None:
    """The folder a stored ``data.root`` means: itself when absolute; else relative to the run folder,
    then to the current folder (the first that exists). None when none exists."""
    path = Path(root).expanduser()
    if path.is_absolute():
        return path if path.exists() else None
    candidates = ([run_dir / path] if run_dir is not None else []) + [Path.cwd() / path]
    return next((c.absolute() for c in candidates if c.exists()), None)


def _source_format(source: Path, fmt: str | None) -> str:
    from vireid.retrieval.extract import PLAIN, detect_format

    if not source.exists():
        raise DatasetError(f"data {source} does not exist; pass an existing dataset folder or CSV manifest")
    used = fmt or detect_format(source)
    if used == PLAIN:
        raise DatasetError(
            f"{source} is a plain folder of images without identities, so matches cannot be scored; evaluate a CSV "
            "manifest (path,identity,camera,modality[,split]), a folder tree (see docs/protocols.md) or a dataset "
            "layout, or embed it with vireid extract"
        )
    if used in SYNTHETIC_FORMATS:
        raise VireidError(f"--data {used}:... would generate data; read generated data by its layout "
                          "(e.g. sysu-mm01:ROOT) or make it with vireid synth")
    return used


def select_data(cfg: Any, choice: DataChoice, run_dir: Path | None = None) -> Any:
    """A copy of ``cfg`` whose ``data`` section names the chosen data (root absolute)."""
    choice = check_choice(choice)
    cfg = copy.deepcopy(cfg)
    if choice.own:
        stored = choice.data_root if choice.data_root is not None else cfg.data.root
        found = resolve_root(stored, None if choice.data_root is not None else run_dir)
        if found is None:
            where = Path(stored).expanduser()
            tried = [str(where)] if where.is_absolute() or choice.data_root is not None else \
                [str((run_dir or Path('.')) / where), str(Path.cwd() / where)]
            what = "the --data-root folder" if choice.data_root is not None else "the run's dataset (data.root)"
            raise DatasetError(
                f"{what} {stored} does not exist (looked for {' and '.join(dict.fromkeys(tried))}); pass --data-root "
                "with the folder the run was trained on, or --data FORMAT:ROOT to evaluate other data"
            )
        cfg.data.root = str(found)
        return cfg
    if choice.data is not None:
        fmt, _, root = choice.data.partition(":")
        source = Path(root).expanduser().absolute()
        _source_format(source, fmt)
    else:
        source = Path(choice.images).expanduser().absolute()
        fmt = _source_format(source, choice.fmt)
    from vireid.data.datasets import DATASETS, dataset_options

    if fmt not in DATASETS:
        raise VireidError(f"data format {fmt!r} is unknown; use one of {', '.join(DATASETS.names())}")
    options: dict = {}
    accepted = dataset_options(fmt)
    if "require_train" in accepted:
        options["require_train"] = False  # evaluation-only copies of a dataset are fine
    if "default_split" in accepted:
        options["default_split"] = "val"  # rows without a split column: one set, no training-only rules
    cfg.data.format = fmt
    cfg.data.root = str(source)
    cfg.data.options = options
    cfg.data.cache_dir = None
    cfg.eval.protocols = []
    from vireid.data.extras import retarget_extras

    retarget_extras(cfg.data)  # the run's own side-input sources (e.g. a pose-cache file) belong to its own data
    return cfg


class QueryGalleryData:
    """An explicit query and gallery (``protocol_family == "given"``), e.g. chosen by modality."""

    protocol_family = "given"

    def __init__(self, root: Any, query: list, gallery: list, description: str) -> None:
        self.root = root
        self.query = list(query)
        self.gallery = list(gallery)
        self.test = self.query + self.gallery
        self.train: list = []
        self.val: list = []
        self.description = description


def _by_modality(records: list, modality: str | None) -> list:
    return [r for r in records if modality is None or r.modality == modality]


def load_eval_dataset(cfg: Any, choice: DataChoice, progress: bool = False) -> Any:
    """The dataset of ``cfg`` (already passed through :func:`select_data`), arranged for evaluation
    as the module docstring says. Never generates data."""
    from vireid.data.build import prepare_dataset

    dataset = prepare_dataset(cfg.data, progress=progress, generate=False)
    if choice.own and choice.query is None and choice.gallery is None:
        return dataset
    query_mod = choice.query
    gallery_mod = choice.gallery
    if getattr(dataset, "query", None) is not None and getattr(dataset, "gallery", None) is not None:
        query = _by_modality(dataset.query, query_mod)
        gallery = _by_modality(dataset.gallery, gallery_mod)
        how = "its query and gallery"
    elif getattr(dataset, "test", None) and query_mod is None and gallery_mod is None:
        return dataset  # a dataset with its own test protocol
    else:
        pool = list(getattr(dataset, "test", None) or [])
        if not pool:  # e.g. a manifest without a split column: every image, once
            seen: dict = {}
            for _, records in dataset.splits():
                for r in records:
                    seen.setdefault(r.path, r)
            pool = list(seen.values())
        query_mod = query_mod or INFRARED
        gallery_mod = gallery_mod or (VISIBLE if query_mod == INFRARED else INFRARED)
        query = _by_modality(pool, query_mod)
        gallery = _by_modality(pool, gallery_mod)
        how = "its images by modality"
    where = f"{cfg.data.format} data {cfg.data.root}"
    for side, records, mod in (("query", query, query_mod), ("gallery", gallery, gallery_mod)):
        if not records:
            raise DatasetError(
                f"{where} has no {mod + ' ' if mod else ''}{side} images; choose --query/--gallery modalities it "
                f"holds, or add {side} rows"
            )
    desc = f"{how}: {len(query)} {query_mod or 'query'} queries, {len(gallery)} {gallery_mod or 'gallery'} images"
    return QueryGalleryData(dataset.root, query, gallery, desc)


def same_modality(dataset: Any) -> bool:
    """True when the query and gallery of a given dataset hold the same single modality."""
    query, gallery = getattr(dataset, "query", None), getattr(dataset, "gallery", None)
    if not query or not gallery:
        return False
    mods = {r.modality for r in query} | {r.modality for r in gallery}
    return len(mods) == 1


__all__ = ["DataChoice", "QueryGalleryData", "check_choice", "load_eval_dataset", "resolve_root", "select_data",
           "same_modality"]
