"""The registries: one checked build path (Registry.check / build_checked), one registration point
(vireid.builtins) and ``vireid list``."""

from __future__ import annotations

import re

import subprocess
import sys

import pytest
from typer.testing import CliRunner

import vireid.cli.commands  # noqa: F401  (registers every command)
from conftest import REPO
from vireid.builtins import REGISTRIES
from vireid.cli import app
from vireid.errors import ConfigError
from vireid.registry import Registry, first_sentence

runner = CliRunner()


def _toy_registry() -> Registry:
    parts: Registry = Registry("widget")

    @parts.register("knob")
    class Knob:
        """A knob. It turns."""

        def __init__(self, size: int, colour: str = "red", ratio: float = 1.0) -> None:
            self.size, self.colour, self.ratio = size, colour, ratio

    return parts


def test_build_checked_coerces_and_builds():
    knob = _toy_registry().build_checked("knob", {"size": 3, "ratio": 2}, key="parts.knob.params")
    assert (knob.size, knob.colour, knob.ratio) == (3, "red", 2.0) and isinstance(knob.ratio, float)


def test_build_checked_names_the_bad_parameter_and_the_valid_ones():
    parts = _toy_registry()
    with pytest.raises(ConfigError, match=r"unknown config key 'parts\.knob\.params\.sise'; valid keys there: colour, ratio, size"):
        parts.build_checked("knob", {"sise": 3}, key="parts.knob.params")
    with pytest.raises(ConfigError, match=r"parts\.knob\.params\.size"):
        parts.build_checked("knob", {"size": "three"}, key="parts.knob.params")


def test_build_checked_names_a_missing_parameter():
    with pytest.raises(ConfigError, match=r"config key 'parts\.knob\.params' lacks size, which widget 'knob' needs; "
                                          r"its parameters are colour, ratio, size"):
        _toy_registry().build_checked("knob", {}, key="parts.knob.params")


def test_unknown_name_is_one_config_sentence():
    with pytest.raises(ConfigError, match=r"config key 'parts\.kind': unknown widget 'nob'; registered: knob"):
        _toy_registry().check("nob", {}, "parts.params", where="config key 'parts.kind'")
    empty: Registry = Registry("gadget")
    with pytest.raises(KeyError, match=r"registered: none \(vireid's own parts are registered by importing vireid\.builtins\)"):
        empty.get("x")


def test_the_four_config_paths_share_the_checked_errors(tmp_path):
    """The method, a loss, a dataset option and a batch step: each unknown name or parameter is one sentence."""
    from vireid.config import load_config
    from vireid.engine.trainer import validate_config

    cases = {
        "model.method=nope": r"config key 'model.method': unknown method 'nope'",
        "model.params.backbon=resnet18": r"unknown config key 'model.params.backbon'",
        "losses.triplet.params.margn=0.3": r"unknown config key 'losses.triplet.params.margn'",
        "losses.extra.type=nope": r"config key 'losses.extra': unknown loss 'nope'",
        "data.options.trail=2": r"unknown config key 'data.options.trail'",
        "augment.steps=[{type: grayscale, q: 0.5}]": r"unknown config key 'augment.steps\[0\].q'; valid keys there: .*p",
        "augment.steps=[{type: nope}]": r"config key 'augment.steps\[0\]': unknown transform step 'nope'",
    }
    for override, message in cases.items():
        cfg = load_config(REPO / "src/vireid/configs/baseline_synth.yaml", [override, f"data.root={tmp_path}"])
        with pytest.raises(ConfigError, match=message):
            validate_config(cfg)


def test_registries_are_filled_by_the_registration_point_only():
    code = (
        "import vireid.modeling, vireid.data.datasets, vireid.data.transforms\n"
        "from vireid.modeling.registries import METHODS, LOSSES\n"
        "from vireid.data.datasets import DATASETS\n"
        "print(len(METHODS), len(LOSSES), len(DATASETS))\n"
        "import vireid.builtins\n"
        "print(len(METHODS), len(LOSSES), len(DATASETS))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    before = [int(x) for x in out[0].split()]
    after = [int(x) for x in out[1].split()]
    assert before[0] <= 1 and before[2] == 0  # the package re-exports BaselineReID; nothing else registers
    assert after[0] >= 5 and after[1] >= 10 and after[2] >= 6


def test_vireid_list_prints_every_registry_and_entry():
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    for key, registry in REGISTRIES.items():
        assert f"\n{key} ({len(registry)}) -- " in f"\n{result.output}"
        for name in registry:
            # one line per entry: the name, then its summary when it has one (a test's probe part may have none)
            assert re.search(rf"^  {re.escape(name)}( |$)", result.output, re.M), name
    assert {"methods", "losses", "backbones", "modules", "heads", "steps", "datasets", "protocols", "extras"} <= set(REGISTRIES)
    assert "Batch-hard triplet loss (Hermans et al., \"In defense of the triplet loss\", 2017, eq. 5)." in result.output


def test_vireid_list_one_registry_and_a_bad_name():
    result = runner.invoke(app, ["list", "loss"])
    assert result.exit_code == 0 and result.output.startswith("losses (") and "methods (" not in result.output
    assert "readers" not in result.output
    readers = runner.invoke(app, ["list", "readers"])
    assert readers.output.startswith("datasets (") and "sysu-mm01" in readers.output
    bad = runner.invoke(app, ["list", "lossses"])
    assert bad.exit_code != 0 and "there is no registry 'lossses'; choose one of methods, losses" in str(bad.exception)


def test_vireid_list_shows_a_plugin_part(tmp_path, monkeypatch):
    plugin = tmp_path / "my_loss.py"
    plugin.write_text(
        "from torch import nn\nfrom vireid.modeling.registries import LOSSES\n\n"
        "@LOSSES.register('my_listed_loss')\nclass MyLoss(nn.Module):\n"
        "    \"\"\"My own loss for the list test. Second sentence.\"\"\"\n"
    )
    monkeypatch.chdir(tmp_path)
    try:
        result = runner.invoke(app, ["list", "losses", "--plugins", str(plugin)])
    finally:
        REGISTRIES["losses"]._items.pop("my_listed_loss", None)  # keep the process's registry as shipped
    assert result.exit_code == 0, result.output
    assert "my_listed_loss" in result.output and "My own loss for the list test." in result.output
    assert "Second sentence" not in result.output


def test_first_sentence_skips_abbreviations_and_parentheses():
    assert first_sentence("MMT loss (dual-path Swin paper, eq. 1). More.") == "MMT loss (dual-path Swin paper, eq. 1)."
    assert first_sentence("Random erasing (Zhong et al. AAAI 2020, Alg. 1) on images. Then") == \
        "Random erasing (Zhong et al. AAAI 2020, Alg. 1) on images."
    assert first_sentence("No full stop") == "No full stop"


def test_the_architecture_page_examples_run():
    """docs/architecture.md's Python example and the commands it names work as written."""
    import re

    page = (REPO / "docs" / "architecture.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert blocks
    for block in blocks:
        scope: dict = {}
        exec(compile(block, "docs/architecture.md", "exec"), scope)  # noqa: S102 - the page's own example
    assert scope["model"].__class__.__name__ == "BaselineReID"
    for line in re.findall(r"```bash\n(.*?)```", page, flags=re.S)[0].splitlines():
        args = line.split("#")[0].split()[1:]
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and result.output.startswith(f"{args[1] if len(args) > 1 else 'methods'} ("), line
