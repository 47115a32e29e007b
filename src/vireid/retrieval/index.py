"""A searchable gallery: FAISS indexes over L2-normalised embeddings, one per modality, plus the
metadata of every gallery image.

Scores are cosine similarities (inner products of L2-normalised vectors). Index kinds:

``flat``
    exact inner-product search (:class:`faiss.IndexFlatIP`); the right choice up to ~10^5 images.
``ivfpq``
    an inverted file with product-quantised codes (Jégou et al., TPAMI 2011), one per modality:
    an optional PCA to ``pca`` dimensions, ``nlist`` k-means cells of which ``nprobe`` are
    visited, ``pq_m`` sub-quantisers of ``pq_nbits`` bits (4 bits: FAISS's SIMD "fast scan"
    layout); the ``k * k_factor`` best candidates are then re-scored exactly from a float16
    (``refine="fp16"``) or float32 (``"flat"``) copy of the vectors. On unit vectors squared L2
    distance and inner product order the same way (``|q-x|^2 = 2 - 2 q.x``), so the index works
    in L2, where PCA centring and k-means are well defined.
``hnsw``
    a hierarchical navigable small-world graph (Malkov & Yashunin, TPAMI 2018) over the float32
    vectors: no training, ``hnsw_m`` links per node, ``ef_search`` candidates explored per query.
``auto``
    ``flat`` below :data:`AUTO_FLAT_MAX` images, else ``ivfpq``.

Cross-modality filtering is free: the gallery is split into one sub-index per modality at build
time, so searching "infrared only" searches the infrared sub-index and nothing else; searching
all modalities merges the per-modality top-k lists. Optional k-reciprocal re-ranking (Zhong et
al., CVPR 2017, :func:`vireid.evaluation.rerank.k_reciprocal_rerank`) re-orders the union of the
queries' top candidates.

On disk an index is a folder: ``index.json`` (kind, dimension, parameters, counts, the image
root and where the features came from), ``meta.csv`` (the gallery rows, as in a feature folder,
see :mod:`vireid.retrieval.features`) and one ``<modality>.faiss`` per non-empty modality. It is
written into a temporary folder that then replaces the target.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vireid.data.records import MODALITIES
from vireid.errors import VireidError
from vireid.retrieval.features import META_FILE, FeatureSet, Metadata, atomic_dir

KINDS = ("auto", "flat", "ivfpq", "hnsw")
REFINE_KINDS = ("fp16", "flat", "none")
INDEX_FILE = "index.json"
FORMAT_NAME = "vireid-index"
FORMAT_VERSION = 1
#: ``kind="auto"`` builds an exact index below this many images and ``ivfpq`` from it on.
AUTO_FLAT_MAX = 100_000
#: Rows added to FAISS at a time (bounds the temporary float32 copies).
ADD_CHUNK = 65_536
#: Queries re-ranked together (the re-ranking pool is their candidates' union).
RERANK_BLOCK = 32

_SEARCH_KEYS = ("nprobe", "k_factor", "ef_search")
#: Up to this many queries, the two modality sub-indexes are searched in parallel threads.
_THREADED_MAX_QUERIES = 8
_POOL = None


def _pool():
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=len(MODALITIES), thread_name_prefix="vireid-search")
    return _POOL


def _faiss():
    import faiss

    return faiss


def _normalized(x: np.ndarray) -> np.ndarray:
    """float32 C-contiguous copy (or view) of ``x`` with unit rows (zero rows stay zero)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if x.size and np.all(np.abs(norms - 1.0) < 1e-4):
        return x
    return x / np.maximum(norms, 1e-12)


def _power_of_two(x: float) -> int:
    return 2 ** max(0, round(math.log2(max(x, 1.0))))


def default_params(kind: str, dim: int, num: int, **given: Any) -> dict[str, Any]:
    """Complete build/search parameters of ``kind`` for ``num`` gallery images of ``dim`` dims.

    ``ivfpq`` sizes are per modality sub-index, each holding about ``num / 2`` images ``n``:
    ``nlist ~ 4 sqrt(n)`` cells (a power of two, at most one per 39 training vectors, FAISS's
    minimum for stable k-means), trained on ``train_size = min(n, max(40 nlist, 20000))`` vectors;
    PCA to 256 dims for wider embeddings (fitted in float64 with torch); ``pq_m = dims / 2``
    sub-quantisers of ``pq_nbits = 4`` bits, which FAISS scans with SIMD ("fast scan"; 8 bits
    selects the classic 8-bit PQ); ``nprobe = 64``; ``k_factor = 32`` (the ``32 k`` best PQ
    candidates are re-scored exactly). ``benchmarks/bench_search.py`` measures these settings at
    1M x 2,048-d. Unknown keys raise VireidError.
    """
    if kind not in KINDS or kind == "auto":
        raise VireidError(f"index kind {kind!r} is unknown; use one of {', '.join(KINDS)}")
    allowed = {
        "flat": set(),
        "ivfpq": {"nlist", "pq_m", "pq_nbits", "pca", "refine", "train_size", "nprobe", "k_factor", "seed"},
        "hnsw": {"hnsw_m", "ef_construction", "ef_search"},
    }[kind]
    given = {k: v for k, v in given.items() if v is not None}
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise VireidError(
            f"index kind {kind!r} takes no parameter {', '.join(unknown)}; its parameters are "
            f"{', '.join(sorted(allowed)) or 'none'}"
        )
    if kind == "flat":
        return {}
    if kind == "hnsw":
        params = {"hnsw_m": 32, "ef_construction": 80, "ef_search": 128}
        params.update({k: int(v) for k, v in given.items()})
        return params
    per_modality = max(1, num // 2)
    if given.get("nlist"):
        nlist = int(given["nlist"])
    else:
        nlist = int(max(1, min(_power_of_two(4 * math.sqrt(per_modality)), per_modality // 39 or 1)))
    train_size = int(given.get("train_size") or min(per_modality, max(40 * nlist, 20_000)))
    if nlist < 1 or train_size < 1:
        raise VireidError(f"nlist and train_size must be positive, got {nlist} and {train_size}")
    pca = given.get("pca")
    if pca is None:
        pca = 256 if dim > 256 and train_size >= dim else 0
    pca = int(pca)
    if pca and not 0 < pca < dim:
        raise VireidError(f"pca must be between 1 and {dim - 1} dims (or 0 for none), got {pca}")
    coded = pca or dim
    nbits = int(given.get("pq_nbits", 4))
    if nbits not in (4, 8):
        raise VireidError(f"pq_nbits must be 4 (fast scan) or 8, got {nbits}")
    pq_m = given.get("pq_m")
    if pq_m is None:
        pq_m = max((m for m in range(1, coded // 2 + 1) if coded % m == 0 and m <= 128), default=1)
    pq_m = int(pq_m)
    if pq_m < 1 or coded % pq_m:
        raise VireidError(f"pq_m={pq_m} must divide the coded dimension {coded}")
    refine = given.get("refine", "fp16")
    if refine not in REFINE_KINDS:
        raise VireidError(f"refine must be one of {', '.join(REFINE_KINDS)}, got {refine!r}")
    params = {
        "nlist": nlist, "pca": pca, "pq_m": pq_m, "pq_nbits": nbits, "refine": refine,
        "train_size": train_size, "nprobe": min(64, nlist), "k_factor": 32, "seed": 0,
    }
    params.update({k: int(given[k]) for k in ("nprobe", "k_factor", "seed") if k in given})
    return params


def _fit_pca(transform, sample: np.ndarray) -> None:
    """Fit FAISS ``PCAMatrix`` ``transform`` on ``sample`` with torch (float64 eigendecomposition):
    FAISS's own LAPACK path is an order of magnitude slower on 2,048-d features."""
    import torch

    faiss = _faiss()
    x = torch.from_numpy(sample)
    mean = x.double().mean(dim=0)
    cov = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
    for start in range(0, len(x), 65_536):  # float32 products, float64 sums: bounded memory
        c = x[start:start + 65_536] - mean.float()
        cov += (c.T @ c).double()
    values, vectors = torch.linalg.eigh(cov / len(x))
    order = torch.argsort(values, descending=True)
    rows = vectors[:, order[: transform.d_out]].T.contiguous().float().numpy()
    faiss.copy_array_to_vector(mean.float().numpy(), transform.mean)
    faiss.copy_array_to_vector(values[order].float().numpy(), transform.eigenvalues)
    faiss.copy_array_to_vector(rows.ravel(), transform.PCAMat)
    transform.is_trained = True
    transform.prepare_Ab()


class GalleryIndex:
    """Gallery embeddings indexed for nearest-neighbour search, with their metadata.

    Public API (kept stable for the web service): :meth:`build`, :meth:`load`, :meth:`save`,
    :meth:`search`, :attr:`metadata` (a :class:`~vireid.retrieval.features.Metadata`: path, pid,
    camid, modality per gallery row), :meth:`image_path`, :attr:`dim`, :attr:`kind`, :attr:`info`.
    For galleries too large to hold as one array: :meth:`create`, :meth:`train`, :meth:`add`.
    """

    def __init__(self, dim: int, kind: str, params: dict[str, Any], *, root: str | None = None,
                 info: dict[str, Any] | None = None) -> None:
        self.dim = int(dim)
        self.kind = kind
        self.params = dict(params)
        self.info = dict(info or {})
        self._root = root
        self._indexes: dict[str, Any] = {}
        self._ids: dict[str, list[np.ndarray]] = {m: [] for m in MODALITIES}
        self._meta_parts: list[Metadata] = []
        self._ntotal = 0
        #: attribute labels ``[N, A]`` of the gallery rows (vireid.retrieval.attributes), or None
        self.attributes: np.ndarray | None = None

    # ------------------------------------------------------------------ building
    @classmethod
    def create(cls, dim: int, kind: str = "auto", num: int = 0, *, root: str | None = None,
               info: dict[str, Any] | None = None, **params: Any) -> "GalleryIndex":
        """An empty index for about ``num`` images (``num`` sizes the defaults and ``kind="auto"``).

        ``ivfpq`` must be :meth:`train`-ed before :meth:`add`; the other kinds need no training.
        """
        if kind not in KINDS:
            raise VireidError(f"index kind {kind!r} is unknown; use one of {', '.join(KINDS)}")
        if kind == "auto":
            kind = "flat" if num < AUTO_FLAT_MAX else "ivfpq"
        if dim < 1:
            raise VireidError(f"features must have at least one dimension, got {dim}")
        return cls(dim, kind, default_params(kind, dim, num, **params), root=root, info=info)

    @classmethod
    def build(cls, features: FeatureSet, kind: str = "auto", *, progress: bool = False,
              **params: Any) -> "GalleryIndex":
        """Index every row of ``features`` (rows are L2-normalised first if they are not).

        ``params`` are the kind's options (see :func:`default_params`), e.g. ``nlist=1024``,
        ``nprobe=32`` or ``hnsw_m=32``.
        """
        if len(features) == 0:
            raise VireidError("the feature set is empty; extract features of at least one image first")
        index = cls.create(features.dim, kind, len(features), root=features.meta.root, info=features.info, **params)
        if index.kind == "ivfpq":
            rng = np.random.default_rng(index.params["seed"])
            size = index.params["train_size"]
            picks = []
            for modality in MODALITIES:  # up to train_size random rows of each modality
                rows = np.flatnonzero(features.meta.modalities == modality)
                picks.append(np.sort(rng.choice(rows, size, replace=False)) if size < len(rows) else rows)
            sample = np.concatenate(picks)
            index.train(features.features[sample], features.meta.modalities[sample])
        index.add(features.features, features.meta, progress=progress)
        return index

    def _new_faiss_index(self):
        faiss = _faiss()
        p = self.params
        if self.kind == "flat":
            return faiss.IndexFlatIP(self.dim)
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, int(p["hnsw_m"]), faiss.METRIC_L2)
            index.hnsw.efConstruction = int(p["ef_construction"])
            return index
        spec = f"{'PCA%d,' % p['pca'] if p['pca'] else ''}IVF{p['nlist']},PQ{p['pq_m']}x{p['pq_nbits']}"
        spec += "fs" if p["pq_nbits"] == 4 else ""
        spec += {"fp16": ",Refine(SQfp16)", "flat": ",RFlat", "none": ""}[p["refine"]]
        return faiss.index_factory(self.dim, spec, faiss.METRIC_L2)

    def train(self, sample: np.ndarray, modalities: Sequence[str] | np.ndarray) -> None:
        """Learn each modality's PCA, k-means cells and PQ codebooks (``ivfpq``) from ``sample``
        (``modalities``: one per row). Each modality gets its own cells: the two modalities sit
        apart in embedding space, so shared cells would leave half of each sub-index's cells empty."""
        if self.kind != "ivfpq":
            return
        if self._ntotal:
            raise VireidError("the index already holds vectors; train it before adding any")
        sample = _normalized(sample)
        modalities = np.asarray(modalities, dtype=object)
        if sample.ndim != 2 or sample.shape[1] != self.dim or len(modalities) != len(sample):
            raise VireidError(f"training vectors have shape {sample.shape} with {len(modalities)} modalities, "
                              f"expected [n, {self.dim}] and one modality per row")
        faiss = _faiss()
        p = self.params
        for modality in MODALITIES:
            rows = np.flatnonzero(modalities == modality)
            if len(rows) == 0:
                continue
            if len(rows) < p["nlist"] or (p["pca"] and len(rows) < self.dim):
                need = max(p["nlist"], self.dim if p["pca"] else 0)
                raise VireidError(
                    f"{len(rows)} {modality} training vectors are too few for nlist={p['nlist']}"
                    f"{' and a PCA' if p['pca'] else ''} (at least {need} needed); use the flat kind or pass a "
                    "smaller nlist / pca=0"
                )
            index = self._new_faiss_index()
            ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
            if hasattr(ivf, "do_polysemous_training"):
                # the factory turns on polysemous codeword ordering (simulated annealing, minutes of
                # CPU) for Hamming-distance filtering, which this index never uses
                ivf.do_polysemous_training = False
            ivf.cp.seed = int(p["seed"])
            ivf.pq.cp.seed = int(p["seed"])
            ivf.pq.cp.max_points_per_centroid = 64  # PQ codebooks from at most 64 x 2^nbits vectors
            data = np.ascontiguousarray(sample[rows])
            if p["pca"]:
                pre = faiss.downcast_index(index.base_index if p["refine"] != "none" else index)
                _fit_pca(faiss.downcast_VectorTransform(pre.chain.at(0)), data)
            index.train(data)
            self._apply_search_params(index)
            self._indexes[modality] = index

    def _sub_index(self, modality: str):
        if modality not in self._indexes:
            if self.kind == "ivfpq":
                hint = "call train() first" if not self._indexes else f"include {modality} images in train()"
                raise VireidError(f"the ivfpq index has no trained {modality} sub-index; {hint}")
            self._indexes[modality] = self._new_faiss_index()
            self._apply_search_params(self._indexes[modality])
        return self._indexes[modality]

    def add(self, features: np.ndarray, meta: Metadata, progress: bool = False) -> None:
        """Append gallery rows: ``features`` ``[n, dim]`` and their metadata (same order)."""
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise VireidError(f"features have shape {features.shape}, but this index holds {self.dim}-dim vectors")
        if len(features) != len(meta):
            raise VireidError(f"{len(features)} feature rows but {len(meta)} metadata rows")
        if self._meta_parts and meta.root != self._root and len(meta):
            raise VireidError(f"images under {meta.root} cannot join an index of images under {self._root}")
        for modality in MODALITIES:  # every sub-index needed exists before anything is added
            if np.any(meta.modalities == modality):
                self._sub_index(modality)
        if not self._meta_parts:
            self._root = meta.root if len(meta) else self._root
        starts = range(0, len(features), ADD_CHUNK)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc=f"indexing ({self.kind})", unit="chunk", leave=False, disable=None)
        for start in starts:
            chunk = _normalized(features[start:start + ADD_CHUNK])
            mods = meta.modalities[start:start + ADD_CHUNK]
            for modality in MODALITIES:
                rows = np.flatnonzero(mods == modality)
                if len(rows):
                    self._sub_index(modality).add(np.ascontiguousarray(chunk[rows]))
                    self._ids[modality].append(rows + start + self._ntotal)
        self._meta_parts.append(meta)
        self._ntotal += len(features)

    # ------------------------------------------------------------------ properties
    @property
    def is_trained(self) -> bool:
        """Whether vectors can be added (``ivfpq`` needs :meth:`train` first)."""
        return self.kind != "ivfpq" or bool(self._indexes)

    def memory_bytes(self) -> int:
        """Bytes the stored vectors take in memory (codes, float copies, ids; HNSW links estimated)."""
        faiss = _faiss()
        total = 0
        for sub in self._indexes.values():
            n = sub.ntotal
            if self.kind == "flat":
                total += n * self.dim * 4
            elif self.kind == "hnsw":
                total += n * (self.dim * 4 + 2 * int(self.params["hnsw_m"]) * 4 * 1.1)
            else:
                ivf = faiss.extract_index_ivf(sub)
                total += n * (ivf.code_size + 8)
                if self.params["refine"] != "none":
                    total += n * faiss.downcast_index(sub).refine_index.sa_code_size()
        return int(total)

    @property
    def ntotal(self) -> int:
        """Number of gallery images."""
        return self._ntotal

    def __len__(self) -> int:
        return self._ntotal

    @property
    def metadata(self) -> Metadata:
        """The gallery rows (path, pid, camid, modality), row ``i`` = index result ``i``."""
        if len(self._meta_parts) != 1:
            merged = Metadata(np.zeros(0, object), [], [], np.zeros(0, object), self._root)
            for part in self._meta_parts:
                merged = merged.concat(part)
            self._meta_parts = [merged]
        return self._meta_parts[0]

    @property
    def root(self) -> str | None:
        """The folder the gallery's relative image paths refer to."""
        return self._root

    def image_path(self, i: int) -> Path:
        """Absolute path of gallery image ``i``, from the index's own metadata only."""
        return self.metadata.image_path(i)

    def modality_ids(self, modality: str) -> np.ndarray:
        """Gallery rows of ``modality`` in sub-index order (local id ``j`` is row ``ids[j]``)."""
        parts = self._ids[modality]
        if len(parts) != 1:
            self._ids[modality] = [np.concatenate(parts) if parts else np.zeros(0, np.int64)]
        return self._ids[modality][0]

    def counts(self) -> dict[str, int]:
        """Gallery images per modality."""
        return {m: len(self.modality_ids(m)) for m in MODALITIES}

    # ------------------------------------------------------------------ search
    def set_search_params(self, **params: Any) -> None:
        """Change search-time settings: ``nprobe``, ``k_factor`` (ivfpq), ``ef_search`` (hnsw)."""
        unknown = sorted(set(params) - set(_SEARCH_KEYS))
        if unknown:
            raise VireidError(f"unknown search setting(s) {', '.join(unknown)}; use {', '.join(_SEARCH_KEYS)}")
        for key, value in params.items():
            if value is None:
                continue
            if key not in self.params:
                raise VireidError(f"search setting {key} does not apply to a {self.kind} index")
            if int(value) < 1:
                raise VireidError(f"search setting {key} must be at least 1, got {value}")
            self.params[key] = int(value)
        for index in self._indexes.values():
            self._apply_search_params(index)

    def _apply_search_params(self, index) -> None:
        faiss = _faiss()
        p = self.params
        if self.kind == "ivfpq":
            faiss.extract_index_ivf(index).nprobe = min(int(p["nprobe"]), int(p["nlist"]))
            if p["refine"] != "none":
                faiss.downcast_index(index).k_factor = float(p["k_factor"])
        elif self.kind == "hnsw":
            faiss.downcast_index(index).hnsw.efSearch = int(p["ef_search"])

    def _search_modality(self, modality: str, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` of one sub-index: cosine scores and gallery rows (-inf / -1 padding)."""
        nq = len(queries)
        ids = self.modality_ids(modality)
        if len(ids) == 0 or nq == 0:
            return np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64)
        dist, local = self._indexes[modality].search(queries, k)
        scores = dist if self.kind == "flat" else 1.0 - dist / 2.0  # |q-x|^2 = 2 - 2 q.x for unit vectors
        missing = local < 0
        rows = ids[np.where(missing, 0, local)]
        rows[missing] = -1
        scores = np.where(missing, -np.inf, scores).astype(np.float32)
        return scores, rows

    def _search_group(self, modalities: Sequence[str], queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` over the union of ``modalities`` (per-modality lists merged).

        A few queries over both sub-indexes search them in two threads when FAISS may use more
        than one (FAISS parallelises over queries, so a single query would otherwise use one core).
        """
        if len(modalities) > 1 and len(queries) <= _THREADED_MAX_QUERIES and _faiss().omp_get_max_threads() > 1:
            parts = list(_pool().map(lambda m: self._search_modality(m, queries, k), modalities))
        else:
            parts = [self._search_modality(m, queries, k) for m in modalities]
        if len(parts) == 1:
            return parts[0]
        scores = np.concatenate([p[0] for p in parts], axis=1)
        rows = np.concatenate([p[1] for p in parts], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """Stored gallery vectors of rows ``rows`` (float32; float16-rounded for ``refine="fp16"``)."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.kind == "ivfpq" and self.params["refine"] == "none":
            raise VireidError("this ivfpq index keeps no copy of the vectors (refine=none), so it cannot re-rank; "
                              "rebuild it with refine fp16 or flat")
        out = np.zeros((len(rows), self.dim), dtype=np.float32)
        mods = self.metadata.modalities[rows] if len(rows) else np.zeros(0, object)
        for modality in MODALITIES:
            sel = np.flatnonzero(mods == modality)
            if len(sel):
                local = np.searchsorted(self.modality_ids(modality), rows[sel])
                out[sel] = self._indexes[modality].reconstruct_batch(local)
        return out

    def search(self, queries: np.ndarray, k: int = 10, modality: str | Sequence[str | None] | None = None, *,
               rerank: bool = False, rerank_candidates: int = 100, k1: int = 20, k2: int = 6,
               lambda_value: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` gallery rows of each query: ``(scores [Q, k] float32, indices [Q, k] int64)``.

        ``queries`` are embeddings ``[Q, dim]`` (L2-normalised here if they are not).
        ``modality`` restricts the gallery: ``None`` searches every image, ``"visible"`` or
        ``"infrared"`` only that modality (for cross-modality search pass the modality *other*
        than the query's), or one such value per query. Scores are cosine similarities, best first;
        rows beyond the available gallery images are ``-1`` with score ``-inf``.

        ``rerank=True`` re-orders each query's ``rerank_candidates`` best images with k-reciprocal
        re-ranking (Zhong et al. 2017, parameters ``k1``, ``k2``, ``lambda_value`` as in Eq. 12),
        pooling the candidates of up to :data:`RERANK_BLOCK` queries that search the same modality;
        the scores are then ``1 - d`` for the re-ranked distance ``d`` (Eq. 12), not cosines.
        """
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None]
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            got = queries.shape[1] if queries.ndim == 2 else queries.shape
            raise VireidError(
                f"the query embeddings have {got} dims but the index holds {self.dim}-dim features; search with "
                "the checkpoint the index was built from (or rebuild the index with this checkpoint)"
            )
        if k < 1:
            raise VireidError(f"k must be at least 1, got {k}")
        queries = _normalized(queries)
        nq = len(queries)
        per_query = self._modality_groups(modality, nq)
        scores = np.full((nq, k), -np.inf, np.float32)
        rows = np.full((nq, k), -1, np.int64)
        for target, members in per_query.items():
            group = [target] if target is not None else list(MODALITIES)
            q = np.ascontiguousarray(queries[members])
            if rerank:
                s, r = self._rerank(group, q, k, max(int(rerank_candidates), k), k1, k2, lambda_value)
            else:
                s, r = self._search_group(group, q, k)
            scores[members], rows[members] = s, r
        return scores, rows

    @staticmethod
    def _modality_groups(modality, nq: int) -> dict[str | None, np.ndarray]:
        """Query positions by the gallery modality they search (None = all)."""
        def check(m):
            if m is None or m in MODALITIES:
                return m
            raise VireidError(f"modality filter {m!r} is unknown; use visible, infrared or none")

        if modality is None or isinstance(modality, str):
            return {check(modality): np.arange(nq)}
        values = list(modality)
        if len(values) != nq:
            raise VireidError(f"got {len(values)} modality filters for {nq} queries; give one per query or one for all")
        distinct = [check(m) for m in dict.fromkeys(values)]
        arr = np.asarray(values, dtype=object)
        return {m: np.flatnonzero(arr == m) if m is not None else np.flatnonzero(np.equal(arr, None))
                for m in distinct}

    def _rerank(self, group: list[str], queries: np.ndarray, k: int, candidates: int, k1: int, k2: int,
                lambda_value: float) -> tuple[np.ndarray, np.ndarray]:
        from vireid.evaluation.rerank import k_reciprocal_rerank

        def euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return np.sqrt(np.maximum(2.0 - 2.0 * (a @ b.T), 0.0)).astype(np.float32)

        _, cand = self._search_group(group, queries, candidates)
        nq = len(queries)
        scores = np.full((nq, k), -np.inf, np.float32)
        rows = np.full((nq, k), -1, np.int64)
        for start in range(0, nq, RERANK_BLOCK):
            block = slice(start, start + RERANK_BLOCK)
            pool = np.unique(cand[block])
            pool = pool[pool >= 0]
            if len(pool) == 0:
                continue
            q = queries[block]
            g = _normalized(self.vectors(pool))
            dist = k_reciprocal_rerank(euclidean(q, g), euclidean(q, q), euclidean(g, g), k1=k1, k2=k2,
                                       lambda_value=lambda_value)
            take = min(k, len(pool))
            order = np.argsort(dist, axis=1, kind="stable")[:, :take]
            scores[block, :take] = 1.0 - np.take_along_axis(dist, order, 1)
            rows[block, :take] = pool[order]
        return scores, rows

    # ------------------------------------------------------------------ files
    def save(self, folder: str | Path) -> Path:
        """Write the index folder (``index.json``, ``meta.csv``, ``<modality>.faiss``) atomically."""
        faiss = _faiss()
        counts = self.counts()
        manifest = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "kind": self.kind,
            "dim": self.dim,
            "metric": "cosine",
            "ntotal": self._ntotal,
            "params": self.params,
            "root": self._root,
            "info": self.info,
            "modalities": {m: {"file": f"{m}.faiss", "count": c} for m, c in counts.items() if c},
        }
        with atomic_dir(folder, INDEX_FILE, "vireid index folder") as tmp:
            for modality, entry in manifest["modalities"].items():
                faiss.write_index(self._indexes[modality], str(tmp / entry["file"]))
            (tmp / META_FILE).write_text(self.metadata.to_csv(), encoding="utf-8")
            if self.attributes is not None:  # attribute labels for filtered search
                from vireid.retrieval.attributes import write_labels

                write_labels(tmp, self.metadata, self.attributes)
            (tmp / INDEX_FILE).write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
        return Path(folder).expanduser().absolute()

    @classmethod
    def load(cls, folder: str | Path) -> "GalleryIndex":
        """Read an index folder written by :meth:`save`; problems raise VireidError naming the file."""
        folder = Path(folder).expanduser().absolute()
        manifest_file = folder / INDEX_FILE
        if not folder.is_dir() or not manifest_file.is_file():
            state = "does not exist" if not folder.exists() else f"holds no {INDEX_FILE}"
            raise VireidError(f"index {folder} {state}; build one with vireid index FEATS --out {folder.name}")
        try:
            manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise VireidError(f"{manifest_file} cannot be read ({err}); rebuild the index with vireid index") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
            raise VireidError(f"{manifest_file} is not a vireid index manifest; rebuild the index with vireid index")
        if manifest.get("version") != FORMAT_VERSION:
            raise VireidError(f"{manifest_file} has format version {manifest.get('version')!r}, this vireid reads "
                              f"version {FORMAT_VERSION}; rebuild the index")
        try:
            kind, dim, params = manifest["kind"], int(manifest["dim"]), dict(manifest["params"])
            entries = dict(manifest["modalities"])
        except (KeyError, TypeError, ValueError) as err:
            raise VireidError(f"{manifest_file} lacks a valid {err} entry; rebuild the index") from None
        if kind not in KINDS[1:]:
            raise VireidError(f"{manifest_file} names an unknown index kind {kind!r}; rebuild the index")
        meta = Metadata.read_csv(folder / META_FILE, manifest.get("root"))
        index = cls(dim, kind, params, root=manifest.get("root"), info=manifest.get("info"))
        faiss = _faiss()
        for modality in MODALITIES:
            ids = np.flatnonzero(meta.modalities == modality)
            entry = entries.get(modality)
            if entry is None:
                if len(ids):
                    raise VireidError(f"{folder} lists {len(ids)} {modality} images in {META_FILE} but has no "
                                      f"{modality} index; rebuild the index")
                continue
            path = folder / str(entry.get("file", ""))
            if not path.is_file():
                raise VireidError(f"index file {path} is missing; rebuild the index with vireid index")
            try:
                sub = faiss.read_index(str(path))
            except Exception as err:  # noqa: BLE001 - FAISS raises RuntimeError with a C++ message
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise VireidError(f"index file {path} cannot be read ({first}); it is truncated or corrupt, "
                                  "rebuild the index") from None
            if sub.d != dim or sub.ntotal != len(ids):
                raise VireidError(f"index file {path} holds {sub.ntotal} vectors of {sub.d} dims but {META_FILE} and "
                                  f"{INDEX_FILE} expect {len(ids)} of {dim}; rebuild the index")
            index._indexes[modality] = sub
            index._ids[modality] = [ids]
            index._apply_search_params(sub)
        index._meta_parts = [meta]
        index._ntotal = len(meta)
        from vireid.retrieval.attributes import read_labels

        index.attributes = read_labels(folder, meta)
        return index

    def describe(self) -> str:
        """One line: kind, size per modality, dimension and parameters."""
        counts = ", ".join(f"{c} {m}" for m, c in self.counts().items())
        params = ", ".join(f"{k}={v}" for k, v in self.params.items() if k != "seed")
        head = f"{self.kind} index of {self._ntotal} images ({counts}), {self.dim}-dim"
        return head + (f"; {params}" if params else "")
