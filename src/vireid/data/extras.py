"""Named side inputs ("extras"): per-record values that travel with an image to the model.

Some methods need more than pixels and a modality: PDFENet reads body joints (§3.2), a tracklet
model would read a frame index, others a foreground mask, a depth map, text tokens or attribute
labels. Each is a *kind* registered in :data:`EXTRAS` by the name the model receives it under
(``model(images, modalities, **{name: value})``). A kind says

* how the values of a list of records are produced (:meth:`ExtraKind.load`, one tensor whose first axis
  is the record, in the frame of the cached images, ``data.height`` x ``data.width``);
* how they are checked (:meth:`ExtraKind.check`) and gathered into a batch (:meth:`ExtraKind.collate`);
* how geometric steps change them: pad + crop + mirror (:meth:`ExtraKind.shift_flip`, with the
  conventions of :mod:`vireid.data.geometry`) and resizing (:meth:`ExtraKind.resize`).

The base class is geometry-free (a frame index or an attribute label does not move when the image is
mirrored); :class:`PixelMapExtra` is transformed exactly like the image (masks, depth); :class:`JointsExtra`
(``joints``) moves pixel coordinates and swaps MPII left/right joints on a mirror.

A config asks for extras in ``data.extras`` (``{name: source}``: a string, or a dict of the kind's
constructor parameters); ``data.joints`` stays the short form of ``data.extras.joints``. Everything
between the reader and the model (:class:`~vireid.data.loader.TrainLoader`,
:class:`~vireid.data.loader.EvalLoader`, :class:`~vireid.data.transforms.BatchContext`, feature extraction,
calibration, evaluation, visualisation) handles a ``dict`` of extras through the functions below and
never names a kind. A value under a name that is not registered passes through unchanged by geometry.

A method declares the extras it reads in the class attribute ``extra_inputs`` (PDFENet:
``("joints",)``); :func:`check_method_extras` rejects a configured extra the method cannot take. A method
may also check the values of a whole pool once with a ``check_extras(extras)`` method
(:func:`check_model_extras`; the ViT checks its camera numbers there rather than in every ``forward``).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from vireid.data.geometry import move_joints, scale_points, shift_and_flip
from vireid.errors import ConfigError
from vireid.registry import Registry

EXTRAS: Registry = Registry("side input (extra)")

Extras = dict[str, torch.Tensor]


class ExtraKind:
    """A per-record side input that geometric steps leave alone (e.g. a frame index, attribute labels).

    Subclasses override :meth:`load` (and the geometry methods when the value lives in pixel space).
    ``source`` is what the config gives under ``data.extras.<name>`` when it is not a dict (a dict is
    passed as keyword parameters instead). Geometry methods are class methods: they need no config.
    """

    name = ""

    def __init__(self, source: Any = None) -> None:
        self.source = source

    def load(self, records: Sequence[Any], data_cfg: Any) -> torch.Tensor:
        """Values ``[N, ...]`` of ``records`` (first axis = record), in the cached images' pixel frame."""
        raise NotImplementedError(f"side input {self.name or type(self).__name__} does not say how to load its values")

    @classmethod
    def check(cls, name: str, value: Any, length: int) -> torch.Tensor:
        """``value`` as a CPU tensor with one row per image; ConfigError otherwise."""
        tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
        if tensor.dim() == 0 or tensor.shape[0] != length:
            raise ConfigError(f"loader got side input {name!r} of shape {tuple(tensor.shape)} for {length} images; "
                              "give one row per image")
        return tensor.cpu()

    @classmethod
    def collate(cls, value: torch.Tensor, rows: torch.Tensor | slice) -> torch.Tensor:
        """The batch of ``rows`` (indices or a slice into the per-record values)."""
        return value[rows]

    @classmethod
    def shift_flip(cls, value: torch.Tensor, shift: torch.Tensor, flipped: torch.Tensor, width: int,
                   height: int) -> torch.Tensor:
        """``value`` of a batch after pad + crop (``shift`` [B, 2] of (dy, dx)) + mirror (``flipped`` [B])."""
        return value

    @classmethod
    def resize(cls, value: torch.Tensor, size_from: tuple[int, int], size_to: tuple[int, int]) -> torch.Tensor:
        """``value`` of images of ``size_from`` (H, W) after resizing them to ``size_to``."""
        return value

    @classmethod
    def source_for_other_data(cls, source: Any) -> Any:
        """The source to use when a run is evaluated on another dataset (default: the same one)."""
        return source


class PixelMapExtra(ExtraKind):
    """A map aligned with the image pixels (``[N, H, W]`` or ``[N, C, H, W]``: a mask, a depth map),
    transformed exactly like the image: zero where the crop leaves the image, columns mirrored."""

    @classmethod
    def shift_flip(cls, value: torch.Tensor, shift: torch.Tensor, flipped: torch.Tensor, width: int,
                   height: int) -> torch.Tensor:
        planar = value.dim() == 3
        maps = value.unsqueeze(1) if planar else value
        pad = int(shift.abs().max()) if shift.numel() else 0  # 0: no shift, nothing leaves the image
        out = shift_and_flip(maps, shift, flipped, pad)
        return out.squeeze(1) if planar else out

    @classmethod
    def resize(cls, value: torch.Tensor, size_from: tuple[int, int], size_to: tuple[int, int]) -> torch.Tensor:
        planar = value.dim() == 3
        maps = value.unsqueeze(1) if planar else value
        out = torch.nn.functional.interpolate(maps.float(), size=tuple(size_to), mode="nearest").to(value.dtype)
        return out.squeeze(1) if planar else out


@EXTRAS.register("joints")
class JointsExtra(ExtraKind):
    """Body joints ``[N, 16, 3]`` = (x, y, visible) in MPII order for pose-guided methods (PDFENet §3.2).

    ``source`` is ``data.joints``: ``synthetic``, ``auto`` or a pose-cache file (:mod:`vireid.data.pose`).
    Pad/crop shift the coordinates, a mirror maps ``x -> W - 1 - x`` and swaps left/right joints, joints
    that leave the image become invisible (:func:`~vireid.data.geometry.move_joints`); a resize scales them.
    """

    name = "joints"

    def load(self, records: Sequence[Any], data_cfg: Any) -> torch.Tensor:
        from types import SimpleNamespace

        from vireid.data.pose import load_record_joints

        if getattr(data_cfg, "joints", None) != self.source:  # given under data.extras.joints
            data_cfg = SimpleNamespace(**{**vars(data_cfg), "joints": self.source})
        return load_record_joints(records, data_cfg)

    @classmethod
    def check(cls, name: str, value: Any, length: int) -> torch.Tensor:
        tensor = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value).float().cpu()
        if tensor.dim() != 3 or tensor.shape[0] != length or tensor.shape[2] != 3:
            raise ConfigError(f"loader got {name} of shape {tuple(tensor.shape)} for {length} images; "
                              "expected [N, J, 3] (x, y, visible)")
        return tensor

    @classmethod
    def shift_flip(cls, value: torch.Tensor, shift: torch.Tensor, flipped: torch.Tensor, width: int,
                   height: int) -> torch.Tensor:
        return move_joints(value, shift, flipped, width, height)

    @classmethod
    def resize(cls, value: torch.Tensor, size_from: tuple[int, int], size_to: tuple[int, int]) -> torch.Tensor:
        return scale_points(value, size_from, size_to)

    @classmethod
    def source_for_other_data(cls, source: Any) -> Any:
        """``auto``: a pose-cache file of the run's own data does not hold the other dataset's images."""
        return source if source in (None, "auto") else "auto"


@EXTRAS.register("cameras")
class CameraExtra(ExtraKind):
    """The camera number of each image ``[N]`` (int64): its record's ``camid`` as the reader gives it (SYSU-MM01
    1-6, RegDB 1-2, ...), for camera side-information embeddings (TransReID's camera SIE: ``model.method: vit``
    with ``sie_cameras`` > the largest camera number). Geometry leaves it alone. The only ``source`` is
    ``dataset`` (``data.extras: {cameras: dataset}``)."""

    name = "cameras"

    def __init__(self, source: Any = "dataset") -> None:
        if source not in (None, "dataset"):
            raise ConfigError(f"config key 'data.extras.cameras' is {source!r}; the camera numbers come from the "
                              "dataset's records, so write cameras: dataset")
        super().__init__("dataset")

    def load(self, records: Sequence[Any], data_cfg: Any) -> torch.Tensor:
        return torch.tensor([int(r.camid) for r in records], dtype=torch.int64)


@EXTRAS.register("tracklets")
class TrackletExtra(ExtraKind):
    """The tracklet id of each frame ``[N]`` (int64): its record's ``tracklet`` (``-1`` for a still image), for
    temporal models. A batch holds each tracklet's frames next to each other, in temporal order, so a model
    groups consecutive equal ids into one sequence. Geometry leaves it alone. The only ``source`` is ``dataset``
    (``data.extras: {tracklets: dataset}``)."""

    name = "tracklets"

    def __init__(self, source: Any = "dataset") -> None:
        if source not in (None, "dataset"):
            raise ConfigError(f"config key 'data.extras.tracklets' is {source!r}; the tracklet ids come from the "
                              "dataset's records, so write tracklets: dataset")
        super().__init__("dataset")

    def load(self, records: Sequence[Any], data_cfg: Any) -> torch.Tensor:
        return torch.tensor([int(getattr(r, "tracklet", -1)) for r in records], dtype=torch.int64)


def extra_kind(name: str) -> type[ExtraKind]:
    """The registered kind of ``name``; the geometry-free :class:`ExtraKind` for an unregistered name."""
    return EXTRAS.get(name) if name in EXTRAS else ExtraKind


def configured_extras(data_cfg: Any) -> dict[str, Any]:
    """``{name: source}`` of the extras ``data_cfg`` asks for (``data.extras`` plus ``data.joints``)."""
    wanted = dict(getattr(data_cfg, "extras", None) or {})
    joints = getattr(data_cfg, "joints", None)
    if joints and "joints" not in wanted:
        wanted = {"joints": joints, **wanted}
    return {name: source for name, source in wanted.items() if source not in (None, False, "")}


def build_extra_kind(name: str, source: Any) -> ExtraKind:
    """The kind registered as ``name``, built from its config entry (a dict: keyword parameters)."""
    if name not in EXTRAS:
        known = ", ".join(EXTRAS.names()) or "none"
        raise ConfigError(f"config key 'data.extras.{name}' names no registered side input (registered: {known}); "
                          "register its kind in vireid.data.extras.EXTRAS (e.g. in a plugin) or remove the key")
    cls = EXTRAS.get(name)
    try:
        return cls(**source) if isinstance(source, Mapping) else cls(source)
    except TypeError as error:
        params = ", ".join(list(inspect.signature(cls).parameters)) or "none"
        raise ConfigError(f"config key 'data.extras.{name}' has parameters {cls.__name__} does not take ({error}); "
                          f"it takes: {params}") from None


def load_extras(records: Sequence[Any], data_cfg: Any) -> Extras:
    """``{name: values [N, ...]}`` of every extra ``data_cfg`` configures, for ``records`` ({} when none)."""
    out: Extras = {}
    for name, source in configured_extras(data_cfg).items():
        kind = build_extra_kind(name, source)
        out[name] = type(kind).check(name, kind.load(records, data_cfg), len(records))
    return out


def retarget_extras(data_cfg: Any) -> None:
    """Point every configured source of ``data_cfg`` at its dataset after ``data.root`` changed (in place):
    each kind's :meth:`ExtraKind.source_for_other_data`."""
    joints = getattr(data_cfg, "joints", None)
    if joints is not None:
        data_cfg.joints = extra_kind("joints").source_for_other_data(joints)
    extras = getattr(data_cfg, "extras", None)
    if extras:
        data_cfg.extras = {name: extra_kind(name).source_for_other_data(source) for name, source in extras.items()}


def check_configured_extras(data_cfg: Any, method: Any, method_name: str = "") -> None:
    """ConfigError when ``data_cfg`` names an unregistered side input, gives one bad parameters, gives
    ``method`` one it does not read, or lacks one the method cannot work without (its ``required_extras``;
    nothing is loaded)."""
    wanted = configured_extras(data_cfg)
    for name, source in wanted.items():
        build_extra_kind(name, source)
    check_method_extras(method, list(wanted), method_name)
    # a method that cannot work without a side input names it in ``required_extras`` (temporal: tracklets)
    missing = [name for name in getattr(method, "required_extras", ()) or () if name not in wanted]
    if missing:
        label = method_name or getattr(method, "__name__", "the method")
        raise ConfigError(f"{label} reads the side input {missing[0]!r}, which the config does not give; add "
                          f"data.extras: {{{missing[0]}: dataset}} to the config")


def check_extras(extras: Mapping[str, Any] | None, length: int) -> Extras:
    """Every value of ``extras`` checked by its kind as a CPU tensor of ``length`` rows."""
    return {name: extra_kind(name).check(name, value, length) for name, value in (extras or {}).items()}


def check_model_extras(model: Any, extras: Mapping[str, Any] | None) -> None:
    """Let ``model`` check a whole pool's side inputs once, before its batches run: its ``check_extras(extras)``
    method when it has one (a DDP wrapper's ``module`` is asked), e.g. the ViT's camera numbers against its camera
    embedding. Checks that read values back (``.max()``) belong here, not in ``forward``, where they would
    synchronise an accelerator on every batch. The trainer calls it for the training loader and feature
    extraction for every pool it embeds."""
    if not extras:
        return
    target = getattr(model, "module", model)
    hook = getattr(target, "check_extras", None)
    if callable(hook):
        hook(extras)


def select_extras(extras: Mapping[str, torch.Tensor], rows: torch.Tensor | slice) -> Extras:
    """The rows ``rows`` of every extra (a batch, a subset of a pool)."""
    if isinstance(rows, np.ndarray):
        rows = torch.as_tensor(rows, dtype=torch.int64)
    return {name: extra_kind(name).collate(value, rows) for name, value in extras.items()}


def extras_to(extras: Mapping[str, torch.Tensor], device: torch.device | str, non_blocking: bool = False) -> Extras:
    """Every extra on ``device``."""
    return {name: value.to(device, non_blocking=non_blocking) for name, value in extras.items()}


def shift_flip_extras(extras: Mapping[str, torch.Tensor], shift: torch.Tensor, flipped: torch.Tensor, width: int,
                      height: int) -> Extras:
    """Every extra after a pad + crop + mirror of its images (:meth:`ExtraKind.shift_flip`)."""
    return {name: extra_kind(name).shift_flip(value, shift, flipped, width, height) for name, value in extras.items()}


def mirror_extras(extras: Mapping[str, torch.Tensor], width: int, height: int) -> Extras:
    """Every extra of a batch whose images are all mirrored (test-time flip averaging)."""
    if not extras:
        return {}
    n = next(iter(extras.values())).shape[0]
    return shift_flip_extras(extras, torch.zeros(n, 2, dtype=torch.int64), torch.ones(n, dtype=torch.bool), width, height)


def resize_extras(extras: Mapping[str, torch.Tensor], size_from: tuple[int, int], size_to: tuple[int, int]) -> Extras:
    """Every extra after resizing its images from ``size_from`` to ``size_to`` (H, W)."""
    return {name: extra_kind(name).resize(value, size_from, size_to) for name, value in extras.items()}


def check_method_extras(method: Any, names: Sequence[str], method_name: str = "") -> None:
    """ConfigError when the config gives ``method`` an extra it cannot take.

    A method takes the names in its ``extra_inputs`` attribute, the keyword parameters of its
    ``forward``, and anything when ``forward`` has ``**kwargs``.
    """
    if not names:
        return
    forward = getattr(method, "forward", None)
    accepted = set(getattr(method, "extra_inputs", ()) or ())
    if forward is not None:
        parameters = inspect.signature(forward).parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            return
        accepted |= {p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)} - {"self", "images", "modalities"}
    unused = [name for name in names if name not in accepted]
    if unused:
        label = method_name or getattr(method, "__name__", "the method")
        takes = ", ".join(sorted(getattr(method, "extra_inputs", ()) or ())) or "none"
        key = "data.joints" if unused[0] == "joints" else f"data.extras.{unused[0]}"
        raise ConfigError(f"config key '{key}' gives {label} the side input {unused[0]!r}, which it does not read "
                          f"(its extra_inputs: {takes}); remove the key or choose a method that reads it")


__all__ = [
    "EXTRAS",
    "ExtraKind",
    "Extras",
    "JointsExtra",
    "PixelMapExtra",
    "TrackletExtra",
    "build_extra_kind",
    "check_configured_extras",
    "check_extras",
    "check_method_extras",
    "check_model_extras",
    "configured_extras",
    "extra_kind",
    "extras_to",
    "load_extras",
    "mirror_extras",
    "resize_extras",
    "retarget_extras",
    "select_extras",
    "shift_flip_extras",
]
