"""Attribute heads, attribute co-occurrence statistics and a GCN over the attribute nodes.

The survey's §6 proposes semantic fusion through knowledge graphs, "integrating pedestrian attributes and
relationship graphs". The pieces here follow ML-GCN (Chen et al., "Multi-label image recognition with
graph convolutional networks", CVPR 2019):

* **Nodes.** One node per attribute *value* (``gender=female``, ``backpack=yes``, ``top_colour=red``, ...:
  :data:`vireid.data.attribute_table.ATTRIBUTES` in table order, ``V = sum(NUM_VALUES)`` nodes); the node
  inputs are learnable embeddings (ML-GCN feeds GloVe word vectors; vireid ships no word vectors).
* **Correlation matrix** (ML-GCN §3.3, eqs. 6-8): co-occurrence counts ``M_ij`` of the training labels,
  conditional probabilities ``P(j | i) = M_ij / N_i``; binarised at ``threshold`` (ML-GCN's τ = 0.4) to
  drop noisy edges; re-weighted so that a node keeps weight 1 for itself and spreads ``p`` over its
  neighbours, ``A'_ij = p A_ij / sum_k A_kj`` (the released ``util.py`` ``gen_A`` divides by column sums
  with p = 0.25; the paper's eq. 8 uses p = 0.2), plus the identity; then the symmetric normalisation
  ``D^-1/2 A' D^-1/2`` of the released ``gen_adj`` (a GCN layer is ``H' = LeakyReLU(Â H W)``, eq. 2,
  LeakyReLU slope 0.2, two layers). *Unknown labels*: ``N_i`` counts only the images where node ``j``'s
  attribute is known (``P(top_colour=red | backpack=yes)`` is estimated on visible images), so an
  infrared image's missing colour is not read as "no colour".
* **Fusion with the image feature** (what ML-GCN does not have; the survey's "knowledge graph" fusion):
  the image's predicted attribute distribution ``q`` (per-attribute softmax of the heads) reads the graph's
  node outputs ``H`` ``[V, D]``: ``c = q H / A`` (``A`` attributes, so ``c`` averages one node per attribute,
  weighted by belief). ``attention`` re-weights the feature's channels, ``f * 2 sigmoid(c)`` (1 at
  ``c = 0``: a graph that knows nothing keeps the feature); ``add`` gives ``f + c``; ``concat`` gives
  ``[f, c]``. ``none`` keeps the plain heads.

**Heads and loss.** One linear classifier per attribute on the embedding (softmax cross entropy over its
values; a yes/no attribute is a 2-way cross entropy), unknown labels (-1) ignored. The method returns
logits and targets as one tensor (``pack_attribute_output``) because a loss term receives only its
input, the identity labels and the modalities (:mod:`vireid.modeling.losses.attribute`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vireid.data.attribute_table import ATTRIBUTES, NUM_VALUES, UNKNOWN, VISIBLE_ONLY

#: Value nodes: ``V`` and the first node of each attribute.
NUM_NODES = int(sum(NUM_VALUES))
OFFSETS = tuple(int(x) for x in np.cumsum((0, *NUM_VALUES[:-1])))
#: ML-GCN's released defaults (``util.py``: t = 0.4, p = 0.25).
DEFAULT_THRESHOLD = 0.4
DEFAULT_REWEIGHT = 0.25
FUSIONS = ("none", "attention", "add", "concat")


def node_indicators(labels: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``on`` ``[N, V]`` (image has value node ``v``) and ``known`` ``[N, V]`` (node ``v``'s attribute is known)."""
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels, dtype=np.int64)
    n = labels.shape[0]
    on = np.zeros((n, NUM_NODES), dtype=np.float64)
    known = np.zeros((n, NUM_NODES), dtype=np.float64)
    for a, (offset, size) in enumerate(zip(OFFSETS, NUM_VALUES)):
        valid = labels[:, a] >= 0
        on[np.nonzero(valid)[0], offset + labels[valid, a]] = 1.0
        known[:, offset:offset + size] = valid[:, None]
    return on, known


def conditional_probabilities(labels: np.ndarray | torch.Tensor) -> np.ndarray:
    """``P[i, j] = P(node j | node i)`` ``[V, V]`` from training labels ``[N, A]`` (-1 unknown): images with node
    ``i`` *and* node ``j``'s attribute known in the denominator; 0 where no such image exists."""
    on, known = node_indicators(labels)
    together = on.T @ on  # M_ij
    seen = on.T @ known  # images with node i whose attribute of j is known
    return np.divide(together, seen, out=np.zeros_like(together), where=seen > 0)


def correlation_matrix(probabilities: np.ndarray, threshold: float = DEFAULT_THRESHOLD,
                       reweight: float = DEFAULT_REWEIGHT) -> np.ndarray:
    """ML-GCN's binarised, re-weighted correlation matrix ``[V, V]`` (eqs. 7-8; released ``gen_A``) with the
    symmetric normalisation of the released ``gen_adj`` applied: ready for :class:`AttributeGCN`."""
    binary = (np.asarray(probabilities) >= threshold).astype(np.float64)
    np.fill_diagonal(binary, 0.0)  # a node with itself is the identity added below
    weighted = binary * reweight / (binary.sum(0, keepdims=True) + 1e-6)
    adjacency = weighted + np.eye(binary.shape[0])
    degree = adjacency.sum(1) ** -0.5
    return (adjacency * degree[None, :]).T * degree[None, :]  # (A D)^T D, as gen_adj


class AttributeHeads(nn.Module):
    """One bias-carrying linear classifier per attribute of :data:`ATTRIBUTES`; logits concatenated ``[B, V]``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(dim, n) for n in NUM_VALUES)
        for head in self.heads:
            nn.init.normal_(head.weight, std=0.001)
            nn.init.zeros_(head.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.cat([head(features) for head in self.heads], dim=1)


def split_logits(logits: torch.Tensor) -> list[torch.Tensor]:
    """``[B, V]`` -> one ``[B, n_a]`` per attribute."""
    return list(torch.split(logits, list(NUM_VALUES), dim=1))


def attribute_distribution(logits: torch.Tensor) -> torch.Tensor:
    """Per-attribute softmax ``[B, V]`` (each attribute's block sums to 1)."""
    return torch.cat([F.softmax(block, dim=1) for block in split_logits(logits)], dim=1)


def predict_labels(logits: torch.Tensor, modalities: torch.Tensor | None = None) -> torch.Tensor:
    """Predicted labels ``[B, A]`` (argmax per attribute); colours ``-1`` on infrared rows (code 1)."""
    labels = torch.stack([block.argmax(dim=1) for block in split_logits(logits)], dim=1)
    if modalities is not None:
        infrared = torch.as_tensor(modalities, device=labels.device).view(-1) == 1
        columns = torch.as_tensor(VISIBLE_ONLY, device=labels.device)
        labels[infrared.unsqueeze(1) & columns.unsqueeze(0)] = UNKNOWN
    return labels


def colourless(images: torch.Tensor, mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
               std: tuple[float, float, float] = (0.229, 0.224, 0.225), tolerance: float = 1.5 / 255,
               fraction: float = 0.6) -> torch.Tensor:
    """``[B]`` bool: images (normalised with ImageNet ``mean``/``std``, as vireid's loaders do) of which at least
    ``fraction`` of the pixels have equal channels (within ``tolerance``): grey-scale or channel-augmented
    visible images, whose colour labels the image no longer shows (random-erasing patches may keep their
    colour, hence a fraction)."""
    m = torch.tensor(mean, device=images.device, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, device=images.device, dtype=torch.float32).view(1, 3, 1, 1)
    raw = images.detach().float() * s + m
    spread = raw.amax(dim=1) - raw.amin(dim=1)
    return (spread <= tolerance).float().mean(dim=(1, 2)) >= fraction


def pack_attribute_output(logits: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    """``[B, V + A]``: the attribute logits, then the targets (-1 unknown; all unknown when ``targets`` is None)."""
    if targets is None:
        targets = torch.full((logits.shape[0], len(ATTRIBUTES)), UNKNOWN, device=logits.device)
    return torch.cat([logits, targets.to(logits.dtype).detach()], dim=1)


def unpack_attribute_output(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of :func:`pack_attribute_output`: logits ``[B, V]`` and int64 targets ``[B, A]``."""
    if packed.dim() != 2 or packed.shape[1] != NUM_NODES + len(ATTRIBUTES):
        raise ValueError(f"attribute output has shape {tuple(packed.shape)}, expected [B, {NUM_NODES + len(ATTRIBUTES)}] "
                         "(logits of every attribute value, then one target per attribute)")
    return packed[:, :NUM_NODES], packed[:, NUM_NODES:].detach().round().long()


def attribute_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the attributes with a known label in the batch of their softmax cross entropy (unknown ignored)."""
    terms = []
    for a, block in enumerate(split_logits(logits)):
        target = targets[:, a]
        if bool((target >= 0).any()):
            terms.append(F.cross_entropy(block.float(), target, ignore_index=UNKNOWN))
    return torch.stack(terms).mean() if terms else logits.sum() * 0.0


class AttributeGCN(nn.Module):
    """Two graph-convolution layers (ML-GCN eq. 2, LeakyReLU 0.2 between) over the attribute-value nodes;
    learnable node inputs ``[V, in_dim]``; output ``[V, out_dim]``. ``adjacency`` (a buffer, saved with the
    model) is the identity until :meth:`set_statistics` gives it the training labels' correlations."""

    def __init__(self, out_dim: int, in_dim: int = 64, hidden_dim: int = 256, threshold: float = DEFAULT_THRESHOLD,
                 reweight: float = DEFAULT_REWEIGHT) -> None:
        super().__init__()
        self.threshold, self.reweight = float(threshold), float(reweight)
        self.node_inputs = nn.Parameter(torch.randn(NUM_NODES, in_dim) * 0.1)
        self.weight1 = nn.Linear(in_dim, hidden_dim, bias=False)
        self.weight2 = nn.Linear(hidden_dim, out_dim, bias=False)
        nn.init.normal_(self.weight2.weight, std=0.01)  # the fused feature starts near the plain one
        self.register_buffer("adjacency", torch.eye(NUM_NODES))
        self.register_buffer("probabilities", torch.zeros(NUM_NODES, NUM_NODES))
        self.register_buffer("ready", torch.zeros((), dtype=torch.bool))

    def set_statistics(self, labels: np.ndarray | torch.Tensor) -> None:
        """Compute the correlation matrix from training labels ``[N, A]`` and store it (and ``P(j|i)``)."""
        probabilities = conditional_probabilities(labels)
        adjacency = correlation_matrix(probabilities, self.threshold, self.reweight)
        self.probabilities.copy_(torch.as_tensor(probabilities, dtype=self.probabilities.dtype))
        self.adjacency.copy_(torch.as_tensor(adjacency, dtype=self.adjacency.dtype))
        self.ready.fill_(True)

    def forward(self) -> torch.Tensor:
        hidden = F.leaky_relu(self.adjacency @ self.weight1(self.node_inputs), 0.2)
        return self.adjacency @ self.weight2(hidden)


class GraphFusion(nn.Module):
    """The image feature ``f`` ``[B, D]`` fused with the graph context ``c = q H / A`` (module docstring)."""

    def __init__(self, dim: int, mode: str, **gcn: float) -> None:
        super().__init__()
        self.mode = mode
        self.gcn = AttributeGCN(dim, **gcn)
        self.out_dim = 2 * dim if mode == "concat" else dim

    def context(self, logits: torch.Tensor) -> torch.Tensor:
        nodes = self.gcn()
        return attribute_distribution(logits).to(nodes.dtype) @ nodes / len(ATTRIBUTES)

    def forward(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        c = self.context(logits).to(features.dtype)
        if self.mode == "attention":
            return features * 2.0 * torch.sigmoid(c)
        if self.mode == "add":
            return features + c
        return torch.cat([features, c], dim=1)


__all__ = [
    "DEFAULT_REWEIGHT",
    "DEFAULT_THRESHOLD",
    "FUSIONS",
    "NUM_NODES",
    "OFFSETS",
    "AttributeGCN",
    "AttributeHeads",
    "GraphFusion",
    "attribute_cross_entropy",
    "attribute_distribution",
    "colourless",
    "conditional_probabilities",
    "correlation_matrix",
    "node_indicators",
    "pack_attribute_output",
    "predict_labels",
    "split_logits",
    "unpack_attribute_output",
]
