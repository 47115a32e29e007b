"""Typed configuration: YAML files with inheritance, dotted command-line overrides, strict validation.

A config is a tree of dataclasses (:class:`Config`). A YAML file may name a base file with
``_base_: other.yaml`` (relative to itself; the file's keys override the base's, dicts merged
recursively). Overrides from the command line are ``key.sub=value`` strings whose value is parsed
as YAML (``optim.lr=0.01``, ``train.amp=bf16``, ``sched.milestones=[20,50]``).

Validation is strict so that a typo never silently falls back to a default:

* an unknown key is rejected with its dotted name and the keys that exist there;
* a value of the wrong type is rejected with the key, the expected type and the value;
* the free-form parts (``model.params``, each loss's ``params``, ``data.options``) are checked
  later against the signature of what they configure (:func:`check_kwargs`), again by name.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vireid.errors import ConfigError

SHIPPED_CONFIGS = Path(__file__).resolve().parent / "configs"


@dataclass
class SynthConfig:
    """Synthetic data made on demand when ``data.format`` is ``synthetic``."""

    ids: int = 60
    images_per_camera: int = 6
    height: int = 128
    width: int = 64
    seed: int = 0


@dataclass
class DataConfig:
    format: str = "synthetic"  # synthetic | sysu-mm01 | regdb | llcm | folder | csv
    root: str = "data/synth-sysu"
    options: dict = field(default_factory=dict)  # reader options (trial, split_dir, train_includes_val, ...)
    height: int = 288
    width: int = 144
    cache_dir: str | None = None  # decoded-image cache; default: <root>/.vireid-cache
    workers: int | None = None
    # body joints per image for pose-guided methods (seed 002): None (off) | "synthetic" (the generator's
    # stored joints) | "auto" (synthetic joints, else the dataset's pose cache) | path of a pose-cache file
    joints: str | None = None
    synth: SynthConfig = field(default_factory=SynthConfig)


@dataclass
class SamplerConfig:
    num_ids: int = 8  # P identities per batch
    num_per_modality: int = 4  # K visible + K infrared images per identity
    epoch_length: str | int = "images"  # images | identities | number of batches


@dataclass
class AugmentConfig:
    pad: int = 10
    flip: float = 0.5
    random_erasing: float = 0.5
    channel_aug: bool = False
    grayscale: float = 0.0
    # extra registered batch steps (vireid.data.transforms.TRANSFORM_STEPS), each
    # {type: name, after: step | before: step (default: append), **constructor params}
    steps: list = field(default_factory=list)


@dataclass
class ModelConfig:
    method: str = "baseline"
    params: dict = field(default_factory=dict)  # keyword arguments of the method's constructor


@dataclass
class LossConfig:
    """One loss term. ``type`` defaults to the key the loss is listed under in ``losses``."""

    type: str | None = None
    weight: float = 1.0
    input: str = "features"  # key of the model's output dict fed to the loss
    params: dict = field(default_factory=dict)


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    clip_grad_norm: float | None = None
    # the backbone's learning rate is lr * backbone_lr_mult, the new layers' lr: AGW's recipe trains its
    # ImageNet backbone at 0.1x; transfer (vireid train --init-from) fine-tunes a trained backbone gently
    backbone_lr_mult: float = 1.0


@dataclass
class SchedConfig:
    name: str = "multistep"  # multistep | cosine | constant
    warmup_epochs: int = 10
    warmup_start_factor: float = 0.01
    milestones: list = field(default_factory=lambda: [20, 50])
    gamma: float = 0.1
    min_lr: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 60
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "none"  # none | bf16 | fp16 (CUDA only)
    channels_last: bool = False
    compile: bool = False
    eval_every: int = 1  # validation every N epochs (0: never)
    select_best: str = "val"  # val | last
    log_every: int = 10  # steps between JSON-lines/TensorBoard step records
    progress: bool = True
    threads: int | None = None  # torch CPU threads
    # transfer to a new scene: start from this checkpoint / run folder's weights (new identity classifier)
    init_from: str | None = None
    freeze_stages: int = 0  # leading backbone stages kept fixed (0: none; 1: stem; 2: stem + stage 1; ...)


@dataclass
class EvalConfig:
    protocols: list = field(default_factory=list)  # empty: the dataset family's standard protocols
    batch_size: int = 128
    metric: str = "euclidean"  # euclidean (on L2-normalised features) | cosine
    rerank: bool | str = False  # true / k-reciprocal (Zhong et al.), or modality (modality-aware, docs/evaluation.md)
    trials: int = 10
    draw: str = "seeded"  # SYSU-MM01 gallery draw: seeded | official
    rand_perm_cam: str | None = None  # official draw file; default: <data.root>/exp/rand_perm_cam.mat


@dataclass
class Config:
    name: str = "run"
    seed: int = 0
    output_dir: str = "runs"
    plugins: list[str] = field(default_factory=list)
    data: DataConfig = field(default_factory=DataConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    losses: dict = field(
        default_factory=lambda: {
            "cross_entropy": {"input": "logits", "params": {"epsilon": 0.1}},
            "triplet": {"input": "features", "params": {"margin": 0.3}},
        }
    )
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def loss_terms(self) -> dict[str, LossConfig]:
        """The ``losses`` table as validated :class:`LossConfig` objects, keyed by term name.

        A term set to ``null`` (e.g. ``losses.triplet=null`` or in a config inheriting a base) is removed."""
        return {name: _build(LossConfig, spec, f"losses.{name}") for name, spec in self.losses.items() if spec is not None}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- loading


def _load_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config {path} inherits from itself through _base_; remove the cycle")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file to --config")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys at its top level")
    _resolve_plugin_paths(data, path.parent)
    base = data.pop("_base_", None)
    if base is None:
        return data
    merged = _load_yaml(_base_path(str(base), path), seen + (path,))
    base_data, own_data = merged.get("data") or {}, data.get("data") or {}
    if isinstance(base_data, dict) and isinstance(own_data, dict) and "format" in own_data \
            and own_data["format"] != base_data.get("format"):
        # reader options belong to one dataset format: a config that changes the format starts afresh
        base_data.pop("options", None)
    return _merge(merged, data)


def find_yaml(name: str, folder: Path, *, beside: Path | None = None, as_given: bool = True) -> Path | None:
    """A YAML file named ``name``: the path as given (``as_given``), else relative to ``beside``, else
    ``folder/name`` or ``folder/name.yaml`` (a shipped config or grid); None when none exists."""
    candidates = [Path(name)] if as_given else []
    if beside is not None:
        candidates.append(beside / name)
    candidates += [folder / name, folder / f"{name}.yaml"]
    return next((c for c in candidates if c.is_file()), None)


def shipped_names(folder: Path) -> str:
    """The names of the YAML files in ``folder``, for error messages."""
    return ", ".join(sorted(c.stem for c in folder.glob("*.yaml"))) or "none"


def _base_path(base: str, config: Path) -> Path:
    """``_base_`` is a path relative to the config naming it, or else the name of a shipped config."""
    found = find_yaml(base, SHIPPED_CONFIGS, beside=config.parent, as_given=False)
    if found is None:
        raise ConfigError(
            f"config {config}: _base_ {base!r} is neither a file beside it nor a shipped config "
            f"(shipped: {shipped_names(SHIPPED_CONFIGS)})"
        )
    return found


def _resolve_plugin_paths(data: dict, folder: Path) -> None:
    """Make the ``.py`` entries of a YAML file's ``plugins`` absolute, relative to that file."""
    from vireid.plugins import absolute_entries

    if isinstance(data.get("plugins"), list):
        data["plugins"] = absolute_entries(data["plugins"], folder)


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=0.01"`` -> (["optim", "lr"], 0.01)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. optim.lr=0.01)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key; write it as section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def set_dotted(tree: dict, keys: list[str], value: Any) -> None:
    """``tree[keys[0]][keys[1]]... = value``, creating the intermediate mappings (an override's effect)."""
    node = tree
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply dotted overrides."""
    tree: dict = _load_yaml(Path(path)) if path is not None else {}
    for text in overrides:
        keys, value = parse_override(text)
        set_dotted(tree, keys, value)
    return config_from_dict(tree)


def config_from_dict(tree: dict) -> Config:
    """Validate a plain dict (e.g. from a checkpoint) into a :class:`Config`."""
    cfg = _build(Config, tree, "")
    if cfg.plugins:
        from vireid.plugins import absolute_entries, import_plugins

        # a path given on the command line is relative to the working directory: keep it absolute
        cfg.plugins = absolute_entries(cfg.plugins, Path.cwd())
        import_plugins(cfg.plugins)
    cfg.loss_terms()  # validate the loss table now, not at the first step
    _check_choices(cfg)
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# ----------------------------------------------------------------------------- validation


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (int accepted where float is expected)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError as err:
                errors.append(err)
        raise ConfigError(f"config key {key!r} expects {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"config key {key!r} expects null, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r} expects a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key!r} expects an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r} expects true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {key!r} expects a string, got {value!r}")
        return value
    if tp in (dict, list) or origin in (dict, list):
        base = origin or tp
        if not isinstance(value, base):
            raise ConfigError(f"config key {key!r} expects a {base.__name__}, got {value!r}")
        return copy.deepcopy(value)
    return value


def _build(cls: type, data: Any, prefix: str) -> Any:
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    where = prefix or "the top level"
    if not isinstance(data, dict):
        raise ConfigError(f"config key {where!r} expects a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        name = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"unknown config key {name!r}; valid keys at {where}: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], key)
    return cls(**kwargs)


_CHOICES = {
    "optim.name": ("sgd", "adam", "adamw"),
    "sched.name": ("multistep", "cosine", "constant"),
    "train.amp": ("none", "bf16", "fp16"),
    "train.select_best": ("val", "last"),
    "eval.metric": ("euclidean", "cosine"),
    "eval.draw": ("seeded", "official"),
}


def _check_choices(cfg: Config) -> None:
    for key, options in _CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in options:
            raise ConfigError(f"config key {key!r} must be one of {', '.join(options)}, got {value!r}")
    epoch_length = cfg.sampler.epoch_length
    if isinstance(epoch_length, str) and epoch_length not in ("images", "identities"):
        raise ConfigError(
            f"config key 'sampler.epoch_length' must be images, identities or a number of batches, got {epoch_length!r}"
        )


def accepted_parameters(func: Any) -> tuple[dict[str, inspect.Parameter], dict[str, Any], bool]:
    """The keyword parameters ``func`` takes, their type hints, and whether it takes any name.

    A class whose ``__init__`` forwards ``**kwargs`` to its base class (``super().__init__(...,
    **kwargs)``) also takes the base's parameters: the classes of the MRO are read in order until
    one without ``**kwargs``, a subclass's own parameter (with its own default) winning over the
    base's. So a method that only changes a few of its base's defaults lists just those.
    """
    owners = [c for c in func.__mro__ if "__init__" in vars(c)] if inspect.isclass(func) else [func]
    params: dict[str, inspect.Parameter] = {}
    hints: dict[str, Any] = {}
    accepts_any = False
    for owner in owners:
        target = owner.__init__ if inspect.isclass(owner) else owner
        sig = inspect.signature(target)
        for name, p in sig.parameters.items():
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                params.setdefault(name, p)
        try:
            for name, tp in typing.get_type_hints(target).items():
                hints.setdefault(name, tp)
        except Exception:  # noqa: BLE001 - unresolvable annotations: skip type checks
            pass
        accepts_any = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
        if not accepts_any:
            break
    return params, hints, accepts_any


def check_kwargs(func: Any, kwargs: dict, key: str, skip: tuple[str, ...] = ()) -> dict:
    """Check free-form ``kwargs`` (e.g. ``model.params``) against ``func``'s signature.

    Unknown names are rejected with the dotted key and the accepted names; values are checked
    against the parameter annotations where those are simple types. A class's ``**kwargs``
    forwarded to its base accept the base's parameters (:func:`accepted_parameters`).
    """
    accepted, hints, accepts_any = accepted_parameters(func)
    params = {n: p for n, p in accepted.items() if n not in skip}
    out = {}
    for name, value in kwargs.items():
        if name not in params:
            if accepts_any:
                out[name] = value
                continue
            valid = ", ".join(sorted(params)) or "none"
            raise ConfigError(f"unknown config key '{key}.{name}'; valid keys there: {valid}")
        tp = hints.get(name)
        out[name] = _coerce_loose(value, tp, f"{key}.{name}") if tp is not None else value
    return out


def _coerce_loose(value: Any, tp: Any, key: str) -> Any:
    """Like :func:`_coerce` but lets unusual annotations (tuples, Literals, callables) through."""
    origin = typing.get_origin(tp)
    simple = (int, float, bool, str, type(None))
    if tp in simple:
        return _coerce(value, tp, key)
    if origin in (typing.Union, types.UnionType) and all(a in simple for a in typing.get_args(tp)):
        return _coerce(value, tp, key)
    if (tp is tuple or origin is tuple) and isinstance(value, list):
        return tuple(value)
    return value
