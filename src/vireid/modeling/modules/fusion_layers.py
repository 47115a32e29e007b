"""Modality fusion layers (the survey §4.1 "Feature Fusion Strategies", §4.2 step 3 "modality fusion layer").

The survey names three ways to combine several modalities of one person:

* **early fusion** -- "multi-modal features (such as the concatenation of RGB and infrared features)
  are directly concatenated" at the start of feature extraction "and provided for subsequent
  networks to jointly learn the correlations between modalities": :class:`EarlyFusion`;
* **late fusion** -- single-modal models whose results "are fused through a weighted average or
  voting mechanism" at the decision layer: :class:`LateFusion`;
* **attention fusion** -- "dynamically calculate the weights of modal features, adaptively allocate
  the contribution degrees of features, and focus on the more discriminative feature dimensions":
  :class:`AttentionFusion`.

Common conventions: a batch holds ``S`` *sets* (one person at one moment) of up to ``M`` modalities
(index ``m`` = modality code, visible 0, infrared 1, ...); ``mask`` is bool ``[S, M]``, True where the
set has modality ``m``. Inputs of absent modalities are ignored (their values may be anything), so a
set may hold a single modality; every set needs at least one. Everything is batched over sets: no
Python loop over sets or samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vireid.errors import ConfigError
from vireid.modeling.registries import MODULES


def check_mask(mask: torch.Tensor, num_sets: int, num_modalities: int) -> torch.Tensor:
    """Validate a presence mask ``[S, M]`` (bool) and return it; every set needs one modality."""
    if mask.dim() != 2 or tuple(mask.shape) != (num_sets, num_modalities):
        raise ValueError(f"mask must have shape [{num_sets}, {num_modalities}], got {tuple(mask.shape)}")
    mask = mask.bool()
    if num_sets and not bool(mask.any(dim=1).all()):
        raise ValueError("every set must hold at least one modality (a row of the mask is all False)")
    return mask


def zero_absent(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``values`` ``[S, M, ...]`` with the entries of absent modalities set to 0 (not multiplied: they may be inf/nan)."""
    keep = mask.to(values.device).bool().view(*mask.shape, *([1] * (values.dim() - 2)))
    return torch.where(keep, values, torch.zeros((), dtype=values.dtype, device=values.device))


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Softmax of ``scores`` over ``dim`` restricted to ``mask`` (absent entries get weight 0)."""
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=dim)


@MODULES.register("early_fusion")
class EarlyFusion(nn.Module):
    """Channel concatenation of registered per-modality maps, then a learned 1x1 mixing (the survey §4.1).

    ``z_s = W * concat_m(mask_{s,m} x_{s,m}) * M / sum_m mask_{s,m}``, with ``x_{s,m}`` ``[C, H, W]``
    (images or shallow feature maps of modality ``m``, pixel-aligned), ``W`` a 1x1 convolution from
    ``M*C`` to ``C_out`` channels. An absent modality contributes zeros and the rescaling by
    ``M / #present`` keeps the magnitude. ``W`` starts as ``[I/M, ..., I/M]`` (when ``C_out == C``), so the
    fused map is initially the mean of the present modalities' maps and the joint network behind it
    starts from the features it would see for one modality.
    """

    def __init__(self, channels: int, num_modalities: int = 2, out_channels: int | None = None) -> None:
        super().__init__()
        if channels < 1 or num_modalities < 1:
            raise ConfigError(f"early fusion needs channels >= 1 and num_modalities >= 1, got {channels}, {num_modalities}")
        self.channels = int(channels)
        self.num_modalities = int(num_modalities)
        self.out_channels = int(out_channels or channels)
        self.mix = nn.Conv2d(self.num_modalities * self.channels, self.out_channels, kernel_size=1, bias=False)
        if self.out_channels == self.channels:
            eye = torch.eye(self.channels) / self.num_modalities
            with torch.no_grad():
                self.mix.weight.copy_(eye.repeat(1, self.num_modalities).view_as(self.mix.weight))

    def forward(self, maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``maps`` ``[S, M, C, H, W]`` + ``mask`` ``[S, M]`` -> fused map ``[S, C_out, H, W]``."""
        if maps.dim() != 5 or maps.shape[1] != self.num_modalities or maps.shape[2] != self.channels:
            raise ValueError(f"maps must have shape [S, {self.num_modalities}, {self.channels}, H, W], got {tuple(maps.shape)}")
        s, m, c, h, w = maps.shape
        mask = check_mask(mask.to(maps.device), s, m)
        present = mask.to(maps.dtype)
        stacked = zero_absent(maps, mask).reshape(s, m * c, h, w)
        scale = (m / present.sum(dim=1)).view(s, 1, 1, 1)
        return self.mix(stacked) * scale

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_modalities={self.num_modalities}, out_channels={self.out_channels}"


LATE_MODES = ("average", "vote")


@MODULES.register("late_fusion")
class LateFusion(nn.Module):
    """Decision-level fusion of single-modality results by weighted average or voting (the survey §4.1).

    Per set, the weights of the present modalities are renormalised:
    ``w~_{s,m} = w_m mask_{s,m} / sum_k w_k mask_{s,k}`` (``weights`` fixed, default uniform).

    * :meth:`forward` (embeddings ``e_{s,m}``): ``f_s = sum_m w~_{s,m} e^_{s,m}``, where ``e^`` is ``e`` L2-
      normalised when ``normalize`` (so that no modality dominates by its scale) -- the weighted average.
    * :meth:`fuse_scores` (scores ``a_{s,m,n}`` of ``N`` candidates, higher = better: class logits or
      negated distances to gallery items): ``"average"`` gives ``sum_m w~_{s,m} a_{s,m,n}``; ``"vote"`` is
      weighted rank voting (Borda count): each modality ranks the candidates, rank ``r`` (0 = best) earns
      ``(N-1-r)/(N-1)`` points times ``w~_{s,m}``; candidates are ordered by points, ties by the average
      score, and the result is the score ``(N-1-position)/(N-1)`` of that order.
    """

    def __init__(self, num_modalities: int = 2, weights: Sequence[float] | None = None, mode: str = "average",
                 normalize: bool = True) -> None:
        super().__init__()
        if mode not in LATE_MODES:
            raise ConfigError(f"late fusion mode {mode!r} is unknown; use one of {', '.join(LATE_MODES)}")
        if weights is None:
            weights = [1.0] * num_modalities
        if len(weights) != num_modalities or min(float(x) for x in weights) < 0 or sum(float(x) for x in weights) <= 0:
            raise ConfigError(
                f"late fusion weights {list(weights)} are invalid; give {num_modalities} non-negative numbers, not all 0"
            )
        self.num_modalities = int(num_modalities)
        self.mode = mode
        self.normalize = bool(normalize)
        w = torch.tensor([float(x) for x in weights], dtype=torch.float32)
        self.register_buffer("weights", w / w.sum())

    def effective_weights(self, mask: torch.Tensor) -> torch.Tensor:
        """``w~`` ``[S, M]``: the fixed weights restricted to the present modalities, summing to 1 per set."""
        w = self.weights.to(mask.device).unsqueeze(0) * mask.to(self.weights.dtype)
        total = w.sum(dim=1, keepdim=True)
        if bool((total <= 0).any()):
            raise ValueError("late fusion: a set holds only modalities of weight 0; give them a positive weight")
        return w / total

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``embeddings`` ``[S, M, D]`` + ``mask`` ``[S, M]`` -> weighted average ``[S, D]``."""
        s, m, _ = embeddings.shape
        mask = check_mask(mask.to(embeddings.device), s, m)
        embeddings = zero_absent(embeddings, mask)
        if self.normalize:
            embeddings = F.normalize(embeddings, dim=2)
        w = self.effective_weights(mask).to(embeddings.dtype)
        return (embeddings * w.unsqueeze(2)).sum(dim=1)

    def fuse_scores(self, scores: torch.Tensor, mask: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        """``scores`` ``[S, M, N]`` (higher = better) + ``mask`` -> fused scores ``[S, N]`` (see the class doc)."""
        mode = mode or self.mode
        if mode not in LATE_MODES:
            raise ConfigError(f"late fusion mode {mode!r} is unknown; use one of {', '.join(LATE_MODES)}")
        s, m, n = scores.shape
        mask = check_mask(mask.to(scores.device), s, m)
        w = self.effective_weights(mask).to(scores.dtype)
        scores = zero_absent(scores, mask)
        average = (scores * w.unsqueeze(2)).sum(dim=1)
        if mode == "average":
            return average
        return rank_vote(scores, w, average)


def rank_vote(scores: torch.Tensor, weights: torch.Tensor, tie_break: torch.Tensor) -> torch.Tensor:
    """Weighted Borda count over ``M`` ballots: ``scores`` ``[S, M, N]`` (higher = better), ``weights``
    ``[S, M]`` (0 for absent ballots), ``tie_break`` ``[S, N]``. Returns ``[S, N]`` scores in ``[0, 1]``
    whose order is (points, then tie_break), both descending."""
    s, _, n = scores.shape
    if n == 0:
        return scores.new_zeros((s, 0))
    rank = torch.argsort(torch.argsort(scores, dim=2, descending=True, stable=True), dim=2)  # 0 = best
    points = (n - 1 - rank).to(weights.dtype) / max(n - 1, 1)
    votes = (points * weights.unsqueeze(2)).sum(dim=1)
    by_tie = torch.argsort(tie_break, dim=1, descending=True, stable=True)
    order = by_tie.gather(1, torch.argsort(votes.gather(1, by_tie), dim=1, descending=True, stable=True))
    value = torch.linspace(1.0, 0.0, n, dtype=weights.dtype, device=scores.device).expand(s, n)
    return torch.empty_like(value).scatter_(1, order, value)


ATTENTION_GRANULARITIES = ("modality", "channel")


@MODULES.register("attention_fusion")
class AttentionFusion(nn.Module):
    """Learned, input-dependent modality weights (the survey §4.1 "attention fusion").

    For set ``s`` with present embeddings ``e_{s,m}`` ``[D]`` and their mean ``e-_s`` (the context)::

        u_{s,m}   = W2 relu(W1 LN([e_{s,m}; e-_s]) + p_m)            (p_m: learned modality embedding)
        alpha_{s} = softmax over the present m of u_{s,m} / T
        f_s       = sum_m alpha_{s,m} * e_{s,m}

    ``granularity="modality"``: ``u`` is one number per modality (how much to trust each modality for this
    input); ``"channel"``: ``u`` has ``D`` numbers, one weight per modality *and feature dimension*
    ("focus on the more discriminative feature dimensions"); the softmax runs over modalities for every
    dimension, so the weights of each dimension sum to 1. ``W2`` starts at zero: the first forward
    passes average the present modalities, and the weights become input-dependent as it learns.
    :attr:`last_weights` keeps the weights of the last call (``[S, M]`` or ``[S, M, D]``, detached).
    """

    def __init__(self, dim: int, num_modalities: int = 2, hidden: int | None = None, granularity: str = "modality",
                 temperature: float = 1.0) -> None:
        super().__init__()
        if granularity not in ATTENTION_GRANULARITIES:
            raise ConfigError(
                f"attention granularity {granularity!r} is unknown; use one of {', '.join(ATTENTION_GRANULARITIES)}"
            )
        if temperature <= 0:
            raise ConfigError(f"attention temperature must be positive, got {temperature}")
        self.dim = int(dim)
        self.num_modalities = int(num_modalities)
        self.granularity = granularity
        self.temperature = float(temperature)
        hidden = int(hidden or max(self.dim // 4, 16))
        self.norm = nn.LayerNorm(2 * self.dim)
        self.proj = nn.Linear(2 * self.dim, hidden)
        self.modality_embedding = nn.Parameter(torch.zeros(self.num_modalities, hidden))
        self.score = nn.Linear(hidden, 1 if granularity == "modality" else self.dim)
        nn.init.normal_(self.modality_embedding, std=0.02)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)
        self.last_weights: torch.Tensor | None = None

    def weights(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Fusion weights ``alpha``: ``[S, M]`` (modality) or ``[S, M, D]`` (channel); 0 where absent."""
        s, m, d = embeddings.shape
        if m != self.num_modalities or d != self.dim:
            raise ValueError(f"embeddings must have shape [S, {self.num_modalities}, {self.dim}], got {tuple(embeddings.shape)}")
        mask = check_mask(mask.to(embeddings.device), s, m)
        embeddings = zero_absent(embeddings, mask)
        present = mask.to(embeddings.dtype).unsqueeze(2)
        context = embeddings.sum(dim=1) / present.sum(dim=1)
        joint = torch.cat([embeddings, context.unsqueeze(1).expand(s, m, d)], dim=2)
        hidden = F.relu(self.proj(self.norm(joint)) + self.modality_embedding.to(embeddings.dtype))
        u = self.score(hidden) / self.temperature  # [S, M, 1 or D]
        alpha = masked_softmax(u, mask.unsqueeze(2), dim=1)
        return alpha.squeeze(2) if self.granularity == "modality" else alpha

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``embeddings`` ``[S, M, D]`` + ``mask`` ``[S, M]`` -> fused ``[S, D]``."""
        alpha = self.weights(embeddings, mask)
        self.last_weights = alpha.detach()
        full = alpha.unsqueeze(2) if alpha.dim() == 2 else alpha
        return (zero_absent(embeddings, mask) * full).sum(dim=1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_modalities={self.num_modalities}, granularity={self.granularity!r}"


FUSIONS = {"early": EarlyFusion, "late": LateFusion, "attention": AttentionFusion}

__all__ = [
    "ATTENTION_GRANULARITIES",
    "AttentionFusion",
    "EarlyFusion",
    "FUSIONS",
    "LATE_MODES",
    "LateFusion",
    "check_mask",
    "masked_softmax",
    "rank_vote",
    "zero_absent",
]
