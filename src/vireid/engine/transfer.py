"""Transfer of a trained model to a new scene (survey, §6: "migrating the pre-trained model
from the source domain to the target domain and fine-tuning it to adapt to the features of the new
environment").

``vireid train --init-from SOURCE`` (``train.init_from``) starts a run from the weights of a
trained checkpoint instead of from scratch or ImageNet:

* every tensor of the new model is copied from the source, except the identity-specific ones
  (:func:`identity_specific_keys`: the identity classifier, whose outputs are the *source's*
  training identities), which keep their fresh initialisation for the new dataset's identities;
  a source whose architecture differs (other backbone, other ``specific_stages`` ...) is an error;
* ``train.freeze_stages`` keeps the first stages of the backbone fixed (weights *and* BatchNorm
  statistics): low-level filters transfer well, and few target images cannot re-estimate them;
* ``optim.backbone_lr_mult`` trains the (unfrozen) backbone at a fraction of the learning rate
  of the new head, so the transferred features move slowly while the classifier learns.

Without ``--config`` the run starts from the source's own config (model, input size, recipe) with
the command-line overrides on top (typically ``data.format`` / ``data.root``): see
:func:`transfer_config`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vireid.config import Config, absolute_entries, parse_override, set_dotted
from vireid.engine.checkpoint import load_checkpoint
from vireid.errors import ConfigError
from vireid.plugins import import_plugins, stored_config


# ----------------------------------------------------------------------------- config


def transfer_config(source: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The config of a fine-tuning run that starts from ``source``'s config.

    ``overrides`` (``key=value``) apply on top. Where they change the dataset (``data.format`` or
    ``data.root``) and do not set them themselves, the source's reader options and evaluation
    protocols are reset to the new dataset's defaults (SYSU-MM01 protocols do not fit RegDB). The
    run is named ``<source name>_ft`` unless ``name`` is given; ``train.init_from`` is ``source``.
    """
    ckpt = load_checkpoint(source)
    tree = ckpt["config"]
    parsed = [parse_override(text) for text in overrides]
    given = {".".join(keys) for keys, _ in parsed}
    changes_data = any(key in given for key in ("data.format", "data.root"))
    new_format = next((v for keys, v in parsed if keys == ["data", "format"]), tree["data"].get("format"))
    if changes_data:
        if "data.options" not in given and not any(k.startswith("data.options.") for k in given):
            tree["data"]["options"] = {}
        if "eval.protocols" not in given:
            tree.setdefault("eval", {})["protocols"] = []
        if new_format != "synthetic" and not any(k.startswith("data.synth") for k in given):
            tree["data"].pop("synth", None)
    if "name" not in given:
        tree["name"] = f"{tree.get('name', 'run')}_ft"
    # the source run's own transfer settings do not carry over: each fine-tuning run states its own
    tree.setdefault("train", {})["init_from"] = str(source)
    tree["train"]["freeze_stages"] = 0
    tree.setdefault("optim", {})["backbone_lr_mult"] = 1.0
    for keys, value in parsed:
        set_dotted(tree, keys, value)
    if "plugins" in given:  # plugins named in the user's own overrides are theirs to import
        tree["plugins"] = absolute_entries(tree["plugins"] or [], Path.cwd())
        import_plugins(tree["plugins"])
    return stored_config(tree, source=f"run {source}")


def check_transfer_options(cfg: Config) -> None:
    """Range checks of ``train.freeze_stages`` and ``optim.backbone_lr_mult`` (before any data work)."""
    from vireid.modeling.backbones.two_stream import NUM_STAGES

    if not 0 <= cfg.train.freeze_stages <= NUM_STAGES:
        raise ConfigError(f"config key 'train.freeze_stages' must be between 0 and {NUM_STAGES}, got {cfg.train.freeze_stages}")
    if cfg.optim.backbone_lr_mult <= 0:
        raise ConfigError(f"config key 'optim.backbone_lr_mult' must be positive, got {cfg.optim.backbone_lr_mult}")


# ----------------------------------------------------------------------------- weights


def identity_specific_keys(model: nn.Module, num_classes: int) -> set[str]:
    """State-dict keys tied to the training identities: the parameters of every ``nn.Linear`` with
    ``num_classes`` outputs (the identity classifier, and any auxiliary per-identity classifier)."""
    keys: set[str] = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.out_features == num_classes:
            prefix = f"{name}." if name else ""
            keys.update(prefix + p for p, _ in module.named_parameters(recurse=False))
    return keys


def initialise_from_checkpoint(model: nn.Module, source: str | Path, num_classes: int) -> dict:
    """Copy ``source``'s weights into ``model`` (built for the new dataset's ``num_classes``).

    Identity-specific tensors (see :func:`identity_specific_keys`, found on both models) keep the
    new model's initialisation. Every other tensor must exist in the source with the same shape;
    otherwise a :class:`ConfigError` names the first ones and how to fix the config. Returns a
    report: ``source``, ``loaded`` (tensor count), ``reinitialised`` (keys), the source's
    ``source_num_classes`` and ``source_method``.
    """
    ckpt = load_checkpoint(source, map_location="cpu")
    src_state: dict[str, torch.Tensor] = ckpt["model"]
    src_classes = int(ckpt.get("num_classes", -1))
    target = model.state_dict()
    # a layer with num_classes outputs is the classifier unless the source has it with other than
    # the source's identity count of outputs (then it is e.g. a projection that happens to match)
    skip = {k for k in identity_specific_keys(model, num_classes)
            if k not in src_state or src_classes < 0 or src_state[k].shape[0] == src_classes
            or src_state[k].shape != target[k].shape}
    missing = [k for k in target if k not in skip and k not in src_state]
    mismatched = [k for k in target if k not in skip and k in src_state and src_state[k].shape != target[k].shape]
    if missing or mismatched:
        src_cfg = ckpt["config"].get("model", {})
        examples = ", ".join((missing + mismatched)[:3])
        raise ConfigError(
            f"checkpoint {source} (model.method {src_cfg.get('method')!r}, params {src_cfg.get('params')}) does not fit "
            f"the configured model: {len(missing)} tensors missing and {len(mismatched)} of another shape (e.g. {examples}); "
            "use the source's model.method/model.params (omit --config to start from the source's config)"
        )
    loaded = {k: v for k, v in src_state.items() if k in target and k not in skip}
    model.load_state_dict({**target, **loaded})
    return {
        "source": str(source),
        "loaded": len(loaded),
        "reinitialised": sorted(skip & set(target)),
        "source_num_classes": src_classes,
        "source_method": ckpt["config"].get("model", {}).get("method"),
    }


# ----------------------------------------------------------------------------- freezing, learning rates


def stage_backbone(model: nn.Module) -> nn.Module:
    """The model's stage-structured backbone (a :class:`TwoStreamBackbone`): ``model.backbone`` or
    the first one among its sub-modules."""
    from vireid.modeling.backbones.two_stream import TwoStreamBackbone

    candidate = getattr(model, "backbone", None)
    # stage_structured: a backbone with the same stage interface (the ViT backbone, vireid.modeling.backbones.vit)
    if isinstance(candidate, TwoStreamBackbone) or getattr(candidate, "stage_structured", False):
        return candidate
    for module in model.modules():
        if isinstance(module, TwoStreamBackbone) or getattr(module, "stage_structured", False):
            return module
    raise ConfigError(
        f"train.freeze_stages and optim.backbone_lr_mult need a model with a two-stream backbone; "
        f"{type(model).__name__} has none (set them back to 0 and 1.0)"
    )


def stage_modules(backbone: nn.Module, stage: int) -> list[nn.Module]:
    """The module(s) of global stage ``stage`` (0 = stem): one per modality for specific stages."""
    specific = backbone.specific_stages
    if stage < specific:
        return [branch[stage] for branch in backbone.modality_branches]
    return [backbone.shared_stages[stage - specific]]


def freeze_stages(model: nn.Module, count: int) -> list[nn.Module]:
    """Stop gradients through the first ``count`` backbone stages and return their modules, which the
    trainer keeps in evaluation mode (frozen BatchNorm statistics)."""
    if count == 0:
        return []
    from vireid.modeling.backbones.two_stream import NUM_STAGES

    if not 0 <= count <= NUM_STAGES:
        raise ConfigError(f"config key 'train.freeze_stages' must be between 0 and {NUM_STAGES}, got {count}")
    backbone = stage_backbone(model)
    modules = [m for stage in range(count) for m in stage_modules(backbone, stage)]
    for module in modules:
        module.requires_grad_(False)
        module.eval()
    return modules


def scale_backbone_lr(groups: list[dict], model: nn.Module, base_lr: float, mult: float) -> list[dict]:
    """Split optimiser groups so the backbone's parameters train at ``lr * mult`` (``lr``: the group's
    own learning rate, default ``base_lr``); other parameters keep their group's settings."""
    if mult <= 0:
        raise ConfigError(f"config key 'optim.backbone_lr_mult' must be positive, got {mult}")
    backbone_ids = {id(p) for p in stage_backbone(model).parameters()}
    out = []
    for group in groups:
        params = list(group["params"])
        inside = [p for p in params if id(p) in backbone_ids]
        outside = [p for p in params if id(p) not in backbone_ids]
        lr = group.get("lr", base_lr)
        if inside:
            out.append({**group, "params": inside, "lr": lr * mult})
        if outside:
            out.append({**group, "params": outside, "lr": lr})
    return out


__all__ = [
    "check_transfer_options",
    "freeze_stages",
    "identity_specific_keys",
    "initialise_from_checkpoint",
    "scale_backbone_lr",
    "stage_backbone",
    "stage_modules",
    "transfer_config",
]
