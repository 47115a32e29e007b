"""Reading AGW / CAJ reference checkpoints safely (``vireid.workflows.import_agw``), on small files.

The full-size import and the embedding parity are in test_agw_parity.py; these use tiny state
dicts: the weights_only loading with its numpy allow-list (numpy 2 and numpy 1 module names),
the refusal of pickled code, the ``module.`` prefix, the layout read from the keys, and the
one-sentence errors of ``vireid import agw``.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from vireid.errors import VireidError
from vireid.workflows.import_agw import (
    default_config_name,
    import_reference_checkpoint,
    load_reference_checkpoint,
    model_params,
    reference_layout,
    strip_module_prefix,
    unused_by_reference,
)

MARKER_NAME = "unpickled-code-ran"


class _Payload:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _small_state(classes: int = 7, non_local: bool = True) -> dict[str, torch.Tensor]:
    state = {
        "visible_module.visible.conv1.weight": torch.zeros(64, 3, 7, 7),
        "base_resnet.base.layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1),
        "bottleneck.weight": torch.ones(2048),
        "classifier.weight": torch.zeros(classes, 2048),
    }
    if non_local:
        state.update({"NL_2.0.g.0.weight": torch.zeros(1, 512, 1, 1), "NL_2.1.g.0.weight": torch.zeros(1, 512, 1, 1),
                      "NL_3.2.theta.weight": torch.zeros(1, 1024, 1, 1)})
    return state


def _save(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


def test_reference_checkpoint_loads_with_numpy_metrics(tmp_path):
    saved = {"net": _small_state(), "cmc": np.linspace(0.5, 1.0, 20), "mAP": np.float64(0.4765), "mINP": np.mean([0.35]),
             "epoch": 48}
    loaded = load_reference_checkpoint(_save(saved, tmp_path / "best.t"))
    assert loaded["epoch"] == 48 and float(loaded["mAP"]) == pytest.approx(0.4765)
    assert np.allclose(loaded["cmc"], saved["cmc"]) and set(loaded["net"]) == set(saved["net"])
    torch.save(saved, tmp_path / "legacy.t", _use_new_zipfile_serialization=False)  # torch < 1.6 files
    assert np.allclose(load_reference_checkpoint(tmp_path / "legacy.t")["cmc"], saved["cmc"])


def test_numpy_1_module_names_are_allowed_too(tmp_path):
    """Checkpoints written under numpy 1 name numpy.core.multiarray, not numpy._core.multiarray."""
    path = _save({"net": _small_state(), "cmc": np.arange(3, dtype=np.float64), "mAP": np.float64(0.5)}, tmp_path / "np2.t")
    with zipfile.ZipFile(path) as source:
        members = {info.filename: source.read(info.filename) for info in source.infolist()}
    pickle_name = next(name for name in members if name.endswith("data.pkl"))
    data = members[pickle_name]
    if b"numpy._core.multiarray" in data:  # protocol 2 GLOBAL opcodes are newline-terminated text: renaming is safe
        members[pickle_name] = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in members[pickle_name]
    old = tmp_path / "np1.t"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as target:
        for name, content in members.items():
            target.writestr(name, content)
    old.write_bytes(buffer.getvalue())
    loaded = load_reference_checkpoint(old)
    assert np.array_equal(loaded["cmc"], np.arange(3)) and float(loaded["mAP"]) == 0.5


@pytest.mark.parametrize("payload", ["callable", "object"])
def test_pickled_code_is_refused_in_one_sentence_and_never_runs(tmp_path, payload):
    marker = tmp_path / MARKER_NAME
    extra = print if payload == "callable" else _Payload(marker)
    path = _save({"net": _small_state(), "hook": extra}, tmp_path / "evil.t")
    with pytest.raises(VireidError) as err:
        load_reference_checkpoint(path)
    message = str(err.value)
    assert "pickled code or objects" in message and "weights_only=True" in message and "\n" not in message
    assert ("builtins.print" in message) if payload == "callable" else ("getattr" in message and "pathlib" in message)
    assert not marker.exists()


def test_bare_state_dicts_prefixes_and_bad_files(tmp_path):
    state = _small_state()
    assert set(load_reference_checkpoint(_save(state, tmp_path / "bare.t"))["net"]) == set(state)
    prefixed = {f"module.{k}": v for k, v in state.items()}
    assert strip_module_prefix(prefixed) == state and strip_module_prefix(state) == state
    with pytest.raises(VireidError, match="does not exist"):
        load_reference_checkpoint(tmp_path / "missing.t")
    with pytest.raises(VireidError, match="expected a dict with a 'net' state_dict"):
        load_reference_checkpoint(_save({"model": [1, 2]}, tmp_path / "other.t"))
    (tmp_path / "garbage.t").write_bytes(b"not a torch file")
    with pytest.raises(VireidError, match="cannot be read"):
        load_reference_checkpoint(tmp_path / "garbage.t")


def test_layout_and_model_params_follow_the_keys():
    layout = reference_layout(_small_state(classes=206))
    assert (layout.num_classes, layout.non_local, layout.inter_channels) == (206, True, 1)
    assert layout.non_local_counts == {2: 2, 3: 3}
    assert model_params(layout)["non_local"] == "agw" and model_params(layout)["pooling"] == "gem_agw"
    assert model_params(layout, "pool")["embedding"] == "features" and model_params(layout)["embedding"] == "bn_features"
    half = {**_small_state(), "NL_2.0.g.0.weight": torch.zeros(256, 512, 1, 1), "NL_2.1.g.0.weight": torch.zeros(256, 512, 1, 1),
            "NL_3.2.g.0.weight": torch.zeros(512, 1024, 1, 1)}
    half_params = model_params(reference_layout(half))  # a model.py edited to C/2 inner channels
    assert half_params["non_local"] == {"stage2": 2, "stage3": 3} and half_params["non_local_reduction"] == 2
    base = reference_layout(_small_state(non_local=False))  # train.py --method base: no non-local, average pooling
    assert model_params(base)["non_local"] is None and model_params(base)["pooling"] == "avg"
    assert default_config_name(395) == "agw_sysu" and default_config_name(206) == "agw_regdb"
    with pytest.raises(VireidError, match="pass --config"):
        default_config_name(100)
    with pytest.raises(VireidError, match="classifier.weight"):
        reference_layout({"bottleneck.weight": torch.ones(2048)})
    assert unused_by_reference("thermal_module.thermal.layer3.0.conv1.weight")
    assert unused_by_reference("base_resnet.base.bn1.running_mean")
    assert not unused_by_reference("base_resnet.base.layer3.0.conv1.weight")
    assert not unused_by_reference("visible_module.visible.bn1.weight")


def test_import_errors_are_one_sentence(tmp_path):
    path = _save({"net": _small_state(classes=100)}, tmp_path / "odd.t")
    with pytest.raises(VireidError, match="matches no known dataset") as err:
        import_reference_checkpoint(path, tmp_path / "run")
    assert "\n" not in str(err.value)
    with pytest.raises(VireidError, match="--embedding must be fc or pool"):
        import_reference_checkpoint(path, tmp_path / "run", embedding="bn")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "best.pt").write_bytes(b"")
    with pytest.raises(VireidError, match="already holds a run"):
        import_reference_checkpoint(path, taken)
    with pytest.raises(VireidError, match="neither a file nor a shipped config"):
        import_reference_checkpoint(path, tmp_path / "run", config="no_such_recipe")


def test_cli_reports_a_bad_checkpoint_in_one_line(tmp_path):
    from typer.testing import CliRunner

    import vireid.cli.commands  # noqa: F401  (registers the sub-commands)
    from vireid.cli import app

    path = _save({"net": _small_state(), "hook": print}, tmp_path / "evil.t")
    result = CliRunner().invoke(app, ["import", "agw", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code != 0 and isinstance(result.exception, VireidError)
    assert not (tmp_path / "run").exists()
