"""Typed configuration: YAML files with inheritance, dotted command-line overrides, strict validation.

A config is a tree of dataclasses (:class:`Config`). A YAML file may name a base file with
``_base_: other.yaml`` (relative to itself; the file's keys override the base's, dicts merged
recursively). Overrides from the command line are ``key.sub=value`` strings whose value is parsed
as YAML (``optim.lr=0.01``, ``train.amp=bf16``, ``sched.milestones=[20,50]``).

Validation is strict so that a typo never silently falls back to a default:

* an unknown key is rejected with its dotted name and the keys that exist there;
* a value of the wrong type is rejected with the key, the expected type and the value;
* the free-form parts (``model.params``, each loss's ``params``, ``data.options``) are checked
  later against the signature of what they configure (:meth:`vireid.registry.Registry.build_checked`),
  again by name.

This module is a leaf of the package: it imports nothing of vireid but :mod:`vireid.errors`, and loading a
config never imports code (plugins are imported by :func:`vireid.plugins.user_config` /
:func:`vireid.plugins.stored_config`, which commands and workflows call; docs/architecture.md).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
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
    # --- BEGIN h17vdata: synthetic-vcm (video): consecutive frames per tracklet; images_per_camera = tracklets
    frames_per_tracklet: int = 12
    # --- END h17vdata


@dataclass
class DataConfig:
    format: str = "synthetic"  # synthetic | sysu-mm01 | regdb | llcm | folder | csv
    root: str = "data/synth-sysu"
    options: dict = field(default_factory=dict)  # reader options (trial, split_dir, train_includes_val, ...)
    height: int = 288
    width: int = 144
    # resize filter to height x width: bilinear | lanczos (AGW/CAJ's Image.ANTIALIAS); images, caches, embedders
    resample: str = "bilinear"
    cache_dir: str | None = None  # decoded-image cache; default: <root>/.vireid-cache
    workers: int | None = None
    # body joints per image for pose-guided methods (PDFENet): None (off) | "synthetic" (the generator's
    # stored joints) | "auto" (synthetic joints, else the dataset's pose cache) | path of a pose-cache file
    joints: str | None = None
    # named side inputs per image (vireid.data.extras.EXTRAS): {kind name: source string or {parameter: value}};
    # data.joints is the short form of extras.joints
    extras: dict = field(default_factory=dict)
    # share of the training identities whose labels are used (1.0: all); below 1 the others get pseudo-labels
    # from re-clustering (a cluster_memory loss: configs usl_* with 0.0, semi_* with 0.1 / 0.3)
    labelled_fraction: float = 1.0
    synth: SynthConfig = field(default_factory=SynthConfig)


@dataclass
class SamplerConfig:
    num_ids: int = 8  # P identities per batch
    num_per_modality: int = 4  # K visible + K infrared images per identity
    epoch_length: str | int = "images"  # images | identities | number of batches
    # --- BEGIN h17vdata: tracklet sampling (vireid.data.tracklet_sampler); off while seq_len is 0
    seq_len: int = 0  # T frames per tracklet; > 0: batches of P ids x K tracklets per modality x T frames
    frame_sampling: str = "restricted"  # restricted (one random frame per chunk) | evenly (chunk middles)
    tracklets_per_id: int = 2  # K tracklets per identity and modality (MITML: --num_pos 2)
    # --- END h17vdata


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
    # layer-wise learning-rate decay (BEiT): layer l of L gets lr * layer_decay ** (L + 1 - l); 1.0 = off.
    # Needs a model whose param_groups takes layer_decay (the ViT method ``vit``)
    layer_decay: float = 1.0


@dataclass
class SchedConfig:
    name: str = "multistep"  # multistep | cosine | constant
    warmup_epochs: int = 10
    warmup_start_factor: float = 0.01
    # false: the factor rises linearly every step, from warmup_start_factor to 1 at warmup_epochs; true: it is
    # constant within an epoch and rises from warmup_start_factor (epoch 0) to 1 (epoch warmup_epochs - 1):
    # AGW's / CAJ's adjust_learning_rate, lr * (epoch + 1) / 10 for epochs 0-9 with warmup_start_factor 0.1
    warmup_by_epoch: bool = False
    milestones: list = field(default_factory=lambda: [20, 50])
    gamma: float = 0.1
    min_lr: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 60
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # auto: bf16 on CPUs with bf16 matrix units (AMX/AVX512-BF16) and on bf16 GPUs, fp16 on older
    # GPUs, fp32 elsewhere (vireid.engine.precision) | none (fp32) | bf16 | fp16 (CUDA only)
    amp: str = "auto"
    channels_last: bool = False  # forces NHWC in fp32 too (autocast always runs channels_last)
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
    npu_gallery: str = "per_person"  # NPU-ReID gallery draw: per_person (the paper's 1 or 10 of a person) | per_camera
    # test-time flip: average each image's embedding with its mirror image's (CAJ, DEEN, fast-reid do so
    # by default; off keeps the papers' plain evaluation). Used by eval, extract, search, serve, vireid.load
    flip: bool = False


@dataclass
class Config:
    name: str = "run"
    seed: int = 0
    output_dir: str = "runs"
    plugins: list[str] = field(default_factory=list)
    # what the recipe should reach on the real dataset, as its authors published it (documentation only;
    # docs/reproducing.md is generated from it by scripts/make_reproducing.py): {method, paper, code,
    # protocol, rank1, mAP, mINP, reproduce (the config to compare with them), hours (vireid's time estimate)}
    published: dict = field(default_factory=dict)
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


class DuplicateKeyError(yaml.YAMLError):
    """A mapping names the same key twice (YAML would silently keep the last one)."""

    def __init__(self, key: str, first: int, second: int) -> None:
        super().__init__(f"key {key!r} appears twice (lines {first} and {second})")
        self.key, self.first, self.second = key, first, second


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with two fixes for configs: a number in exponent form without a dot (``1e-4``,
    ``2E5``) is a float, not the string YAML 1.1 makes of it, and a key given twice is an error."""

    def construct_mapping(self, node, deep=False):  # noqa: ANN001 - PyYAML's signature
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # PyYAML reports unhashable keys itself
            line = key_node.start_mark.line + 1
            if key in seen:
                raise DuplicateKeyError(str(key), seen[key], line)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_yaml(text: str) -> Any:
    """Parse config YAML text (:class:`_Loader`: ``1e-4`` is a number, a duplicate key raises)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def _load_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config {path} inherits from itself through _base_; remove the cycle")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file to --config")
    try:
        data = read_yaml(path.read_text()) or {}
    except DuplicateKeyError as err:
        raise ConfigError(f"config file {path}: {err}; keep only one of them") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys at its top level")
    _resolve_plugin_paths(data, path.parent)
    base = data.pop("_base_", None)
    if base is None:
        return data
    merged = _load_yaml(_base_path(str(base), path), seen + (path,))
    # published numbers belong to the file that states them: a config built on another is another recipe
    merged.pop("published", None)
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


def is_plugin_path(entry: str) -> bool:
    """Whether a ``plugins`` entry names a file (``.py`` or containing a path separator) rather than a module."""
    return entry.endswith(".py") or "/" in entry or "\\" in entry


def absolute_entries(entries, folder: Path) -> list[str]:
    """``plugins`` entries with each ``.py`` path made absolute relative to ``folder`` (module names kept)."""
    return [str((folder / Path(e).expanduser()).resolve()) if isinstance(e, str) and is_plugin_path(e) else e
            for e in entries]


def _resolve_plugin_paths(data: dict, folder: Path) -> None:
    """Make the ``.py`` entries of a YAML file's ``plugins`` absolute, relative to that file."""
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
        value = read_yaml(raw) if raw.strip() else None
    except DuplicateKeyError as err:
        raise ConfigError(f"override {text!r}: {err}; keep only one of them") from None
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
    """Load a YAML config (or the defaults when ``path`` is None) and apply dotted overrides.

    Only reads and checks: the config's ``plugins`` are not imported here (the config loader imports no
    code); :func:`vireid.plugins.user_config` loads a config *and* imports its plugins, which is what
    commands and workflows call."""
    tree: dict = _load_yaml(Path(path)) if path is not None else {}
    for text in overrides:
        keys, value = parse_override(text)
        set_dotted(tree, keys, value)
    cfg = config_from_dict(tree)
    # a path given on the command line is relative to the working directory: keep it absolute
    cfg.plugins = absolute_entries(cfg.plugins, Path.cwd())
    return cfg


def config_from_dict(tree: dict) -> Config:
    """Validate a plain dict into a :class:`Config` (types, choices, ranges, the loss table).

    Imports nothing: for a stored config (a checkpoint's, an exported model's) whose ``plugins`` must be
    importable before its parts are built, use :func:`vireid.plugins.stored_config`."""
    cfg = _build(Config, tree, "")
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
    "train.amp": ("auto", "none", "bf16", "fp16"),
    "train.select_best": ("val", "last"),
    "eval.metric": ("euclidean", "cosine"),
    "eval.draw": ("seeded", "official"),
    "eval.npu_gallery": ("per_person", "per_camera"),
    "data.resample": ("bilinear", "lanczos"),
    "sampler.frame_sampling": ("restricted", "evenly"),  # h17vdata
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
    _check_ranges(cfg)


def _check_range(key: str, value: Any, ok: bool, what: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key {key!r} must be {what}, got {value}")
    if not ok:
        raise ConfigError(f"config key {key!r} must be {what}, got {value!r}")


def _check_ranges(cfg: Config) -> None:
    """Numbers that would crash (or silently do nothing) later, refused now with one sentence each."""
    o, s, t = cfg.optim, cfg.sched, cfg.train
    name = cfg.name
    if not name or name in (".", "..") or any(c in name for c in "/\\\0") or name != name.strip():
        raise ConfigError(f"config key 'name' must be a plain folder name (no '/', '\\' or '..'), got {name!r}; "
                          "it names the run folder inside output_dir")
    _check_range("seed", cfg.seed, 0 <= cfg.seed < 2**32, "a whole number from 0 to 4294967295")
    _check_range("optim.lr", o.lr, math.isfinite(o.lr) and o.lr > 0, "a positive number such as 0.1 or 3.5e-4")
    _check_range("optim.momentum", o.momentum, 0 <= o.momentum < 1, "between 0 (inclusive) and 1")
    _check_range("optim.weight_decay", o.weight_decay, math.isfinite(o.weight_decay) and o.weight_decay >= 0,
                 "zero or a positive number")
    betas_ok = (len(o.betas) == 2 and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in o.betas)
                and all(0 <= b < 1 for b in o.betas))
    _check_range("optim.betas", o.betas, betas_ok, "two numbers from 0 (inclusive) to 1, such as [0.9, 0.999]")
    if o.clip_grad_norm is not None:
        _check_range("optim.clip_grad_norm", o.clip_grad_norm,
                     math.isfinite(o.clip_grad_norm) and o.clip_grad_norm > 0, "a positive number or null")
    _check_range("sched.warmup_epochs", s.warmup_epochs, s.warmup_epochs >= 0, "zero or more")
    _check_range("sched.warmup_start_factor", s.warmup_start_factor, 0 < s.warmup_start_factor <= 1,
                 "above 0 and at most 1")
    _check_range("sched.gamma", s.gamma, math.isfinite(s.gamma) and s.gamma > 0, "a positive number")
    _check_range("sched.min_lr", s.min_lr, math.isfinite(s.min_lr) and s.min_lr >= 0, "zero or a positive number")
    _check_range("train.epochs", t.epochs, t.epochs >= 1, "at least 1 (the number of epochs to train)")
    _check_range("data.labelled_fraction", cfg.data.labelled_fraction, 0 <= cfg.data.labelled_fraction <= 1,
                 "from 0 (no labels: unsupervised) to 1 (all identities labelled)")
    # --- BEGIN h17vdata: tracklet sampling
    _check_range("sampler.seq_len", cfg.sampler.seq_len, cfg.sampler.seq_len >= 0,
                 "0 (image sampling) or a number of frames per tracklet")
    _check_range("sampler.tracklets_per_id", cfg.sampler.tracklets_per_id, cfg.sampler.tracklets_per_id >= 1,
                 "at least 1 (tracklets per identity and modality)")
    _check_range("data.synth.frames_per_tracklet", cfg.data.synth.frames_per_tracklet,
                 cfg.data.synth.frames_per_tracklet >= 1, "at least 1 (frames per synthetic tracklet)")
    # --- END h17vdata
