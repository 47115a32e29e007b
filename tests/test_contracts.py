"""Contract tests over the registries, in timm's style: every registered method, loss, batch step and
dataset reader is picked up by name (a new part is covered without editing this file) and held to
what the trainer and the data layer rely on.

- a method builds from a shipped config, returns a dict of outputs in training mode that holds every
  loss term's input, trains one step (finite losses, gradients reach its parameters) and returns an
  embedding ``[B, D]`` in evaluation mode; a bad parameter is one sentence naming it;
- a loss returns a finite scalar that gradients flow through (in a shipped config's method contract,
  or called on its ``input_key`` output), and a bad parameter is one sentence;
- a batch step builds with its defaults, keeps the batch's shape and dtype, and a bad parameter is
  one sentence;
- a dataset reader reports a missing folder as one :class:`DatasetError` sentence, and a bad option as
  one sentence naming it.
"""

from __future__ import annotations

import inspect
from functools import lru_cache

import pytest
import torch

from conftest import REPO
from vireid.builtins import REGISTRIES
from vireid.config import Config, load_config
from vireid.errors import ConfigError, DatasetError, VireidError

CONFIGS = REPO / "src" / "vireid" / "configs"


@lru_cache(maxsize=1)
def shipped_synth_configs() -> dict[str, Config]:
    """The shipped configs that train on synthetic data (sized for CPU), by file name."""
    found = {}
    for path in sorted(CONFIGS.glob("*_synth.yaml")):
        found[path.stem] = load_config(path)
    return found


def _losses_of(cfg: Config) -> set[str]:
    used = set()
    for name, term in cfg.loss_terms().items():
        used.add(term.type or name)
        if (term.type or name) == "partwise" and (term.params or {}).get("loss"):
            used.add(term.params["loss"])
    return used


@lru_cache(maxsize=1)
def contract_configs() -> tuple[str, ...]:
    """The fewest shipped synthetic configs that train every registered method once and every loss a
    synthetic config uses (the first config naming each, in file order): the method contracts run these."""
    configs = shipped_synth_configs()
    chosen: list[str] = []
    for method in REGISTRIES["methods"].names():
        first = next((n for n, c in configs.items() if c.model.method == method), None)
        if first is not None and first not in chosen:
            chosen.append(first)
    covered = set().union(*(_losses_of(configs[n]) for n in chosen)) if chosen else set()
    for name, cfg in configs.items():
        if _losses_of(cfg) - covered:
            chosen.append(name)
            covered |= _losses_of(cfg)
    return tuple(chosen)


def _fill_memory(module, dim: int) -> None:
    """A loss that keeps a memory filled at each epoch start (the cluster memory: ``set_memories``, called by
    re-clustering in training) gets one centroid per tiny-batch label and modality, as re-clustering would."""
    if hasattr(module, "set_memories"):
        generator = torch.Generator().manual_seed(1)
        module.set_memories(torch.randn(4, dim, generator=generator), torch.randn(4, dim, generator=generator))


def _tiny_batch(cfg: Config) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Four identities, each one visible and one infrared image (a registered pair for fusion methods)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(8, 3, cfg.data.height, cfg.data.width, generator=generator)
    labels = torch.arange(4).repeat_interleave(2)
    modalities = torch.tensor([0, 1] * 4)
    return images, labels, modalities


@pytest.mark.parametrize("config_name", contract_configs())
def test_a_shipped_methods_train_step_and_embedding(config_name):
    from vireid.engine.trainer import build_losses, build_model

    torch.manual_seed(0)
    cfg = shipped_synth_configs()[config_name]
    model = build_model(cfg, num_classes=4)
    model.train()
    images, labels, modalities = _tiny_batch(cfg)
    # as the trainer calls it: the labels go to a forward that takes them (CLIP-ReID's stage 1)
    takes_labels = "labels" in inspect.signature(type(model).forward).parameters
    outputs = model(images, modalities, labels=labels) if takes_labels else model(images, modalities)
    assert isinstance(outputs, dict), f"{cfg.model.method} must return a dict of outputs in training mode"
    feat_dim = int(getattr(model, "embed_dim", 0)) or outputs["features"].shape[-1]
    losses = build_losses(cfg, num_classes=4, feat_dim=feat_dim)
    total = torch.zeros(())
    phase_outputs = set(getattr(model, "phase_outputs", ()))  # outputs of other training phases (trainer skips them)
    for name, term in cfg.loss_terms().items():
        if term.input not in outputs and term.input in phase_outputs:
            continue
        assert term.input in outputs, f"loss {name} reads {term.input!r}; {cfg.model.method} outputs {sorted(outputs)}"
        _fill_memory(losses[name], outputs[term.input].shape[-1])
        value = losses[name](outputs[term.input], labels, modalities)
        assert value.ndim == 0 and torch.isfinite(value), (name, value)
        total = total + term.weight * value
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    model.eval()
    with torch.no_grad():
        embedding = model(images, modalities)
    assert isinstance(embedding, torch.Tensor) and embedding.shape[0] == 8 and embedding.ndim == 2
    if getattr(model, "embed_dim", None):  # embed_dim: the training feature; output_dim: the test embedding
        assert embedding.shape[1] == getattr(model, "output_dim", model.embed_dim)
    assert torch.isfinite(embedding).all()


@pytest.mark.parametrize("method", REGISTRIES["methods"].names())
def test_every_method_ships_a_synthetic_config_and_rejects_a_bad_parameter(method):
    assert any(cfg.model.method == method for cfg in shipped_synth_configs().values()), \
        f"method {method!r} has no configs/*_synth.yaml, so its contract test does not run; add one"
    with pytest.raises(ConfigError, match=rf"unknown config key 'model\.params\.no_such_param'; valid keys there: "):
        REGISTRIES["methods"].check(method, {"no_such_param": 1}, "model.params", skip=("num_classes",))


@pytest.mark.parametrize("loss", REGISTRIES["losses"].names())
def test_every_loss_returns_a_finite_scalar_with_gradients_and_rejects_a_bad_parameter(loss):
    """A loss a contract config trains is covered there; any other is called here on the model output its
    ``input_key`` names (``features`` [B, D] or ``logits`` [B, K]), with its defaults."""
    with pytest.raises(ConfigError, match=rf"unknown config key 'losses\.{loss}\.params\.no_such_param'"):
        REGISTRIES["losses"].check(loss, {"no_such_param": 1}, f"losses.{loss}.params")
    if any(loss in _losses_of(shipped_synth_configs()[n]) for n in contract_configs()):
        return
    from vireid.engine.trainer import build_losses

    cfg = load_config(None, [f"losses={{{loss}: {{}}}}"])
    module = build_losses(cfg, num_classes=4, feat_dim=16)[loss]
    key = getattr(module, "input_key", "features")
    assert key in ("features", "logits"), f"loss {loss!r} reads {key!r}; train it in a configs/*_synth.yaml so its contract runs"
    inputs = torch.randn(8, 16 if key == "features" else 4, requires_grad=True)
    labels, modalities = torch.arange(4).repeat_interleave(2), torch.tensor([0, 1] * 4)
    _fill_memory(module, inputs.shape[-1])
    value = module(inputs, labels, modalities)
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    assert inputs.grad is not None and torch.isfinite(inputs.grad).all()


def _defaults_only(cls) -> bool:
    from vireid.registry import accepted_parameters

    params, _, _ = accepted_parameters(cls)
    return all(p.default is not inspect.Parameter.empty for p in params.values())


@pytest.mark.parametrize("step", REGISTRIES["steps"].names())
def test_every_batch_step_keeps_the_batch_and_rejects_a_bad_parameter(step):
    from vireid.data.transforms import BatchContext

    cls = REGISTRIES["steps"].get(step)
    with pytest.raises(ConfigError, match=rf"unknown config key 'augment\.steps\[0\]\.no_such_param'"):
        REGISTRIES["steps"].check(step, {"no_such_param": 1}, "augment.steps[0]")
    if not _defaults_only(cls):
        # a step that cannot work without a parameter (gan_translate: the GAN run) says which one, in one sentence;
        # its batch behaviour is pinned in its own tests (tests/workflows/test_gan.py)
        from vireid.registry import accepted_parameters

        params, _, _ = accepted_parameters(cls)
        required = [n for n, p in params.items() if p.default is inspect.Parameter.empty]
        with pytest.raises(ConfigError, match=required[0]) as err:
            REGISTRIES["steps"].build_checked(step, {}, key="augment.steps[0]")
        assert "\n" not in str(err.value)
        return
    instance = REGISTRIES["steps"].build_checked(step, {}, key="augment.steps[0]")
    generator = torch.Generator().manual_seed(0)
    modalities = torch.tensor([0, 1] * 4)
    labels = torch.arange(4).repeat_interleave(2)
    raw = torch.randint(0, 256, (8, 3, 16, 8), generator=generator, dtype=torch.uint8)
    # a step runs either on the decoded uint8 batch (before normalize) or on the normalised float one
    for images in (raw, raw.float().div(255)):
        kwargs = {"context": BatchContext(labels=labels, modalities=modalities, rows=torch.arange(8),
                                          views=torch.zeros(8, dtype=torch.long))} if getattr(cls, "uses_context", False) else {}
        try:
            out = instance(images, modalities, generator, **kwargs)
        except (TypeError, RuntimeError) as err:
            last = err
            continue
        assert out.shape[1:] == (3, 16, 8) and out.shape[0] >= 8
        assert out.dtype == (torch.float32 if step == "normalize" else images.dtype)
        return
    pytest.fail(f"batch step {step!r} runs on neither a uint8 nor a float batch: {last}")


@pytest.mark.parametrize("reader", REGISTRIES["datasets"].names())
def test_every_reader_reports_a_missing_folder_and_a_bad_option_in_one_sentence(reader, tmp_path):
    from vireid.data.datasets import build_dataset

    with pytest.raises((DatasetError, VireidError)) as missing:
        build_dataset(reader, tmp_path / "not-there")
    assert "\n" not in str(missing.value) and "not-there" in str(missing.value)
    with pytest.raises(ConfigError, match=rf"dataset format '{reader}' has no option no_such_option"):
        build_dataset(reader, tmp_path, no_such_option=1)
