"""Config loading: inheritance, dotted overrides, strict rejection of unknown keys and wrong types."""

from pathlib import Path

import pytest

from vireid.config import Config, load_config
from vireid.registry import check_kwargs
from vireid.errors import ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_defaults_and_overrides():
    cfg = load_config(None, ["optim.lr=0.01", "sched.milestones=[5, 9]", "train.amp=bf16", "data.options.trial=3"])
    assert isinstance(cfg, Config)
    assert cfg.optim.lr == 0.01 and isinstance(cfg.optim.lr, float)
    assert cfg.sched.milestones == [5, 9]
    assert cfg.train.amp == "bf16"
    assert cfg.data.options == {"trial": 3}


def test_int_accepted_for_float_but_not_string():
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0
    with pytest.raises(ConfigError, match=r"'optim.lr' expects a number"):
        load_config(None, ["optim.lr=fast"])


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.lrr'"):
        load_config(None, ["optim.lrr=0.1"])
    with pytest.raises(ConfigError, match=r"unknown config key 'trainer'"):
        load_config(None, ["trainer.epochs=3"])


def test_wrong_type_and_choice():
    with pytest.raises(ConfigError, match=r"'train.epochs' expects an integer"):
        load_config(None, ["train.epochs=2.5"])
    with pytest.raises(ConfigError, match=r"'train.amp' must be one of auto, none, bf16, fp16"):
        load_config(None, ["train.amp=fp8"])
    with pytest.raises(ConfigError, match=r"'train.channels_last' expects true or false"):
        load_config(None, ["train.channels_last=3"])


def test_malformed_override():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["optim.lr"])


def test_loss_table_validated():
    with pytest.raises(ConfigError, match=r"unknown config key 'losses.triplet.wieght'"):
        load_config(None, ["losses.triplet.wieght=2"])
    cfg = load_config(None, ["losses.triplet.weight=2"])
    assert cfg.loss_terms()["triplet"].weight == 2.0


def test_inheritance(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("optim: {lr: 0.5, momentum: 0.8}\ntrain: {epochs: 7}\n")
    child = tmp_path / "child.yaml"
    child.write_text("_base_: base.yaml\noptim: {lr: 0.25}\n")
    cfg = load_config(child)
    assert cfg.optim.lr == 0.25 and cfg.optim.momentum == 0.8 and cfg.train.epochs == 7


def test_missing_and_cyclic_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    a = tmp_path / "a.yaml"
    a.write_text("_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="inherits from itself"):
        load_config(a)


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.train.epochs > 0


def test_the_demo_trains_demo_synth_the_base_recipe_plus_the_searched_changes():
    """demo_synth = baseline_synth + the changes its recipe search chose (docs/results.md, "The demo's recipe"):
    the tone curve, 50 epochs validated every 4, no random erasing, AdamW with decoupled decay 0.05, test-time
    flip; every other setting is baseline_synth's."""
    import inspect
    from dataclasses import asdict

    from vireid.cli.demo import demo_command
    from vireid.workflows.demo import run_demo

    assert inspect.signature(run_demo).parameters["config"].default == "demo_synth"
    assert inspect.signature(demo_command).parameters["config"].default.default == "demo_synth"
    demo_cfg, base = asdict(load_config(CONFIGS / "demo_synth.yaml")), asdict(load_config(CONFIGS / "baseline_synth.yaml"))
    steps = demo_cfg["augment"].pop("steps")
    assert [s["type"] for s in steps] == ["tone_curve"] and steps[0]["p"] == 0.5 and steps[0]["before"] == "normalize"
    assert demo_cfg["train"].pop("epochs") == 50 and demo_cfg["train"].pop("eval_every") == 4
    assert demo_cfg["augment"].pop("random_erasing") == 0.0 and base["augment"].pop("random_erasing") == 0.5
    assert (demo_cfg["optim"].pop("name"), demo_cfg["optim"].pop("weight_decay")) == ("adamw", 0.05)
    assert (base["optim"].pop("name"), base["optim"].pop("weight_decay")) == ("adam", 0.0005)
    assert demo_cfg["eval"].pop("flip") is True and base["eval"].pop("flip") is False
    base["augment"].pop("steps"), base["train"].pop("epochs"), base["train"].pop("eval_every")
    demo_cfg.pop("name"), base.pop("name")
    assert demo_cfg == base  # every other setting is baseline_synth's


def test_check_kwargs_names_key():
    def method(num_classes: int, backbone: str = "resnet50", gem_p: float = 3.0):
        return None

    assert check_kwargs(method, {"backbone": "resnet18", "gem_p": 2}, "model.params") == {"backbone": "resnet18", "gem_p": 2.0}
    with pytest.raises(ConfigError, match=r"unknown config key 'model.params.backbon'"):
        check_kwargs(method, {"backbon": "x"}, "model.params")
    with pytest.raises(ConfigError, match=r"'model.params.gem_p' expects a number"):
        check_kwargs(method, {"gem_p": "three"}, "model.params")


def test_check_kwargs_follows_kwargs_to_the_base_class():
    """A method that changes a few of its base's defaults and forwards ``**kwargs`` accepts (and
    type-checks) the base's keys, takes its own defaults first, and still rejects unknown keys."""
    from vireid.registry import accepted_parameters
    from vireid.modeling.methods.dfw_sln import DFWSLNReID

    params, _, accepts_any = accepted_parameters(DFWSLNReID)
    assert not accepts_any
    assert params["specific_stages"].default == 2 and params["non_local"].default is None  # its own defaults
    assert params["gem_p"].default == 3.0 and "last_stride" in params  # the base's, through **baseline_params
    assert check_kwargs(DFWSLNReID, {"gem_p": 2, "num_branches": 3}, "model.params") == {"gem_p": 2.0, "num_branches": 3}
    with pytest.raises(ConfigError, match=r"'model.params.gem_p' expects a number"):
        check_kwargs(DFWSLNReID, {"gem_p": "three"}, "model.params")
    with pytest.raises(ConfigError, match=r"unknown config key 'model.params.num_branch'.*last_stride"):
        check_kwargs(DFWSLNReID, {"num_branch": 3}, "model.params")


def test_configs_command_lists_and_prints():
    from typer.testing import CliRunner

    import vireid.cli.commands  # noqa: F401
    from vireid.cli import app

    listing = CliRunner().invoke(app, ["configs"])
    assert listing.exit_code == 0, listing.output
    assert "  agw_sysu " in listing.output and "AGW cross-modality baseline" in listing.output
    assert "Ablation grids" in listing.output and "  dfw_sln_synth " in listing.output
    full = CliRunner().invoke(app, ["configs", "dfw_sln_regdb", "train.epochs=3"])
    assert full.exit_code == 0, full.output
    import yaml

    tree = yaml.safe_load(full.output)
    assert tree["train"]["epochs"] == 3 and tree["model"]["method"] == "dfw_sln"  # the base's method, merged
    assert tree["model"]["params"]["dfw_alpha"] == 0.2  # RegDB's own value over the SYSU base
