"""Cluster-memory contrastive loss with per-modality memories, re-clustered pseudo-labels and
cross-modality association: unsupervised (and semi-supervised) visible-infrared ReID.

The memory is Cluster-Contrast's (Dai et al., ACCV 2022; alibaba/cluster-contrast-reid,
``clustercontrast/models/cm.py``): one L2-normalised centroid per cluster, the loss is the cross entropy
of ``f . M^T / temperature`` against the image's cluster, and after each step the centroid of every
cluster in the batch moves towards the batch (momentum ``m``: ``M[y] <- normalise(m M[y] + (1 - m) x)``),
where ``x`` is the mean of the cluster's batch features (``update="mean"``) or its hardest one, the least
similar to the centroid (``update="hard"``, ``CM_Hard`` of ``cm.py``). As in ADCA (yangbincv/ADCA,
``adca_sysu_train.py``) there is one memory per modality, re-initialised from the cluster centroids after
every re-clustering. Defaults: ``temperature=0.05`` (``--temp``), ``momentum=0.2`` (``--momentum``),
DBSCAN ``eps=0.6, min_samples=4`` on the Jaccard distance with ``k1=30, k2=6`` (all ADCA's).

Two-stage schedule (ADCA's intra-modality stage, then PGM's cross-modality stage; Wu & Ye, CVPR 2023,
zesenwu23/USL-VI-ReID): before epoch ``cross_start_epoch`` only the intra-modality terms train; from it on,
each image also contrasts with the *other* modality's memory, its target the associated cluster(s)
(:func:`vireid.data.pseudo_labels.associate`: Hungarian one-to-one, or soft many-to-many).

Semi-supervised (``data.labelled_fraction`` > 0): that fraction of the training identities keeps its labels;
they take the first slots of both memories (their visible and infrared slots are associated to each
other) and the remaining images are clustered into the slots after them: one memory for both.

Re-clustering runs at the start of every ``recluster_every``-th epoch through the trainer's generic hook
``on_train_epoch_start(trainer, epoch)`` (:mod:`vireid.engine.trainer`): features of all training images
by the current model, clustering per modality, association, new labels and batch sampler for the loader
(outliers are left out; batches hold P cross-modality groups x K images per modality, vireid's
:class:`~vireid.data.sampler.CrossModalityIdentitySampler`), memories re-initialised, and a ``cluster``
record in ``metrics.jsonl`` (clusters per modality, outlier fractions, association cost, and, from the
dataset's identities, NMI/ARI and pairwise precision/recall of the pseudo-labels).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vireid.data.records import MODALITY_CODE
from vireid.errors import ConfigError
from vireid.modeling.losses.base import ReIDLoss
from vireid.modeling.registries import LOSSES

VISIBLE = MODALITY_CODE["visible"]
INFRARED = MODALITY_CODE["infrared"]


def memory_update(memory: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, momentum: float,
                  mode: str = "mean") -> torch.Tensor:
    """Momentum update of the rows ``labels`` of an L2-normalised ``memory`` [C, D] by ``features`` [B, D]
    (normalised here): ``M[y] <- normalise(momentum * M[y] + (1 - momentum) * x_y)`` with ``x_y``
    the mean of the batch features of cluster ``y`` (``mode="mean"``) or the one least similar to ``M[y]``
    (``mode="hard"``, Cluster-Contrast's ``CM_Hard``). Returns the updated copy."""
    with torch.no_grad():
        memory = memory.clone()  # the old tensor may be saved for the backward pass of this step's logits
        f = F.normalize(features.detach().float(), dim=1)
        for y in torch.unique(labels).tolist():
            members = f[labels == y]
            if mode == "hard":
                x = members[int(torch.argmin(members @ memory[y]))]
            else:
                x = members.mean(dim=0)
            memory[y] = F.normalize(momentum * memory[y] + (1.0 - momentum) * x, dim=0)
    return memory


@LOSSES.register("cluster_memory")
class ClusterMemoryLoss(ReIDLoss):
    """Per-modality cluster memories trained on re-clustered pseudo-labels (see the module docstring).

    Reads the embedding the clustering sees (``bn_features`` of the built-in methods: their evaluation
    output). The memories are plain tensors, not state: a resumed run re-clusters at its first epoch."""

    input_key = "bn_features"
    needs_modalities = True
    #: the trainer's hook replaces the loader's labels: ``data.labelled_fraction`` applies
    uses_pseudo_labels = True
    #: the identity classifier of the method (sized by the dataset's identities) gets no gradient from this loss,
    #: so DDP must look for unused parameters (the trainer reads this flag on models and losses)
    has_unused_parameters = True

    def __init__(self, temperature: float = 0.05, momentum: float = 0.2, update: str = "mean",
                 eps: float = 0.6, min_samples: int = 4, k1: int = 30, k2: int = 6,
                 association: str = "hungarian", soft_temperature: float = 0.1, soft_topk: int = 3,
                 cross_start_epoch: int = 0, cross_weight: float = 1.0, recluster_every: int = 1) -> None:
        super().__init__()
        checks = [
            ("temperature", temperature > 0, "a positive number (the recipes use 0.05)"),
            ("momentum", 0 <= momentum < 1, "from 0 (inclusive) to 1 (the recipes use 0.2)"),
            ("update", update in ("mean", "hard"), "mean or hard"),
            ("eps", 0 < eps <= 1, "above 0 and at most 1 (a Jaccard distance; the recipes use 0.6)"),
            ("min_samples", min_samples >= 1, "at least 1 (the recipes use 4)"),
            ("k1", k1 >= 1, "at least 1 (the recipes use 30)"),
            ("k2", k2 >= 1, "at least 1 (the recipes use 6)"),
            ("association", association in ("hungarian", "soft"), "hungarian or soft"),
            ("soft_temperature", soft_temperature > 0, "a positive number"),
            ("soft_topk", soft_topk >= 1, "at least 1"),
            ("cross_start_epoch", cross_start_epoch >= 0, "0 or more (the first epoch with the cross-modality term)"),
            ("cross_weight", cross_weight >= 0, "0 or more"),
            ("recluster_every", recluster_every >= 1, "at least 1 (epochs between re-clusterings)"),
        ]
        for name, ok, what in checks:
            if not ok:
                value = locals()[name]
                raise ConfigError(f"cluster_memory parameter {name}={value!r} is invalid; it must be {what}")
        self.temperature = float(temperature)
        self.momentum = float(momentum)
        self.update = update
        self.eps, self.min_samples, self.k1, self.k2 = float(eps), int(min_samples), int(k1), int(k2)
        self.association = association
        self.soft_temperature, self.soft_topk = float(soft_temperature), int(soft_topk)
        self.cross_start_epoch = int(cross_start_epoch)
        self.cross_weight = float(cross_weight)
        self.recluster_every = int(recluster_every)
        self.memories: dict[int, torch.Tensor] = {}
        self.targets: dict[int, torch.Tensor] = {}  # modality -> [C_own, C_other] cross-modality target rows
        self.epoch = 0
        self.last_stats: dict[str, Any] = {}
        self._epoch_batches: int | None = None

    # ------------------------------------------------------------------ memory and loss
    def set_memories(self, visible: torch.Tensor, infrared: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        """Re-initialise the memories with centroids [Cv, D] and [Ci, D] (normalised here) and the
        visible->infrared association ``weights`` [Cv, Ci] (None: no cross-modality term)."""
        self.memories = {VISIBLE: F.normalize(visible.float(), dim=1).clone(),
                         INFRARED: F.normalize(infrared.float(), dim=1).clone()}
        self.targets = {}
        if weights is not None:
            w = weights.float()
            self.targets = {VISIBLE: w, INFRARED: w.T / w.T.sum(dim=1, keepdim=True).clamp(min=1e-12)}

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor, modalities: torch.Tensor | None = None) -> torch.Tensor:
        if not self.memories:
            raise ConfigError("the cluster_memory loss has no memory yet: it is filled by re-clustering at the start "
                              "of each epoch, so train it through vireid train (or call set_memories first)")
        if modalities is None:
            raise ConfigError("the cluster_memory loss needs the modality of every image")
        with torch.autocast(device_type=inputs.device.type, enabled=False):
            f = F.normalize(inputs.float(), dim=1)
            labels = labels.long()
            total = f.new_zeros(())
            cross_on = self.epoch >= self.cross_start_epoch and self.cross_weight > 0 and bool(self.targets)
            terms = 0
            for code, other in ((VISIBLE, INFRARED), (INFRARED, VISIBLE)):
                rows = modalities == code
                if not bool(rows.any()):
                    continue
                memory = self.memories[code].to(f.device)
                fm, ym = f[rows], labels[rows]
                total = total + F.cross_entropy(fm @ memory.T / self.temperature, ym)
                terms += 1
                if cross_on:
                    target = self.targets[code].to(f.device)[ym]
                    has = target.sum(dim=1) > 0
                    if bool(has.any()):
                        logits = fm[has] @ self.memories[other].to(f.device).T / self.temperature
                        cross = -(target[has] * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
                        total = total + self.cross_weight * cross
                if self.training:
                    self.memories[code] = memory_update(memory, fm, ym, self.momentum, self.update)
            return total / max(terms, 1)

    # ------------------------------------------------------------------ re-clustering hook
    def on_train_epoch_start(self, trainer: Any, epoch: int) -> None:
        """Re-cluster (every ``recluster_every`` epochs, and always when the memories are empty)."""
        self.epoch = int(epoch)
        if self.memories and epoch % self.recluster_every != 0:
            return
        features = trainer.train_features()
        stats = self.recluster(trainer, features, epoch)
        trainer.logger.log("cluster", trainer.state.step, epoch, **stats)
        if trainer.dist.is_main:
            line = (f"pseudo-labels (epoch {epoch + 1}): {stats['clusters_visible']} visible / "
                    f"{stats['clusters_infrared']} infrared clusters, outliers {100 * stats['outliers']:.1f}%, "
                    f"association cost {stats['association_cost']:.3f}")
            if "ari" in stats:
                line += f", ARI {stats['ari']:.3f}, NMI {stats['nmi']:.3f}"
            print(line, flush=True)

    def pseudo_labels(self, features: torch.Tensor, modalities: np.ndarray, truth: np.ndarray,
                      labelled_fraction: float = 0.0, seed: int = 0, num_ids: int = 1) -> dict[str, Any]:
        """Pseudo-labels of the training images from their ``features`` ``[N, D]`` (a pure function of its
        inputs and this loss's parameters): per-modality clustering, association and centroids.

        ``truth`` are the dataset's identities (for the labelled fraction and the logged quality only).
        Returns ``slots`` (each image's memory slot, -1 = outlier), ``groups`` (its cross-modality group),
        ``visible`` / ``infrared`` (centroids), ``weights`` (the association) and ``stats`` (what is logged).
        """
        from vireid.data.pseudo_labels import (
            ClusteringError,
            associate,
            centroids,
            dbscan_labels,
            label_quality,
            labelled_identities,
        )

        mods = np.asarray(modalities)
        truth = np.asarray(truth, dtype=np.int64)
        labelled = labelled_identities(truth, labelled_fraction, seed)
        fixed = len(labelled)
        is_labelled = np.isin(truth, labelled)
        slots = np.full(len(truth), -1, dtype=np.int64)
        slots[is_labelled] = np.searchsorted(labelled, truth[is_labelled])
        stats: dict[str, Any] = {"labelled_identities": fixed}
        cents = {}
        names = {VISIBLE: "visible", INFRARED: "infrared"}
        for code in (VISIBLE, INFRARED):
            in_mod = mods == code
            if not in_mod.any():
                raise ClusteringError(f"the training set has no {names[code]} image, so the two modalities cannot be "
                                      "associated; check data.root and its split (both modalities are needed)")
            free = np.flatnonzero(in_mod & ~is_labelled)
            clusters = 0
            if len(free) or not fixed:
                labels = dbscan_labels(features[free], eps=self.eps, min_samples=self.min_samples, k1=self.k1,
                                       k2=self.k2, modality=names[code]) if len(free) else np.zeros(0, dtype=np.int64)
                clusters = int(labels.max()) + 1 if labels.size else 0
                slots[free] = np.where(labels >= 0, labels + fixed, -1)
                stats[f"outliers_{names[code]}"] = float((labels < 0).mean()) if labels.size else 0.0
                if labels.size:  # this modality's clustering alone, before association (logged only)
                    quality = label_quality(labels, truth[free])
                    stats[f"ari_{names[code]}"], stats[f"nmi_{names[code]}"] = quality["ari"], quality["nmi"]
            stats[f"clusters_{names[code]}"] = clusters
            cents[code] = centroids(features[in_mod], slots[in_mod], fixed + clusters)
        assoc = associate(cents[VISIBLE], cents[INFRARED], mode=self.association,
                          soft_temperature=self.soft_temperature, soft_topk=self.soft_topk, fixed=fixed)
        unlabelled = ~is_labelled
        stats["outliers"] = float((slots[unlabelled] < 0).mean()) if unlabelled.any() else 0.0
        stats["association_cost"] = assoc.cost
        stats["matched_pairs"] = int(len(assoc.pairs) - fixed)
        groups = np.full(len(truth), -1, dtype=np.int64)
        for code, table in ((VISIBLE, assoc.groups_visible), (INFRARED, assoc.groups_infrared)):
            rows = (mods == code) & (slots >= 0)
            groups[rows] = table[slots[rows]]
        if unlabelled.any():  # pseudo-label quality against the dataset's identities (never used for training)
            stats.update(label_quality(groups[unlabelled], truth[unlabelled]))
        keep = np.flatnonzero(slots >= 0)
        num_groups = int(np.unique(groups[keep]).size)
        if num_groups < num_ids:
            raise ClusteringError(
                f"re-clustering left {num_groups} cross-modality clusters, fewer than sampler.num_ids="
                f"{num_ids} per batch; lower sampler.num_ids, or get more clusters by lowering eps or "
                "min_samples (losses.<term>.params)"
            )
        return {"slots": slots, "groups": groups, "visible": cents[VISIBLE], "infrared": cents[INFRARED],
                "weights": assoc.weights, "stats": stats}

    def recluster(self, trainer: Any, features: torch.Tensor, epoch: int) -> dict[str, Any]:
        """Pseudo-labels from ``features`` of the training images: new loader labels and sampler, new memories;
        returns the statistics logged for this re-clustering.

        Under DDP (``trainer.dist.enabled``) ``features`` are the same on every rank (the trainer gathers
        them, :meth:`~vireid.engine.trainer.Trainer.train_features`); rank 0 alone clusters and sends the
        result -- or its error -- to the other ranks (``broadcast_object_list``), so every rank trains on the
        same pseudo-labels, those a single process computes from these features, whatever the world size."""
        from vireid.data.pseudo_labels import SubsetBatchSampler
        from vireid.data.sampler import CrossModalityIdentitySampler

        cfg = trainer.cfg
        loader = trainer.data.train_loader
        if self._epoch_batches is None:
            self._epoch_batches = len(loader)
        mods = loader.modalities.numpy()
        truth = np.asarray([r.pid for r in trainer.data.train_records], dtype=np.int64)

        def compute() -> dict[str, Any]:
            return self.pseudo_labels(features, mods, truth, cfg.data.labelled_fraction, cfg.seed, cfg.sampler.num_ids)

        distributed = bool(getattr(trainer.dist, "enabled", False)) and torch.distributed.is_initialized()
        if not distributed:
            result = compute()
        else:
            message: list[Any] = [None]
            if trainer.dist.is_main:
                try:
                    message = [("labels", compute())]
                except Exception as error:  # noqa: BLE001 - every rank must stop with rank 0's error
                    message = [("error", error)]
            torch.distributed.broadcast_object_list(message, src=0)
            kind, result = message[0]
            if kind == "error":
                raise result
        slots, groups = result["slots"], result["groups"]
        keep = np.flatnonzero(slots >= 0)
        sampler = CrossModalityIdentitySampler(
            groups[keep], mods[keep], num_ids=cfg.sampler.num_ids, num_per_modality=cfg.sampler.num_per_modality,
            seed=cfg.seed, rank=trainer.dist.rank, world_size=trainer.dist.world_size, epoch_length=self._epoch_batches,
        )
        loader.labels = torch.as_tensor(slots, dtype=torch.int64)
        loader.batch_sampler = SubsetBatchSampler(sampler, keep)
        self.set_memories(result["visible"], result["infrared"], result["weights"])
        self.last_stats = result["stats"]
        return result["stats"]
