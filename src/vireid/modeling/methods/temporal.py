"""Tracklet (video) re-identification over any backbone: ``model.method: temporal``.

The two-stream baseline (:class:`~vireid.modeling.methods.baseline.BaselineReID`: backbone, GeM, BNNeck,
identity classifier) with a temporal head between the frame features and the BNNeck
(:mod:`vireid.modeling.modules.temporal`: ``avg``, ``gru``, ``lstm``, ``attention``, ``conv2plus1d``)::

    frames [N, 3, H, W], modalities [N], tracklets [N]   (the ``tracklets`` side input, data.extras)
      -> backbone -> maps [N, C, h, w] -> GeM -> frame features [N, C]
      -> group the frames into tracklets (runs of equal consecutive ids; -1: a tracklet of one frame)
      -> temporal head per tracklet: [G, T, C] (conv2plus1d: the maps [G, T, C, h, w]) -> [G, C]
      -> BNNeck -> classifier

**What the losses see.** The trainer calls every loss as ``loss(outputs[key], labels, modalities)`` with
one label per *frame*, and has no generic way to hand a method per-tracklet labels. So in training the
method returns each tracklet's ``features`` / ``bn_features`` / ``logits`` once per frame of it (broadcast
back to the frames). With the tracklet sampler's batches (every tracklet ``T`` frames) this gives the
per-tracklet loss value for the mean identity loss (each tracklet's term counted ``T`` times, divided by
``T`` times as many rows) and for batch-hard triplet losses (a copy of the anchor's own tracklet is at
distance 0, never the hardest positive; the hardest positive and negative are other tracklets); losses
that weight every pair (WRT, hetero-centre) see each tracklet ``T`` times, so tracklets of equal length
keep equal weight. Tracklets of different lengths are weighted by their frame counts.

**Test time** (evaluation mode, ``test_frames``): each tracklet of the batch is embedded from
``seq_len`` evenly spaced frames (``evenly``, default; MITML's test loader) or from all its frames in
consecutive chunks of ``seq_len`` (the last chunk ends at the last frame), the chunks' embeddings
averaged (``all``), or from the MITML reference's ``seq_len`` frames (``mitml``: the first frame of each
``ceil(n/T)`` chunk, the tail padded with the last frame); with ``evenly`` / ``all`` a tracklet shorter than
``seq_len`` is used whole. The tracklet's embedding is
returned for every frame of it, so feature extraction, flip averaging, the protocols and exports keep one
row per frame; the tracklet protocols (:mod:`vireid.evaluation.tracklets`) keep one row per tracklet.

**Still images.** A frame whose id is ``-1``, and every frame of a call without ``tracklets`` (the
:class:`~vireid.inference.embedder.Embedder` of single images, ONNX export), is a tracklet of one frame:
the model then embeds single images, so a temporal model also serves image queries. A config that
trains ``temporal`` without ``data.extras.tracklets`` is refused before any data is read
(``required_extras``, :func:`vireid.data.extras.check_method_extras`).

**Repeated tracklets.** A training batch whose identity lacks enough tracklets holds one tracklet twice in a
row, a run of ``2T`` equal ids; when every run is a multiple of the batch's clip length ``T`` such runs are
split into clips of ``T`` (:func:`split_repeated_clips`).

**Lengths.** The ``conv2plus1d`` head normalises its 3D convolutions over clips of one length: a
training batch whose tracklets differ in length is refused with one sentence (the tracklet sampler gives
every tracklet ``sampler`` T frames); at test time frames are chosen per tracklet as above and tracklets of
each length are run together. The other heads take any lengths.
"""

from __future__ import annotations

from typing import Any

import torch

from vireid.errors import ConfigError, VireidError
from vireid.modeling.methods.baseline import BaselineReID
from vireid.modeling.modules.temporal import TEMPORAL_HEADS, build_temporal_head, by_length, tracklet_segments
from vireid.modeling.registries import METHODS

#: ``model.params.test_frames``: how a tracklet's frames are chosen at test time.
TEST_FRAMES = ("evenly", "all", "mitml")


def evenly_spaced(length: int, count: int) -> torch.Tensor:
    """``count`` evenly spaced frame indices of a tracklet of ``length`` frames (all of them when shorter): the
    tracklet split into ``count`` equal chunks (chunk ``s`` = frames ``[s*n//T, (s+1)*n//T)``), the middle frame
    of each -- the ``evenly`` frame choice of the tracklet sampler (:mod:`vireid.data.tracklets`)."""
    if length <= count:
        return torch.arange(length)
    s = torch.arange(count)
    lo = (s * length) // count
    hi = torch.maximum(lo + 1, ((s + 1) * length) // count)
    return (lo + hi - 1) // 2


def frames_used(length: int, seq_len: int, mode: str) -> list[int]:
    """The distinct frames (ascending) of a ``length``-frame tracklet that test time uses: embedding only these
    gives the same embedding, since a tracklet reduced to them yields the same clips (the repeats of ``mitml``
    are its last frames)."""
    if mode == "all":
        return list(range(length))
    return sorted({int(i) for clip in clip_frames(length, seq_len, mode) for i in clip})


def clip_frames(length: int, seq_len: int, mode: str) -> list[torch.Tensor]:
    """The frame indices (within a tracklet of ``length``) of each clip embedded at test time. ``mitml``: the MITML
    reference's test frames (``data_loader.py`` ``VideoDataset_test``, ``video_test``): frame ``min(s*ceil(n/T), n-1)``
    for ``s = 0..T-1``, the first frame of each ``ceil(n/T)`` chunk, the tail padded with the last frame."""
    if mode == "mitml":
        step = -(-length // seq_len)
        return [torch.clamp(torch.arange(seq_len) * step, max=length - 1)]
    if mode == "evenly" or length <= seq_len:
        return [evenly_spaced(length, seq_len)]
    starts = list(range(0, length - seq_len + 1, seq_len))
    if starts[-1] + seq_len < length:
        starts.append(length - seq_len)  # the last chunk ends at the last frame
    return [torch.arange(s, s + seq_len) for s in starts]


def split_repeated_clips(lengths: torch.Tensor) -> torch.Tensor:
    """Clip lengths of a training batch with a tracklet drawn twice in a row split apart.

    The tracklet sampler gives every clip of a batch the same ``T`` frames; an identity with fewer tracklets
    of a modality than the sampler asks for gets one tracklet twice, next to itself, which shows as one run
    of ``k*T`` equal ids. When every run is a multiple of the most common length ``T``, runs of ``k*T``
    frames are split into ``k`` clips of ``T``; otherwise the lengths are returned as they are.
    """
    if len(lengths) < 2:
        return lengths
    clip = int(torch.mode(lengths).values)
    if clip < 1 or bool((lengths % clip != 0).any()) or bool((lengths == clip).all()):
        return lengths
    return torch.repeat_interleave(torch.full_like(lengths, clip), lengths // clip)


@METHODS.register("temporal")
class TemporalReID(BaselineReID):
    """Tracklets: the baseline's backbone with a temporal head (avg, gru, lstm, attention, conv2plus1d) over each tracklet's frames.

    See the module docstring.

    Args (the others of :class:`BaselineReID` pass through: backbone, pooling, neck, ...):
        temporal: ``avg``, ``gru``, ``lstm``, ``attention`` or ``conv2plus1d``.
        seq_len: frames per clip at test time (MITML: 6).
        test_frames: ``evenly`` (``seq_len`` evenly spaced frames per tracklet), ``all`` (every frame,
            in chunks of ``seq_len``, the chunks' embeddings averaged) or ``mitml`` (the MITML reference's test
            frames, :func:`clip_frames`).
        temporal_reduction: channel reduction of the attention score network and the (2+1)D block.
    """

    extra_inputs = ("tracklets",)
    required_extras = ("tracklets",)

    def __init__(self, num_classes: int, temporal: str = "avg", seq_len: int = 6, test_frames: str = "evenly",
                 temporal_reduction: int = 4, non_local: Any = None, **baseline_params: Any) -> None:
        if temporal not in TEMPORAL_HEADS:
            raise ConfigError(f"config key 'model.params.temporal' is {temporal!r}; choose one of "
                              f"{', '.join(TEMPORAL_HEADS)}")
        if test_frames not in TEST_FRAMES:
            raise ConfigError(f"config key 'model.params.test_frames' is {test_frames!r}; choose evenly (seq_len evenly "
                              "spaced frames), all (every frame, in chunks of seq_len) or mitml (the MITML reference's "
                              "test frames)")
        if int(seq_len) < 1:
            raise ConfigError(f"config key 'model.params.seq_len' is {seq_len}; give the number of frames per clip (>= 1)")
        super().__init__(num_classes, non_local=non_local, **baseline_params)
        self.temporal_name = temporal
        self.seq_len = int(seq_len)
        self.test_frames = test_frames
        self.temporal = build_temporal_head(temporal, self.embed_dim, pool=self.pool, reduction=int(temporal_reduction))

    @classmethod
    def frames_to_embed(cls, records: list, params: dict) -> list:
        """The frames of an evaluation pool this model's test-time frame choice uses (``params``: its
        ``model.params``): with ``test_frames: evenly`` the ``seq_len`` evenly spaced frames of each tracklet
        (:func:`evenly_spaced`), so the other frames are never decoded; with ``all`` every frame. Each
        tracklet's frames stay together in temporal order; still images are kept. The embeddings equal those
        of the whole pool (the model picks the same frames from a tracklet already reduced to them)."""
        mode = params.get("test_frames", "evenly")
        if mode == "all":
            return list(records)
        seq_len = int(params.get("seq_len", 6))
        groups: dict[int, list[int]] = {}
        order: list[tuple[str, int]] = []
        for i, record in enumerate(records):
            tid = int(getattr(record, "tracklet", -1))
            if tid < 0:
                order.append(("still", i))
            else:
                if tid not in groups:
                    order.append(("tracklet", tid))
                groups.setdefault(tid, []).append(i)
        out = []
        for kind, key in order:
            if kind == "still":
                out.append(records[key])
            else:
                members = groups[key]
                out.extend(records[members[int(p)]] for p in frames_used(len(members), seq_len, mode))
        return out

    # ------------------------------------------------------------------ grouping
    def _aggregate(self, maps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Frame maps ``[N, C, h, w]`` of consecutive tracklets of ``lengths`` -> tracklet features ``[G, C]``."""
        frames = maps if self.temporal.on_maps else self.pool(maps)
        if bool((lengths == 1).all()):  # still images: every frame a tracklet of one (no Python loop: exportable)
            return self.temporal(frames.unsqueeze(1))
        starts = torch.cumsum(lengths, 0) - lengths
        out = frames.new_zeros(len(lengths), self.embed_dim)
        for length, members in by_length(lengths):
            rows = (starts[members].unsqueeze(1) + torch.arange(length)).reshape(-1).to(frames.device)
            clips = frames.index_select(0, rows).reshape(len(members), length, *frames.shape[1:])
            out = out.index_copy(0, members.to(frames.device), self.temporal(clips).to(out.dtype))
        return out

    def _check_lengths(self, lengths: torch.Tensor) -> None:
        if self.temporal.needs_equal_length and len(lengths) and int(lengths.min()) != int(lengths.max()):
            raise VireidError(
                f"the {self.temporal_name} temporal head needs every tracklet of a training batch to have the same "
                f"number of frames, but this batch has tracklets of {int(lengths.min())} to {int(lengths.max())} "
                "frames; train with the tracklet sampler (a fixed number of frames per tracklet) or choose "
                "temporal: avg, gru, lstm or attention")

    # ------------------------------------------------------------------ forward
    def forward(self, images: torch.Tensor, modalities: torch.Tensor | int,
                tracklets: torch.Tensor | None = None) -> dict[str, torch.Tensor] | torch.Tensor:
        """Training: ``features`` / ``bn_features`` / ``logits`` of each frame's tracklet, one row per frame;
        evaluation: the tracklet embedding ``[N, C]`` of each frame (see the module docstring)."""
        if tracklets is None:  # every image a tracklet of one frame, without data-dependent steps (ONNX export)
            maps = self.forward_features(images, modalities)
            features = self.temporal((maps if self.temporal.on_maps else self.pool(maps)).unsqueeze(1))
            bn_features = self.neck(features)
            outputs = {"features": features, "bn_features": bn_features, "logits": self.classifier(bn_features)}
            return outputs if self.training else self.select_embedding(outputs)
        count = images.shape[0]
        segment, starts, lengths = tracklet_segments(tracklets, count)
        if self.training:
            lengths = split_repeated_clips(lengths)
            segment = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
            self._check_lengths(lengths)
            outputs = self.forward_head_tracklets(images, modalities, lengths)
            if len(lengths) == count:  # every frame its own tracklet
                return outputs
            rows = segment.to(images.device)
            return {key: value.index_select(0, rows) for key, value in outputs.items()}
        if bool((lengths == 1).all()):
            return self.select_embedding(self.forward_head_tracklets(images, modalities, lengths))
        # test time: the clips of each tracklet (test_frames), their embeddings averaged per tracklet
        picks, owner = [], []
        for g, (start, length) in enumerate(zip(starts.tolist(), lengths.tolist())):
            for chunk in clip_frames(length, self.seq_len, self.test_frames):
                picks.append(chunk + start)
                owner.append(g)
        clip_lengths = torch.tensor([len(p) for p in picks])
        frames = torch.cat(picks).to(images.device)
        mods = modalities if not isinstance(modalities, torch.Tensor) or modalities.dim() == 0 else modalities.index_select(0, frames)
        clip_embeddings = self.select_embedding(self.forward_head_tracklets(images.index_select(0, frames), mods, clip_lengths))
        owner_t = torch.tensor(owner, device=images.device)
        sums = clip_embeddings.new_zeros(len(lengths), clip_embeddings.shape[1]).index_add(0, owner_t, clip_embeddings)
        counts = torch.bincount(owner_t, minlength=len(lengths)).to(sums.dtype).unsqueeze(1)
        return (sums / counts).index_select(0, segment.to(images.device))

    def forward_head_tracklets(self, images: torch.Tensor, modalities: torch.Tensor | int,
                               lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        """Frames of consecutive clips of ``lengths`` -> per clip ``features``, ``bn_features``, ``logits``."""
        features = self._aggregate(self.forward_features(images, modalities), lengths)
        bn_features = self.neck(features)
        return {"features": features, "bn_features": bn_features, "logits": self.classifier(bn_features)}


__all__ = ["TEST_FRAMES", "TemporalReID", "clip_frames", "evenly_spaced", "frames_used", "split_repeated_clips"]
