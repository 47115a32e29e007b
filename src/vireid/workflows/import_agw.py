"""Import a checkpoint saved by the AGW / CAJ reference code into a vireid run folder.

The reference code is mangye16/Cross-Modal-Re-ID-baseline: ``train.py`` (AGW) and
``ICCV21_CAJ/train_ext.py`` (CAJ) both build ``embed_net`` of their ``model.py`` (the two files are
identical, as are the two ``resnet.py``) and save ``{'net': net.state_dict(), 'cmc': ndarray,
'mAP': float, 'mINP': float, 'epoch': int}`` with ``torch.save`` (``'net'`` carries a ``module.``
prefix when the net was wrapped in ``nn.DataParallel``). Facts this module relies on, all from
that ``model.py`` / ``resnet.py``:

* ``visible_module.visible``, ``thermal_module.thermal`` and ``base_resnet.base`` are three whole
  ResNet-50s (``resnet.py``: conv1, bn1, layer1..4, no ``fc``; last stride 1, the stride on the
  3x3 ``conv2`` of a bottleneck, as in torchvision and timm). The forward uses only the stem
  (``conv1``/``bn1``/ReLU/max-pool) of the two modality copies and only ``layer1..layer4`` of
  ``base_resnet.base`` -- the rest of their weights is saved but never used
  (:func:`unused_by_reference`).
* ``embed_net.forward(x1, x2, modal)``: ``modal=1`` runs the visible stem, ``modal=2`` the thermal
  one (vireid's modality codes 0 and 1).
* Non-local blocks: ``NL_1..NL_4`` (``nn.ModuleList`` of ``Non_local``, submodules ``g`` (a
  one-element ``nn.Sequential`` around a 1x1 conv), ``theta``, ``phi``, ``W`` = conv + BN),
  placed with ``layers=[3, 4, 6, 3]``, ``non_layers=[0, 2, 3, 0]``: ``NL_2[j]`` after block
  ``[2, 3][j]`` of layer2, ``NL_3[j]`` after block ``[3, 4, 5][j]`` of layer3. Each has one
  inner channel (``reduc_ratio // reduc_ratio``); vireid's ``non_local: agw`` is that block.
* ``gm_pool='on'``: ``(mean(x**3) + 1e-12) ** (1/3)`` (vireid ``pooling: gem_agw``);
  ``'off'``: average pooling. ``train.py --method base`` sets both non-local and GeM off,
  every other method both on, so a checkpoint without ``NL_*`` keys is read as average pooling.
* ``bottleneck`` = ``BatchNorm1d(2048)`` (the BNNeck, bias frozen), ``classifier`` =
  ``Linear(2048, class_num, bias=False)``; the class count is read from ``classifier.weight``.
* Evaluation mode returns ``(l2norm(x_pool), l2norm(bottleneck(x_pool)))``; ``test.py`` calls the
  first "POOL" and the second "FC" and reports FC. The imported run's embedding is FC
  (``bn_features``) unless ``embedding="features"`` (POOL) is asked for; vireid's
  :class:`~vireid.inference.embedder.Embedder` L2-normalises, as ``l2norm`` does.
* Test preprocessing (``TestData`` in ``data_loader.py``, ``transform_test`` in ``train.py``):
  Pillow resize to 144x288 with ``Image.ANTIALIAS`` (Lanczos), ``ToTensor``, ImageNet mean/std.
  The imported run's config sets ``data.resample: lanczos`` so vireid resizes the same way.

The checkpoint is read with ``torch.load(weights_only=True)``; only the numpy types that hold
``cmc`` / ``mAP`` are allowed besides tensors (:func:`load_reference_checkpoint`), so a file
holding pickled code is refused, never run. Every key of ``'net'`` is either mapped onto a
vireid parameter or buffer, or one of the documented unused copies; every vireid tensor except
the constant GeM exponent (3 in ``model.py``) is filled -- otherwise the import stops with one
sentence naming the keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vireid.errors import ConfigError, VireidError

REFERENCE_REPO = "mangye16/Cross-Modal-Re-ID-baseline"
#: ``layers`` of ``embed_net`` in the reference ``model.py`` (ResNet-50 blocks per layer).
RESNET50_LAYERS = (3, 4, 6, 3)
#: Known class counts of the reference's datasets -> the shipped config an import starts from.
CONFIG_BY_CLASSES = {395: "agw_sysu", 206: "agw_regdb"}
#: The embeddings the reference's ``test.py`` reports: FC (after the BN neck) and POOL (before it).
FEATURES = {"fc": "bn_features", "pool": "features"}
#: vireid model tensors the reference has no key for: GeM's exponent, a constant (p = 3.0) there.
CONSTANT_BUFFERS = ("pool.p",)

_STEM = re.compile(r"^(visible_module\.visible|thermal_module\.thermal)\.(conv1|bn1)\.(.+)$")
_UNUSED_STREAM = re.compile(r"^(visible_module\.visible|thermal_module\.thermal)\.(layer[1-4]|fc)\.")
_UNUSED_BASE = re.compile(r"^base_resnet\.base\.(conv1|bn1|fc)\.")
_LAYER = re.compile(r"^base_resnet\.base\.layer([1-4])\.(\d+)\.(.+)$")
_NON_LOCAL = re.compile(r"^NL_([1-4])\.(\d+)\.(.+)$")
_MAX_NAMED = 8


@dataclass
class ReferenceLayout:
    """What a reference state_dict says about the network that saved it."""

    num_classes: int
    non_local: bool
    inter_channels: int = 1  # the largest inner width of its non-local blocks (AGW's released code: 1)
    non_local_counts: dict[int, int] = field(default_factory=dict)  # layer (1..4) -> blocks
    inter_by_layer: dict[int, int] = field(default_factory=dict)  # layer (1..4) -> inner channels


def _name_keys(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_NAMED])
    more = f" and {len(keys) - _MAX_NAMED} more" if len(keys) > _MAX_NAMED else ""
    return f"{shown}{more}"


def _numpy_safe_globals() -> list[Any]:
    """The numpy callables a reference checkpoint's ``cmc`` array and ``mAP``/``mINP`` scalars need,
    under numpy 2's module names and numpy 1's (``numpy.core.multiarray``), which old files carry."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    multiarray = core.multiarray
    entries: list[Any] = [np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar]
    for name in ("numpy.core.multiarray", "numpy._core.multiarray"):
        entries.append((multiarray._reconstruct, f"{name}._reconstruct"))
        entries.append((multiarray.scalar, f"{name}.scalar"))
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:  # numpy >= 1.25 may pickle the dtype class itself
        entries += [getattr(dtypes, n) for n in ("Float64DType", "Float32DType", "Int64DType", "Int32DType")
                    if hasattr(dtypes, n)]
    return entries


def _unsafe_globals(file: Path) -> list[str]:
    """The Python globals a zip-format torch file would import, other than the allowed numpy ones
    (read from the pickle's opcodes, nothing is executed)."""
    allowed = {entry[1] if isinstance(entry, tuple) else f"{entry.__module__}.{entry.__qualname__}"
               for entry in _numpy_safe_globals()}
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(file)
    except Exception:  # noqa: BLE001 - legacy (non-zip) files: the unpickler's own message names one global
        return []
    return [name for name in found if name not in allowed and not name.startswith(("numpy.dtype", "numpy.ndarray"))]


def load_reference_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a reference checkpoint with ``torch.load(weights_only=True)`` (tensors + numpy arrays only).

    Returns the loaded dict; raises :class:`~vireid.errors.VireidError` with one sentence when the
    file is missing, holds pickled code or objects, or is not a ``{'net': state_dict, ...}`` dict.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise VireidError(f"checkpoint {file} does not exist; pass the .t/.pth file saved by AGW's or CAJ's train.py")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            loaded = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - every unpickling failure is a property of the user's file
        detail = str(err)
        found = re.search(r"(?:Unsupported global|GLOBAL) ?:? ?(?:GLOBAL )?([\w.]+)", detail)
        unsafe = _unsafe_globals(file)
        if found or unsafe:
            what = ", ".join(unsafe) or found.group(1)
            raise VireidError(
                f"checkpoint {file} holds pickled code or objects ({what}), not only tensors and numpy arrays; "
                "vireid loads checkpoints with weights_only=True and never unpickles code -- re-save it as "
                "{'net': state_dict} from the reference code"
            ) from None
        raise VireidError(f"checkpoint {file} cannot be read ({type(err).__name__}: {err}); it may be truncated or not a torch file") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("net"), dict):
        return loaded
    if isinstance(loaded, dict) and loaded and all(isinstance(v, torch.Tensor) for v in loaded.values()):
        return {"net": loaded}  # a bare state_dict (e.g. torch.save(net.state_dict(), path))
    keys = sorted(loaded)[:_MAX_NAMED] if isinstance(loaded, dict) else type(loaded).__name__
    raise VireidError(
        f"checkpoint {file} is not an AGW/CAJ checkpoint: expected a dict with a 'net' state_dict, found {keys}"
    )


def strip_module_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the ``module.`` prefix ``nn.DataParallel`` adds to every key (when all keys have it)."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def unused_by_reference(key: str) -> bool:
    """Keys the reference saves but its forward never reads: layer1..4 (and any fc) of the two
    modality ResNets, and the stem of the shared ResNet (``model.py``: only ``conv1``/``bn1`` of
    ``visible``/``thermal`` and only ``layer1..4`` of ``base`` are called)."""
    return bool(_UNUSED_STREAM.match(key) or _UNUSED_BASE.match(key))


def reference_layout(state: dict[str, torch.Tensor]) -> ReferenceLayout:
    """Class count, non-local blocks and their inner width, read from a reference state_dict."""
    weight = state.get("classifier.weight")
    if weight is None or weight.dim() != 2:
        raise VireidError(
            "the checkpoint's 'net' has no 2-D 'classifier.weight', so it is not an AGW/CAJ embed_net; "
            f"its first keys are {_name_keys(sorted(state))}"
        )
    counts: dict[int, int] = {}
    inter: dict[int, int] = {}
    for key, tensor in state.items():
        m = _NON_LOCAL.match(key)
        if m:
            layer, index = int(m.group(1)), int(m.group(2))
            counts[layer] = max(counts.get(layer, 0), index + 1)
            if m.group(3) == "g.0.weight":
                inter[layer] = int(tensor.shape[0])
    return ReferenceLayout(num_classes=int(weight.shape[0]), non_local=bool(counts),
                           inter_channels=max(inter.values(), default=1), non_local_counts=counts, inter_by_layer=inter)


def model_params(layout: ReferenceLayout, embedding: str = "fc") -> dict[str, Any]:
    """``model.params`` of the vireid :class:`~vireid.modeling.methods.baseline.BaselineReID` that
    computes exactly what the reference ``embed_net`` of ``layout`` computes."""
    if embedding not in FEATURES:
        raise ConfigError(f"embedding must be one of {', '.join(FEATURES)} (the reference's FC or POOL feature), got {embedding!r}")
    params: dict[str, Any] = {
        "backbone": "resnet50", "specific_stages": 1, "last_stride": 1, "pretrained": None,
        "neck": "bnneck", "gem_p": 3.0, "embedding": FEATURES[embedding],
    }
    if not layout.non_local:
        params.update(pooling="avg", non_local=None)
        return params
    params["pooling"] = "gem_agw"
    # placement: the last non_layers[k] blocks of layer k+1, as model.py's NL_k_idx
    placement = {f"stage{layer}": count for layer, count in sorted(layout.non_local_counts.items())}
    if placement == {"stage2": 2, "stage3": 3} and layout.inter_channels == 1:
        params["non_local"] = "agw"
    else:  # another placement or inner width (an edited model.py): the same block, explicitly
        params["non_local"] = placement
        params["non_local_reduction"] = _reduction_for(layout)
    return params


def _reduction_for(layout: ReferenceLayout) -> int:
    # input widths of the blocks after layer1..4; NonLocalBlock keeps max(C // r, 1) inner channels,
    # so r must give the saved inner width for every layer that has blocks
    widths = {1: 256, 2: 512, 3: 1024, 4: 2048}
    for r in range(1, 4097):
        if all(max(widths[layer] // r, 1) == layout.inter_by_layer.get(layer, layout.inter_channels)
               for layer in layout.non_local_counts):
            return r
    raise VireidError(
        f"the checkpoint's non-local blocks have {layout.inter_by_layer} inner channels (layer: channels), which no "
        "single channel reduction gives for all their layers; vireid cannot rebuild that network"
    )


def map_reference_state(state: dict[str, torch.Tensor], model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Reference ``embed_net`` keys -> the keys of a vireid ``BaselineReID`` built by :func:`model_params`.

    Returns ``(vireid state_dict, reference keys dropped as unused by the reference's forward)``.
    Raises one sentence naming the keys when a reference key has no place, a vireid tensor gets no
    value, or a shape differs.
    """
    positions = {stage: sorted(blocks) for stage, blocks in getattr(model, "non_local_positions", {}).items()}
    own = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    unmapped: list[str] = []
    for key, tensor in state.items():
        target = None
        if m := _STEM.match(key):
            branch = 0 if m.group(1).startswith("visible") else 1
            target = f"backbone.modality_branches.{branch}.0.{m.group(2)}.{m.group(3)}"
        elif m := _LAYER.match(key):
            target = f"backbone.shared_stages.{int(m.group(1)) - 1}.{m.group(2)}.{m.group(3)}"
        elif m := _NON_LOCAL.match(key):
            layer, index, rest = int(m.group(1)), int(m.group(2)), m.group(3)
            blocks = positions.get(layer, [])
            if index < len(blocks):
                rest = re.sub(r"^g\.0\.", "g.", rest)
                target = f"backbone.shared_stages.{layer - 1}.non_local_after_{blocks[index]}.{rest}"
        elif key.startswith("bottleneck."):
            target = "neck.bn." + key[len("bottleneck."):]
        elif key == "classifier.weight":
            target = "classifier.fc.weight"
        elif unused_by_reference(key):
            unused.append(key)
            continue
        if target is None or target not in own:
            unmapped.append(key)
        else:
            mapped[target] = tensor
    missing = sorted(k for k in own if k not in mapped and k not in CONSTANT_BUFFERS)
    if unmapped or missing:
        parts = []
        if unmapped:
            parts.append(f"{len(unmapped)} checkpoint key(s) have no place in it ({_name_keys(sorted(unmapped))})")
        if missing:
            parts.append(f"{len(missing)} of its tensors get no value ({_name_keys(missing)})")
        raise VireidError(
            f"the checkpoint does not fit the AGW/CAJ network vireid rebuilds: {'; '.join(parts)}; import only "
            f"checkpoints saved by {REFERENCE_REPO}'s train.py or ICCV21_CAJ/train_ext.py (embed_net, resnet50)"
        )
    bad = [k for k in mapped if tuple(mapped[k].shape) != tuple(own[k].shape)]
    if bad:
        k = bad[0]
        raise VireidError(
            f"checkpoint tensor for {k} has shape {tuple(mapped[k].shape)} but the rebuilt network expects "
            f"{tuple(own[k].shape)} ({len(bad)} such key(s): {_name_keys(bad)}); the checkpoint is of another architecture"
        )
    for name in CONSTANT_BUFFERS:
        if name in own:
            mapped[name] = own[name]
    return {k: v.detach().clone() for k, v in mapped.items()}, unused


def default_config_name(num_classes: int) -> str:
    """The shipped config an import starts from: by the class count (395 SYSU-MM01, 206 RegDB)."""
    if num_classes not in CONFIG_BY_CLASSES:
        known = ", ".join(f"{n} ({c})" for n, c in CONFIG_BY_CLASSES.items())
        raise VireidError(
            f"the checkpoint's classifier has {num_classes} classes, which matches no known dataset ({known}); "
            "pass --config with the config (dataset) the model was trained for"
        )
    return CONFIG_BY_CLASSES[num_classes]


def _scalar(value: Any) -> float | None:
    if value is None:
        return None
    try:
        import numpy as np

        arr = np.asarray(value, dtype=np.float64).reshape(-1)
        return float(arr[0]) if arr.size else None
    except (TypeError, ValueError):
        return None


def import_reference_checkpoint(checkpoint: str | Path, out: str | Path, *, config: str | Path | None = None,
                                embedding: str = "fc", overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """Write a vireid run folder (``config.yaml`` + ``best.pt``) for an AGW/CAJ reference checkpoint.

    ``config``: a config file or shipped config name the run's data/eval settings come from (default
    by the class count, :func:`default_config_name`); its model section is replaced by the network
    of the checkpoint. ``embedding``: ``"fc"`` (default) or ``"pool"``. Returns a summary dict.
    """
    from vireid.config import SHIPPED_CONFIGS, find_yaml, save_config, shipped_names
    from vireid.plugins import user_config
    from vireid.engine.checkpoint import atomic_torch_save
    from vireid.engine.trainer import build_model, validate_config

    out = Path(out).expanduser()
    if out.exists() and any((out / name).exists() for name in ("best.pt", "last.pt")):
        raise VireidError(f"{out} already holds a run (best.pt/last.pt); choose another --out folder or remove it")
    if embedding not in FEATURES:
        raise VireidError(f"--embedding must be fc or pool (the reference's FC or POOL feature), got {embedding!r}")
    raw = load_reference_checkpoint(checkpoint)
    state = strip_module_prefix(raw["net"])
    layout = reference_layout(state)
    name = str(config) if config is not None else default_config_name(layout.num_classes)
    config_path = find_yaml(name, SHIPPED_CONFIGS)
    if config_path is None:
        raise VireidError(f"config {name!r} is neither a file nor a shipped config; shipped configs: {shipped_names(SHIPPED_CONFIGS)}")
    cfg = user_config(config_path, list(overrides))
    cfg.name = out.name
    cfg.published = {}  # the imported network is not the recipe whose published numbers the config states
    cfg.model.method = "baseline"
    cfg.model.params = model_params(layout, embedding)
    cfg.data.height, cfg.data.width = 288, 144  # --img_h / --img_w of train.py / train_ext.py
    cfg.data.resample = "lanczos"  # TestData: Image.ANTIALIAS
    if not any(str(o).split("=", 1)[0].strip() == "train.amp" for o in overrides):
        # the reference evaluates in fp32: keep extract/eval/serve of the import in fp32 on every machine
        # (train.amp=auto would pick bf16 on CPUs with bf16 units and break embedding parity)
        cfg.train.amp = "none"
    validate_config(cfg)
    model = build_model(cfg, layout.num_classes)
    mapped, unused = map_reference_state(state, model)
    model.load_state_dict(mapped, strict=True)
    epoch = raw.get("epoch")
    source = {
        "code": REFERENCE_REPO,
        "file": str(Path(checkpoint).expanduser().resolve()),
        "epoch": int(epoch) if isinstance(epoch, (int, float)) or hasattr(epoch, "__int__") else None,
        "rank1": _scalar(raw.get("cmc")),
        "mAP": _scalar(raw.get("mAP")),
        "mINP": _scalar(raw.get("mINP")),
        "unused_reference_keys": len(unused),
        "embedding": embedding,
    }
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    atomic_torch_save({
        "format": "vireid-checkpoint-1",
        "config": cfg.to_dict(),
        "model": model.state_dict(),
        "num_classes": layout.num_classes,
        "embed_dim": int(model.embed_dim),
        "train_ids": {},
        "imported_from": source,
    }, out / "best.pt")
    return {"run": str(out), "config": str(config_path), "num_classes": layout.num_classes,
            "non_local": cfg.model.params.get("non_local"), "pooling": cfg.model.params["pooling"],
            "mapped": len(mapped), **source}


__all__ = [
    "CONFIG_BY_CLASSES",
    "FEATURES",
    "REFERENCE_REPO",
    "ReferenceLayout",
    "default_config_name",
    "import_reference_checkpoint",
    "load_reference_checkpoint",
    "map_reference_state",
    "model_params",
    "reference_layout",
    "strip_module_prefix",
    "unused_by_reference",
]
