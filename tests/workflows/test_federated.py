"""Federated training (vireid.workflows.federated): aggregation maths on tiny tensors, private heads,
refusal of bad updates, resume, Flower's simulation with two clients, and a real server with two
clients (plus misbehaving ones) on localhost."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import REPO, tiny_overrides

TINY_PLUGIN = Path(__file__).resolve().parents[1] / "_federated_tiny.py"
ROGUE = Path(__file__).resolve().parents[1] / "_federated_rogue.py"
TOKEN = b"test-token-0123456789abcdef"


def fed_overrides(root: Path, out: Path, **extra) -> list[str]:
    """tiny_overrides with the plugin's two-convolution model (seconds per round, kilobytes per update)."""
    values = {"plugins": f"[{TINY_PLUGIN}]", "model.method": "fed_tiny_cnn", "model.params": "{}",
              "losses.hetero_center": "null", "train.threads": 1, "eval.trials": 1}
    values.update(extra)
    return tiny_overrides(root, out, **values)


def fed_config(root: Path, out: Path, **extra):
    from vireid.plugins import user_config

    return user_config(REPO / "configs" / "baseline_synth.yaml", fed_overrides(root, out, **extra))


def cli(*args: str, ok: bool = True):
    from vireid.cli import _register, app

    _register()
    result = CliRunner().invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, (result.output, result.exception)
    return result


# ----------------------------------------------------------------------------- maths on tiny tensors


def test_fedavg_weights_each_client_by_its_training_examples():
    from vireid.workflows.federated.updates import fedavg

    a = OrderedDict(w=np.array([1.0, 2.0], np.float32), b=np.array([[0.0]], np.float32))
    b = OrderedDict(w=np.array([4.0, 8.0], np.float32), b=np.array([[4.0]], np.float32))
    out = fedavg([(a, 1), (b, 3)])  # McMahan et al. 2017: sum_k n_k w_k / n
    np.testing.assert_allclose(out["w"], [3.25, 6.5])
    np.testing.assert_allclose(out["b"], [[3.0]])
    assert out["w"].dtype == np.float32 and list(out) == ["w", "b"]
    np.testing.assert_allclose(fedavg([(a, 5)])["w"], a["w"])


def test_fedprox_term_is_half_mu_squared_distance_with_gradient_mu_delta():
    from vireid.workflows.federated.updates import proximal_term

    layer = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 3.0]]))
    reference = {"weight": torch.tensor([[0.0, 1.0]])}
    term = proximal_term(layer, reference, mu=0.5)  # Li et al. 2020, Eq. 2
    assert term.item() == pytest.approx(0.25 * (1 + 4))
    term.backward()
    torch.testing.assert_close(layer.weight.grad, 0.5 * torch.tensor([[1.0, 2.0]]))


def test_dp_clipping_bounds_the_update_and_noise_has_the_set_scale():
    from vireid.errors import ConfigError
    from vireid.workflows.federated.updates import clip_and_noise

    ref = {"w": np.zeros(4, np.float32)}
    new = {"w": np.array([3.0, 4.0, 0.0, 0.0], np.float32)}  # update norm 5
    clipped, report = clip_and_noise(new, ref, 1.0, 0.0, np.random.default_rng(0))
    assert report["update_norm"] == pytest.approx(5.0) and report["scale"] == pytest.approx(0.2)
    np.testing.assert_allclose(clipped["w"], [0.6, 0.8, 0, 0], rtol=1e-6)
    small, _ = clip_and_noise(new, ref, 10.0, 0.0, np.random.default_rng(0))  # within the bound: unchanged
    np.testing.assert_allclose(small["w"], new["w"])
    big_ref = {"w": np.zeros(20000, np.float32)}
    noisy, _ = clip_and_noise({"w": np.zeros(20000, np.float32)}, big_ref, 0.5, 2.0, np.random.default_rng(0))
    assert np.std(noisy["w"]) == pytest.approx(1.0, rel=0.05)  # std = noise * clip
    with pytest.raises(ConfigError, match="give --dp-clip together with --dp-noise"):
        clip_and_noise(new, ref, None, 1.0, np.random.default_rng(0))


def test_split_by_camera_gives_each_client_its_own_cameras_of_both_modalities(tiny_synth_root):
    from vireid.data.datasets import build_dataset
    from vireid.errors import ConfigError
    from vireid.workflows.federated.split import split_records

    train = list(build_dataset("sysu-mm01", tiny_synth_root, train_includes_val=False).train)
    by_cam = split_records(train, 2, "camera")
    cams = [{r.camid for r in part} for part in by_cam]
    assert not cams[0] & cams[1]
    for part in by_cam:
        assert {r.modality for r in part} == {"visible", "infrared"}
    by_id = split_records(train, 3, "identity", seed=1)
    ids = [{r.orig_pid for r in part} for part in by_id]
    assert sum(len(i) for i in ids) == len({r.orig_pid for r in train}) and not (ids[0] & ids[1] | ids[1] & ids[2])
    with pytest.raises(ConfigError, match="at most 2 clients that each own cameras of both modalities"):
        split_records(train, 3, "camera")


# ----------------------------------------------------------------------------- server and client logic


@pytest.fixture()
def server(tiny_synth_root, tmp_path):
    from vireid.workflows.federated.server import FederatedServer, FederatedSettings

    cfg = fed_config(tiny_synth_root, tmp_path)
    srv = FederatedServer(cfg, tmp_path / "fed", TOKEN, FederatedSettings(rounds=3), log=lambda *_: None)
    yield srv
    srv.close()


def test_classifier_heads_are_private_and_a_client_refuses_to_send_them(server, tiny_synth_root, tmp_path):
    from vireid.workflows.federated.client import FederatedClient
    from vireid.workflows.federated.updates import UpdateRejected, sign

    assert "classifier.weight" in server.private and "classifier.weight" not in server.layout
    assert all(not k.endswith("num_batches_tracked") for k in server.layout)
    assert "body.0.weight" in server.layout and "neck.running_mean" in server.layout
    client = FederatedClient(fed_config(tiny_synth_root, tmp_path), tmp_path / "c0", TOKEN, name="c0")
    arrays, plan = server.begin_round()
    greedy = OrderedDict(arrays, **{"classifier.weight": np.zeros((2, 16), np.float32)})
    plan.signature = sign(TOKEN, greedy, "server", plan.server_round, plan.nonce)
    with pytest.raises(UpdateRejected, match="classifier.weight, which is this client's private identity classifier"):
        client.train_round(greedy, plan)
    with pytest.raises(UpdateRejected, match="not signed with this client's token"):
        FederatedClient(client.cfg, tmp_path / "c1", b"another-token-0123456789", name="c1").train_round(arrays, plan)
    assert not (tmp_path / "c0" / "last.pt").exists()  # nothing was trained


def _signed(arrays, server, token=TOKEN):
    return {"signature": sign_for(arrays, server, token)}


def sign_for(arrays, server, token=TOKEN):
    from vireid.workflows.federated.updates import sign

    return sign(token, arrays, "client", server.current.number, server.current.nonce)


def test_server_refuses_bad_updates_with_a_reason_and_averages_the_good_ones(server):
    arrays, _ = server.begin_round()
    server.sent(7)
    good = OrderedDict((k, v + 1.0) for k, v in arrays.items())
    bad_shape = OrderedDict(good, **{"body.0.weight": np.zeros((1, 1), np.float32)})
    bad_dtype = OrderedDict((k, v.astype(np.float64)) for k, v in good.items())
    missing = OrderedDict(list(good.items())[:-1])
    with_head = OrderedDict(good, **{"classifier.weight": np.zeros((5, 16), np.float32)})
    nan = OrderedDict(good, **{"neck.weight": np.full_like(good["neck.weight"], np.nan)})
    assert server.receive("good", good, 10, _signed(good, server))
    assert not server.receive("shape", bad_shape, 10, _signed(bad_shape, server))
    assert not server.receive("dtype", bad_dtype, 10, _signed(bad_dtype, server))
    assert not server.receive("token", good, 10, _signed(good, server, b"wrong-token-0123456789"))
    assert not server.receive("missing", missing, 10, _signed(missing, server))
    assert not server.receive("head", with_head, 10, _signed(with_head, server))
    assert not server.receive("nan", nan, 10, _signed(nan, server))
    server.fail("dropped", "connection lost")
    record = server.finish_round()
    reasons = {r["client"]: r["reason"] for r in record["refused"]}
    assert "of shape (1, 1) but the global model's is (8, 3, 3, 3)" in reasons["shape"]
    assert "as float64 but the global model holds float32" in reasons["dtype"]
    assert "not signed with the shared token" in reasons["token"]
    assert "lacks tensor" in reasons["missing"] and "classifier.weight" in reasons["head"]
    assert "NaN" in reasons["nan"]
    assert record["accepted"] == ["good"] and record["failed"] == [{"client": "dropped", "reason": "connection lost"}]
    for k in arrays:  # only the good update made the new global model
        np.testing.assert_allclose(server.arrays[k], good[k])
    saved = json.loads((server.run_dir / "federated.json").read_text())
    assert saved["rounds"][0]["refused"][0]["client"] == "shape"
    assert TOKEN.decode() not in (server.run_dir / "federated.json").read_text()


def test_a_round_without_valid_updates_keeps_the_model_and_resume_continues(server, tiny_synth_root, tmp_path):
    from vireid.workflows.federated.server import FederatedServer, FederatedSettings

    arrays, _ = server.begin_round()
    good = OrderedDict((k, v * 0.5) for k, v in arrays.items())
    server.receive("a", good, 4, _signed(good, server))
    server.finish_round()
    after_round_1 = OrderedDict((k, v.copy()) for k, v in server.arrays.items())
    server.begin_round()
    server.receive("a", good, 4, {"signature": "0" * 64})  # forged: refused
    record = server.finish_round()
    assert not record["updated"]
    for k in arrays:
        np.testing.assert_array_equal(server.arrays[k], after_round_1[k])
    server.close()
    resumed = FederatedServer(server.cfg, server.run_dir, TOKEN, FederatedSettings(rounds=3), resume=True,
                              log=lambda *_: None)
    try:
        assert resumed.round == 2 and len(resumed.history) == 2 and not resumed.done
        for k in arrays:
            np.testing.assert_array_equal(resumed.arrays[k], after_round_1[k])
        _, plan = resumed.begin_round()
        assert plan.server_round == 3
    finally:
        resumed.close()
    from vireid.engine.trainer import load_model_from_checkpoint

    model, _, _ = load_model_from_checkpoint(server.run_dir / "best.pt")  # vireid eval opens the global model
    np.testing.assert_array_equal(model.state_dict()["body.0.weight"].numpy(), after_round_1["body.0.weight"])


# ----------------------------------------------------------------------------- Flower


@pytest.mark.slow
def test_flower_simulation_trains_two_clients_with_private_heads(tiny_synth_root, tmp_path):
    pytest.importorskip("flwr", reason="Flower is an optional extra: pip install 'vireid[federated]'")
    run = tmp_path / "sim"
    result = cli("federated", "simulate", "--config", REPO / "configs" / "baseline_synth.yaml",
                 *fed_overrides(tiny_synth_root, tmp_path), "--clients", 2, "--split-by", "identity",
                 "--rounds", 2, "--strategy", "fedprox", "--mu", 0.1, "--dp-clip", 5.0, "--run-dir", run)
    assert "global model  sysu-all-single: mAP" in result.output
    summary = json.loads((run / "federated_summary.json").read_text())
    assert [len(r["accepted"]) for r in summary["history"]] == [2, 2]
    assert summary["history"][0]["bytes_up"] == 2 * summary["bytes_per_update"] > 0
    assert summary["test"][0]["mean"]["mAP"] > 0
    heads = []
    for i in range(2):
        ckpt = torch.load(run / "clients" / f"client_{i}" / "last.pt", weights_only=True)
        assert ckpt["state"]["epoch"] == 2  # one local epoch per round, resumed across rounds
        heads.append(ckpt["model"]["classifier.weight"].shape[0])
        assert ckpt["model"]["classifier.weight"].shape[0] == ckpt["num_classes"]
    assert sum(heads) == summary["clients"][0]["identities"] + summary["clients"][1]["identities"]
    global_ckpt = torch.load(run / "best.pt", weights_only=True)
    assert global_ckpt["federated"]["round"] == 2 and "classifier.weight" in global_ckpt["federated"]["private"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_real_server_and_two_clients_on_localhost_leave_out_bad_and_dropped_clients(tiny_synth_root, tmp_path):
    pytest.importorskip("flwr", reason="Flower is an optional extra: pip install 'vireid[federated]'")
    from vireid.workflows.federated.run import write_split

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN.decode() + "\n")
    write_split(fed_config(tiny_synth_root, tmp_path), 2, "identity", tmp_path / "split")
    address = f"127.0.0.1:{_free_port()}"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]))
    base = [sys.executable, "-m", "vireid", "federated"]
    common = ["--config", str(REPO / "configs" / "baseline_synth.yaml"), "--token-file", str(token_file)]
    procs = {"server": subprocess.Popen(
        [*base, "server", *common, *fed_overrides(tiny_synth_root, tmp_path), "--clients", "4", "--rounds", "2",
         "--address", address, "--run-dir", str(tmp_path / "fed"), "--connect-timeout", "300", "--round-timeout", "300"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)}
    for i in range(2):
        manifest = tmp_path / "split" / f"client_{i}" / "manifest.csv"
        procs[f"hospital{i}"] = subprocess.Popen(
            [*base, "client", *common, *fed_overrides(tiny_synth_root, tmp_path), "data.format=csv",
             f"data.root={manifest}", "--server", address, "--name", f"hospital{i}", "--run-dir", str(tmp_path / f"c{i}")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    for name, modes in (("rogue_a", "wrong-token,drop"), ("rogue_b", "float64,short")):
        procs[name] = subprocess.Popen([sys.executable, str(ROGUE), address, str(token_file), modes],
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    outputs = {}
    try:
        for name, proc in procs.items():
            outputs[name] = proc.communicate(timeout=500)[0]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    assert procs["server"].returncode == 0, outputs["server"]
    for i in range(2):
        assert procs[f"hospital{i}"].returncode == 0, outputs[f"hospital{i}"]
    history = json.loads((tmp_path / "fed" / "federated.json").read_text())["rounds"]
    assert [sorted(r["accepted"]) for r in history] == [["hospital0", "hospital1"]] * 2
    r1 = {r["client"]: r["reason"] for r in history[0]["refused"]}
    assert "not signed with the shared token" in r1["rogue-wrong-token"]
    assert "as float64 but the global model holds float32" in r1["rogue-float64"]
    assert len(history[1]["failed"]) == 1  # rogue_a died mid-round
    assert "sent 13 tensors but the global model shares 14" in history[1]["refused"][0]["reason"]
    assert "dropped out" in outputs["server"] and TOKEN.decode() not in outputs["server"]
    assert torch.load(tmp_path / "fed" / "best.pt", weights_only=True)["federated"]["round"] == 2
    assert (tmp_path / "c0" / "last.pt").is_file()


def test_cli_refuses_short_tokens_and_impossible_splits(tiny_synth_root, tmp_path):
    short = tmp_path / "short"
    short.write_text("abc\n")
    result = cli("federated", "client", "--token-file", short, ok=False)
    assert result.exit_code == 2 or "at least 16" in str(result.exception)
    assert "use at least 16" in (result.output + str(result.exception))
    result = cli("federated", "split", "--config", REPO / "configs" / "baseline_synth.yaml",
                 *fed_overrides(tiny_synth_root, tmp_path), "--clients", 3, "--split-by", "camera",
                 "--out", tmp_path / "split", ok=False)
    assert "at most 2 clients" in (result.output + str(result.exception))
    result = cli("federated", "split", "--config", REPO / "configs" / "baseline_synth.yaml",
                 *fed_overrides(tiny_synth_root, tmp_path), "--clients", 2, "--split-by", "camera",
                 "--out", tmp_path / "split")
    assert (tmp_path / "split" / "client_1" / "manifest.csv").is_file()


def test_missing_flower_and_bad_resume_are_one_sentence(tmp_path, monkeypatch):
    from vireid.errors import VireidError
    from vireid.workflows.federated.flower import require_flower

    monkeypatch.setitem(sys.modules, "flwr", None)  # as if Flower were not installed
    with pytest.raises(VireidError, match=r"pip install 'vireid\[federated\]'"):
        require_flower()
    monkeypatch.undo()
    result = cli("federated", "simulate", "--resume", tmp_path / "nothing", ok=False)
    assert "cannot resume" in (result.output + str(result.exception))
