"""Temporal aggregation: the frames of one tracklet -> one embedding.

The survey's multi-modal framework (§4.1-4.2) treats a video as a sequence: "for sequential data such
as videos, LSTM and GRU capture the action correlations between frames", and 3D-CNNs model motion.
The video ReID literature compares the same four families on one backbone (Gao & Nevatia, "Revisiting
temporal modeling for video-based person ReID", arXiv 1805.02104, 2018: temporal pooling, temporal
attention, RNN, 3D convolution); MITML (Lin et al., CVPR 2022, the HITSZ-VCM paper) aggregates frame
features of a fixed-length clip (``seq_len = 6`` in its ``train.py``). The heads here:

==================  =====================================================  ====================================
``model.params``    what it does                                           source
``temporal:``
==================  =====================================================  ====================================
``avg``             mean of the frame features (temporal average pooling)  Gao & Nevatia §3.2 "temporal pooling"
``gru`` / ``lstm``  a GRU / LSTM over the frame features, its outputs      survey §4.1-4.2; Gao & Nevatia §3.3
                    averaged over time (+ the frame feature: residual)     ("RNN", outputs mean-pooled)
``attention``       softmax over time of a learned score per frame,        Gao & Nevatia §3.2 "temporal
                    the weighted sum of frame features                     attention" (scores from features)
``conv2plus1d``     a residual (2+1)D convolution block on the frame       survey §4.1 (3D-CNN); Tran et al.,
                    feature maps [G, C, T, h, w] (1x3x3 spatial then       CVPR 2018 (R(2+1)D factorisation),
                    3x1x1 temporal convolution), then spatial pooling      Gao & Nevatia §3.4 (3D conv)
                    per frame and the mean over time
==================  =====================================================  ====================================

Every head maps ``[G, T, D]`` frame features (the map head: ``[G, T, C, h, w]`` maps) of ``G``
tracklets with ``T`` frames each to ``[G, D]``. Grouping a batch into tracklets
(:func:`tracklet_segments`) follows the ``tracklets`` side input (:mod:`vireid.data.extras`): frames of
one tracklet sit next to each other in temporal order, so each run of equal consecutive ids is one
tracklet; an id of ``-1`` (a still image) is a tracklet of its own. Tracklets of different lengths are
run in groups of equal length (:func:`by_length`), so no head pads or masks.
"""

from __future__ import annotations

import torch
from torch import nn

from vireid.errors import ConfigError, VireidError
from vireid.modeling.registries import MODULES


def tracklet_segments(tracklets: torch.Tensor | None, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(segment_of_frame [N], starts [G], lengths [G])`` of a batch of ``count`` frames.

    A run of equal consecutive ids ``>= 0`` is one tracklet; every ``-1`` (a still image) and every frame of a
    batch without ids (``tracklets`` None) is a tracklet of one frame. Tracklets keep the batch's order.
    """
    if tracklets is None:
        ids = torch.arange(count)
        return ids, ids.clone(), torch.ones(count, dtype=torch.long)
    ids = torch.as_tensor(tracklets).reshape(-1) if not isinstance(tracklets, torch.Tensor) else tracklets
    if ids.dim() != 1 or ids.shape[0] != count:
        raise VireidError(f"the tracklets side input has shape {tuple(ids.shape)} for {count} frames; give one "
                          "tracklet id per frame (data.extras: {tracklets: dataset})")
    ids = ids.detach().to("cpu", torch.long)
    new = torch.ones(count, dtype=torch.bool)
    if count > 1:
        new[1:] = (ids[1:] != ids[:-1]) | (ids[1:] < 0)
    segment = torch.cumsum(new.long(), 0) - 1
    starts = torch.nonzero(new).reshape(-1)
    lengths = torch.diff(torch.cat([starts, torch.tensor([count])]))
    return segment, starts, lengths


def by_length(lengths: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """``[(T, tracklet indices)]``: the tracklets of each length, shortest first."""
    return [(int(t), torch.nonzero(lengths == t).reshape(-1)) for t in torch.unique(lengths)]


class TemporalHead(nn.Module):
    """Base of the temporal heads: ``forward(frames [G, T, ...]) -> [G, D]``. ``on_maps``: the head reads
    feature maps (``[G, T, C, h, w]``), otherwise pooled frame features (``[G, T, D]``)."""

    on_maps = False
    needs_equal_length = False


@MODULES.register("temporal_avg")
class TemporalAveragePooling(TemporalHead):
    """Temporal average pooling: the mean of a tracklet's frame features (Gao & Nevatia 2018, §3.2)."""

    def __init__(self, dim: int = 0) -> None:
        super().__init__()

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.mean(dim=1)


@MODULES.register("temporal_rnn")
class TemporalRNN(TemporalHead):
    """A GRU or LSTM over a tracklet's frame features, its outputs averaged over time.

    The survey (§4.1-4.2): "LSTM and GRU capture the action correlations between frames"; the outputs are
    mean-pooled over time as in Gao & Nevatia 2018 §3.3 (and McLaughlin et al., CVPR 2016). ``residual``
    adds each frame's feature to its RNN output, so an untrained RNN starts from temporal average pooling.
    The hidden size is the feature size ``dim`` (the BNNeck and classifier keep their width).
    """

    def __init__(self, dim: int, cell: str = "gru", layers: int = 1, residual: bool = True) -> None:
        super().__init__()
        if cell not in ("gru", "lstm"):
            raise ConfigError(f"temporal RNN cell must be gru or lstm, got {cell!r}")
        if layers < 1:
            raise ConfigError(f"temporal RNN layers must be at least 1, got {layers}")
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.cell = cell
        self.residual = bool(residual)
        self.rnn = rnn(dim, dim, num_layers=int(layers), batch_first=True)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(frames)
        if self.residual:
            out = out + frames
        return out.mean(dim=1)


@MODULES.register("temporal_attention")
class TemporalAttention(TemporalHead):
    """Temporal attention: ``a_t = softmax_t(w2 . relu(W1 f_t))``, the tracklet feature ``sum_t a_t f_t``.

    Gao & Nevatia 2018 §3.2 compute the score of each frame with a small network and normalise the scores
    over the tracklet's frames with a softmax; here the score network reads the pooled frame feature
    (a linear layer to ``dim / reduction``, ReLU, a linear layer to one score).
    """

    def __init__(self, dim: int, reduction: int = 4) -> None:
        super().__init__()
        if reduction < 1:
            raise ConfigError(f"temporal attention reduction must be at least 1, got {reduction}")
        hidden = max(dim // int(reduction), 1)
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def weights(self, frames: torch.Tensor) -> torch.Tensor:
        """Attention weights ``[G, T]`` (each row sums to 1)."""
        return torch.softmax(self.score(frames).squeeze(-1), dim=1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return (self.weights(frames).unsqueeze(-1) * frames).sum(dim=1)


@MODULES.register("temporal_conv2plus1d")
class TemporalConv2Plus1D(TemporalHead):
    """A residual (2+1)D convolution block on a tracklet's feature maps, then per-frame pooling and the mean
    over time.

    The survey's 3D-CNN for video (§4.1), factorised as in R(2+1)D (Tran et al., CVPR 2018): a 1x1x1
    reduction to ``C / reduction`` channels, a 1x3x3 spatial and a 3x1x1 temporal convolution (padding 1
    in time: any number of frames, one included), a 1x1x1 expansion back to ``C``, each followed by
    BatchNorm; the last BatchNorm starts at zero so the block starts as the identity, and a ReLU after the
    residual sum keeps the maps non-negative for GeM. ``pool`` is the method's spatial pooling.
    """

    on_maps = True
    needs_equal_length = True  # training batches: BatchNorm3d over clips of one length (the sampler's T)

    def __init__(self, dim: int, pool: nn.Module | None = None, reduction: int = 4) -> None:
        super().__init__()
        if reduction < 1:
            raise ConfigError(f"(2+1)D head reduction must be at least 1, got {reduction}")
        mid = max(dim // int(reduction), 1)
        self.block = nn.Sequential(
            nn.Conv3d(dim, mid, 1, bias=False), nn.BatchNorm3d(mid), nn.ReLU(inplace=True),
            nn.Conv3d(mid, mid, (1, 3, 3), padding=(0, 1, 1), bias=False), nn.BatchNorm3d(mid), nn.ReLU(inplace=True),
            nn.Conv3d(mid, mid, (3, 1, 1), padding=(1, 0, 0), bias=False), nn.BatchNorm3d(mid), nn.ReLU(inplace=True),
            nn.Conv3d(mid, dim, 1, bias=False), nn.BatchNorm3d(dim),
        )
        nn.init.zeros_(self.block[-1].weight)
        self.pool = pool

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        g, t, c, h, w = maps.shape
        x = maps.permute(0, 2, 1, 3, 4)  # [G, C, T, h, w]
        x = torch.relu(x + self.block(x))
        frames = x.permute(0, 2, 1, 3, 4).reshape(g * t, c, h, w)
        pooled = self.pool(frames) if self.pool is not None else frames.mean(dim=(2, 3))
        return pooled.reshape(g, t, c).mean(dim=1)


#: ``model.params.temporal`` -> (registered module, its keyword parameters)
TEMPORAL_HEADS = {
    "avg": ("temporal_avg", {}),
    "gru": ("temporal_rnn", {"cell": "gru"}),
    "lstm": ("temporal_rnn", {"cell": "lstm"}),
    "attention": ("temporal_attention", {}),
    "conv2plus1d": ("temporal_conv2plus1d", {}),
}


def build_temporal_head(name: str, dim: int, pool: nn.Module | None = None, reduction: int = 4) -> TemporalHead:
    """The temporal head ``name`` (:data:`TEMPORAL_HEADS`) for ``dim``-channel frame features."""
    if name not in TEMPORAL_HEADS:
        raise ConfigError(f"config key 'model.params.temporal' is {name!r}; choose one of {', '.join(TEMPORAL_HEADS)}")
    registered, params = TEMPORAL_HEADS[name]
    cls = MODULES.get(registered)
    if name in ("attention", "conv2plus1d"):
        params = {**params, "reduction": reduction}
    if name == "conv2plus1d":
        params = {**params, "pool": pool}
    return cls(dim, **params)


__all__ = [
    "TEMPORAL_HEADS",
    "TemporalAttention",
    "TemporalAveragePooling",
    "TemporalConv2Plus1D",
    "TemporalHead",
    "TemporalRNN",
    "build_temporal_head",
    "by_length",
    "tracklet_segments",
]
