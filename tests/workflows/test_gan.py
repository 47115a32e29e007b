"""Cross-modality image generation (issue 18 §1): CycleGAN-style translator, translation, online/offline use."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vireid.errors import ConfigError, DatasetError, VireidError

TINY_GAN = {
    "gan.generator": "{channels: 4, blocks: 1, downsampling: 2}",
    "gan.discriminator": "{channels: 4, layers: 1}",
    "gan.batch_size": 2,
    "gan.steps_per_epoch": 1,
    "gan.decay_epochs": 0,
    "gan.pool_size": 2,
    "gan.samples": 2,
    "train.progress": "false",
    "train.threads": 1,
    "train.log_every": 1,
}


def gan_overrides(root: Path, out: Path, **extra) -> list[str]:
    values = {"data.format": "sysu-mm01", "data.root": str(root), "data.options": "{train_includes_val: false}",
              "data.height": 64, "data.width": 32, "data.workers": 1, "output_dir": str(out), **TINY_GAN}
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def _tiny_reid_checkpoint(path: Path) -> Path:
    """A saved ReID run of the conftest's two-convolution model (loads through load_model_from_checkpoint)."""
    from conftest import _register_tiny_cnn
    from vireid.config import Config

    _register_tiny_cnn()
    from vireid.modeling import METHODS

    cfg = Config()
    cfg.model.method, cfg.model.params = "test_tiny_cnn", {}
    cfg.data.height, cfg.data.width = 64, 32
    torch.manual_seed(0)
    model = METHODS.get("test_tiny_cnn")(num_classes=4)
    torch.save({"config": cfg.to_dict(), "model": model.state_dict(), "num_classes": 4}, path)
    return path


def _cli(*args: str):
    from typer.testing import CliRunner

    import vireid.cli.commands  # noqa: F401  (registers the sub-commands)
    from vireid.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def gan_run(tiny_synth_root, tmp_path_factory):
    """A 2-epoch tiny GAN run (one step per epoch) with the identity-preserving term, trained by the CLI."""
    out = tmp_path_factory.mktemp("gan")
    reid = _tiny_reid_checkpoint(out / "reid.pt")
    result = _cli("gan", "train", "--config", "gan_synth", "--run-dir", str(out / "run"),
                  *gan_overrides(tiny_synth_root, out, **{"train.epochs": 2, "gan.reid_model": str(reid)}))
    assert result.exit_code == 0, result.output
    assert "vireid gan translate" in result.output
    return out / "run"


# ----------------------------------------------------------------------------- losses


def test_lsgan_cycle_and_identity_losses_on_tiny_tensors():
    from vireid.modeling.gan.losses import discriminator_loss, l1_loss, lsgan_loss

    p = torch.tensor([[0.5, 1.0], [0.0, 2.0]])
    assert lsgan_loss(p, True).item() == pytest.approx((0.25 + 0 + 1 + 1) / 4)  # mean (p - 1)^2
    assert lsgan_loss(p, False).item() == pytest.approx((0.25 + 1 + 0 + 4) / 4)  # mean p^2
    real, fake = torch.tensor([1.0, 0.5]), torch.tensor([0.0, 0.5])
    assert discriminator_loss(real, fake).item() == pytest.approx(0.5 * ((0 + 0.25) / 2 + (0 + 0.25) / 2))
    assert l1_loss(torch.tensor([1.0, -1.0, 0.5]), torch.tensor([0.0, 0.0, 0.0])).item() == pytest.approx(2.5 / 3)


def test_generator_objective_weights_cycle_and_identity_as_cyclegan():
    """One generator update: the logged terms equal lambda_cycle * (L1 cycles) and lambda_cycle * lambda_identity *
    (L1 identity mappings), computed here by hand from the same networks before the step."""
    from vireid.modeling.gan.losses import l1_loss, lsgan_loss
    from vireid.modeling.gan.networks import CycleGAN
    from vireid.workflows.gan import GanTrainer

    torch.manual_seed(0)
    m = CycleGAN({"channels": 4, "blocks": 1, "downsampling": 1}, {"channels": 4, "layers": 1})
    v, i = torch.rand(2, 3, 8, 8) * 2 - 1, torch.rand(2, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        cycle = 10 * (l1_loss(m.ir2vis(m.vis2ir(v)), v) + l1_loss(m.vis2ir(m.ir2vis(i)), i))
        ident = 10 * 0.5 * (l1_loss(m.vis2ir(i), i) + l1_loss(m.ir2vis(v), v))
        adv = lsgan_loss(m.d_ir(m.vis2ir(v)), True) + lsgan_loss(m.d_vis(m.ir2vis(i)), True)
    trainer = GanTrainer.__new__(GanTrainer)  # the update alone, without data or a run folder
    from vireid.engine.precision import resolve_precision
    from vireid.modeling.gan.pool import ImagePool
    from vireid.workflows.gan import GanConfig

    trainer.cfg, trainer.model, trainer.device, trainer.reid = GanConfig(), m, torch.device("cpu"), None
    trainer.precision = resolve_precision("none", "cpu")
    trainer.opt_g = torch.optim.Adam([p for g in m.generators() for p in g.parameters()], lr=2e-4, betas=(0.5, 0.999))
    trainer.opt_d = torch.optim.Adam([p for d in m.discriminators() for p in d.parameters()], lr=2e-4, betas=(0.5, 0.999))
    trainer.scaler_g = torch.amp.GradScaler("cpu", enabled=False)
    trainer.scaler_d = torch.amp.GradScaler("cpu", enabled=False)
    trainer.pools = {"ir": ImagePool(0), "vis": ImagePool(0)}
    stats = trainer.train_step(v, i, torch.Generator().manual_seed(0))
    assert stats["cycle"] == pytest.approx(float(cycle), rel=1e-5)
    assert stats["identity"] == pytest.approx(float(ident), rel=1e-5)
    assert stats["g_adv"] == pytest.approx(float(adv), rel=1e-5)
    assert stats["loss_g"] == pytest.approx(float(cycle + ident + adv), rel=1e-5)
    # train.amp=bf16: the networks compute in bf16 under autocast, the losses stay finite fp32 numbers
    seen = set()
    m.vis2ir.model[1].register_forward_hook(lambda mod, inp, out: seen.add(out.dtype))
    trainer.precision = resolve_precision("bf16", "cpu")
    stats = trainer.train_step(v, i, torch.Generator().manual_seed(0))
    assert seen == {torch.bfloat16} and all(np.isfinite(list(stats.values())))


def test_learning_rate_is_constant_then_decays_linearly_as_cyclegan():
    """CycleGAN's linear policy with n_epochs = 2, n_epochs_decay = 2: factors 1, 1, 2/3, 1/3."""
    from vireid.workflows.gan import _lr_factor

    assert [_lr_factor(e, 4, 2) for e in range(4)] == pytest.approx([1, 1, 2 / 3, 1 / 3])
    assert [_lr_factor(e, 3, 0) for e in range(3)] == [1, 1, 1]


def test_networks_match_cyclegan_sizes():
    """Default settings build CycleGAN's ResNet-9-block generator (11.378 M parameters) and 70x70 PatchGAN
    (2.765 M), the counts the reference repository prints."""
    from vireid.modeling.gan.networks import CycleGAN

    with torch.device("meta"):
        m = CycleGAN()
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert round(count(m.vis2ir) / 1e6, 3) == 11.378 and round(count(m.d_ir) / 1e6, 3) == 2.765
    tiny = CycleGAN({"channels": 4, "blocks": 1}, {"channels": 4, "layers": 2})
    x = torch.rand(2, 3, 64, 32) * 2 - 1
    y = tiny.vis2ir(x)
    assert y.shape == x.shape and float(y.detach().abs().max()) <= 1.0
    assert tiny.d_ir(x).shape[:2] == (2, 1)


def test_image_pool_returns_history_after_it_fills():
    from vireid.modeling.gan.pool import ImagePool

    pool = ImagePool(2)
    gen = torch.Generator().manual_seed(0)
    first = torch.arange(2.0).view(2, 1, 1, 1)
    assert torch.equal(pool.query(first, gen), first)  # filling: the new images themselves
    new = torch.full((200, 1, 1, 1), 9.0)
    shown = pool.query(new, gen).flatten()
    from_history = (shown != 9.0).sum().item()
    assert 1 <= from_history <= 2  # an old image can be handed out once (it is replaced by a 9)
    assert 0.3 < (shown == 9.0).float().mean().item() <= 1.0
    state = pool.state_dict()
    again = ImagePool(2)
    again.load_state_dict(state)
    assert torch.equal(torch.stack(again.images), torch.stack(pool.images))


# ----------------------------------------------------------------------------- identity preservation


def test_identity_preserving_term_is_zero_for_identical_embeddings_and_trains_only_the_generator(tmp_path):
    from vireid.engine.trainer import load_model_from_checkpoint
    from vireid.modeling.gan.losses import IdentityPreservingLoss, embedding_distance
    from vireid.modeling.gan.networks import ResnetGenerator

    reid, _, _ = load_model_from_checkpoint(_tiny_reid_checkpoint(tmp_path / "reid.pt"))
    reid.train()  # the loss must put it back in evaluation mode
    before = {k: v.clone() for k, v in reid.state_dict().items()}
    term = IdentityPreservingLoss(reid, "cosine")
    assert not reid.training and not any(p.requires_grad for p in reid.parameters())
    x = torch.rand(4, 3, 64, 32) * 2 - 1
    codes = torch.tensor([0, 0, 1, 1])
    assert term(x, codes, x.clone(), codes).item() == pytest.approx(0.0, abs=1e-6)
    gen = ResnetGenerator(channels=4, blocks=1)
    value = term(x, codes, gen(x), 1 - codes)
    assert value.item() > 0
    value.backward()
    assert all(p.grad is not None for p in gen.parameters()) and any(p.grad.abs().sum() > 0 for p in gen.parameters())
    assert all(p.grad is None for p in reid.parameters())
    assert all(torch.equal(before[k], v) for k, v in reid.state_dict().items())  # BatchNorm statistics untouched
    a, b = torch.randn(5, 8), torch.randn(5, 8)
    cos = torch.nn.functional.cosine_similarity(a, b).mean().item()
    assert embedding_distance(a, b, "cosine").item() == pytest.approx(1 - cos, abs=1e-5)
    assert embedding_distance(a, b, "l2").item() == pytest.approx(2 - 2 * cos, abs=1e-5)


def test_frechet_distance_hand_computed():
    from vireid.workflows.gan import frechet_distance

    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, 2.0, 2.0])
    assert frechet_distance(a, a + shift) == pytest.approx(9.0, abs=1e-6)  # |mu_a - mu_b|^2, same covariance
    # 1-D, equal means, variances 2 and 8 (ddof 1): 2 + 8 - 2 sqrt(2 * 8) = 2
    x = np.array([[-1.0], [1.0]])
    assert frechet_distance(x, 2 * x) == pytest.approx(2.0)


# ----------------------------------------------------------------------------- training, resume, translation


def test_training_writes_grids_log_and_resumes_exactly(gan_run, tiny_synth_root, tmp_path, monkeypatch):
    from vireid.modeling.gan.io import load_gan_checkpoint
    from vireid.workflows.gan import GanTrainer, config_of_run, load_gan_config, train_gan

    assert sorted(p.name for p in (gan_run / "samples").iterdir()) == ["epoch_001.png", "epoch_002.png"]
    assert "gan epoch 2/2" in (gan_run / "log.txt").read_text()
    records = [json.loads(line) for line in (gan_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2] and "reid" in records[-1]
    # the same run interrupted (Ctrl+C) in its second epoch, then continued with --resume, ends with the same weights
    reid = config_of_run(gan_run).gan.reid_model
    cfg = load_gan_config("gan_synth", gan_overrides(tiny_synth_root, tmp_path, **{"train.epochs": 2, "gan.reid_model": reid}))
    original = GanTrainer.train_epoch

    def interrupted(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(GanTrainer, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_gan(cfg, tmp_path / "run")
    monkeypatch.undo()
    assert "continue with: vireid gan train --resume" in (tmp_path / "run" / "log.txt").read_text()
    assert load_gan_checkpoint(tmp_path / "run")["epoch"] == 1
    result = _cli("gan", "train", "--resume", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    a, b = load_gan_checkpoint(gan_run), load_gan_checkpoint(tmp_path / "run")
    assert a["step"] == b["step"] == 2
    for key, tensor in a["networks"].items():
        assert torch.equal(tensor, b["networks"][key]), key
    assert torch.equal(a["pools"]["ir"]["images"], b["pools"]["ir"]["images"])
    epochs = [json.loads(x)["epoch"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if json.loads(x)["kind"] == "epoch"]
    assert epochs == [1, 2]


def test_translate_writes_a_folder_dataset_keeping_identity_and_camera(gan_run, tiny_synth_root, tmp_path):
    from vireid.data.datasets import build_dataset
    from vireid.data.datasets.folder import FolderDataset
    from vireid.data.images import decode_image
    from vireid.workflows.gan import translate_dataset

    source = build_dataset("sysu-mm01", tiny_synth_root, train_includes_val=False)
    out = tmp_path / "translated"
    result = _cli("gan", "translate", str(gan_run), "--images", str(tiny_synth_root), "--out", str(out), "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "train: " in result.output and "infrared" in result.output
    read = FolderDataset(out)  # vireid's folder reader accepts it as a training set
    src_by_path = {r.path: r for r in build_dataset("sysu-mm01", tiny_synth_root).train}
    rows = list(csv.DictReader((out / "translated.csv").open()))
    assert len(rows) == len(read.train) == len(src_by_path)
    flipped = {"visible": "infrared", "infrared": "visible"}
    by_path = {r.path: r for r in read.train}
    for row in rows:
        src, new = src_by_path[row["source"]], by_path[str(out / row["path"])]
        assert (new.orig_pid, new.camid, new.modality) == (src.orig_pid, src.camid, flipped[src.modality])
    assert decode_image(rows[0] and str(out / rows[0]["path"])).shape[:2] == (64, 32)
    assert len({r.orig_pid for r in source.train} - {r.orig_pid for r in read.train}) == 0
    # offline use: the base dataset plus the translations (validation identities left out, with a note)
    combined = build_dataset("combined", tiny_synth_root, base="sysu-mm01", extra=[str(out)],
                             base_options={"train_includes_val": False})
    extra = [r for r in combined.train if r.path.startswith(str(out))]
    assert len(combined.train) == len(source.train) + len(extra) and extra
    assert combined.num_train_ids == source.num_train_ids and combined.protocol_family == "sysu"
    assert len(combined.test) == len(source.test) and any("left out" in n for n in combined.notes)
    with pytest.raises(VireidError, match="not an empty folder"):
        translate_dataset(gan_run, tiny_synth_root, out, fmt="sysu-mm01", progress=False)


def test_combined_refuses_test_identities(tiny_synth_root, tmp_path):
    from PIL import Image

    from vireid.data.datasets import build_dataset

    test_id = build_dataset("sysu-mm01", tiny_synth_root).test[0].orig_pid
    for modality in ("visible", "infrared"):
        folder = tmp_path / "extra" / "train" / modality / "cam1" / f"id{test_id}"
        folder.mkdir(parents=True)
        Image.new("RGB", (32, 64)).save(folder / "a.png")
    with pytest.raises(DatasetError, match="leak the test set"):
        build_dataset("combined", tiny_synth_root, base="sysu-mm01", extra=[str(tmp_path / "extra")])
    with pytest.raises(ConfigError, match="data.options.extra is empty"):
        build_dataset("combined", tiny_synth_root, base="sysu-mm01", extra=[])


# ----------------------------------------------------------------------------- online augmentation


def test_online_step_translates_a_fraction_and_relabels_modalities(gan_run, tiny_synth_root):
    from vireid.data.cache import ImageCache
    from vireid.data.datasets import build_dataset
    from vireid.data.loader import TrainLoader
    from vireid.data.transforms import TRANSFORM_STEPS, BatchTransform, add_configured_steps, build_train_transform

    step = TRANSFORM_STEPS.get("gan_translate")(run=str(gan_run), p=0.5)
    images = torch.randint(0, 256, (8, 3, 64, 32), dtype=torch.uint8)
    codes = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    mods = codes.clone()
    out = step(images, mods, torch.Generator().manual_seed(3))
    rows = step.last_rows
    assert len(rows) == 4
    changed = (out != images).flatten(1).any(1)
    assert changed[rows].all() and not changed[[i for i in range(8) if i not in rows.tolist()]].any()
    assert torch.equal(mods[rows], 1 - codes[rows]) and torch.equal(mods[~changed], codes[~changed])
    only = TRANSFORM_STEPS.get("gan_translate")(run=str(gan_run), p=1.0, direction="infrared->visible", relabel=False)
    mods = codes.clone()
    out = only(images, mods, torch.Generator().manual_seed(0))
    assert only.last_rows.tolist() == [4, 5, 6, 7] and torch.equal(mods, codes)
    assert torch.equal(out[:4], images[:4])
    # in a training loader: the step goes first and the batch carries the new modality codes
    transform = add_configured_steps(build_train_transform(64, 32), [{"type": "gan_translate", "run": str(gan_run), "p": 0.5}])
    assert transform.names()[0] == "gan_translate"
    train = build_dataset("sysu-mm01", tiny_synth_root).train[:16]
    cache = ImageCache.build([r.path for r in train], 64, 32, workers=1, progress=False)
    labels = [r.pid for r in train]
    modalities = [0 if r.modality == "visible" else 1 for r in train]
    loader = TrainLoader(cache, labels, modalities, [list(range(8))], transform, seed=0, prefetch=0)
    batch = next(iter(loader))
    translated = transform.steps[0].last_rows
    expected = torch.tensor(modalities[:8])
    expected[translated] = 1 - expected[translated]
    assert torch.equal(batch.modalities, expected) and torch.equal(batch.labels, torch.tensor(labels[:8]))


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_are_one_sentence(gan_run, tiny_synth_root, tmp_path):
    from vireid.data.transforms import TRANSFORM_STEPS
    from vireid.workflows.gan import load_gan_config

    cases = [
        (["gan", "train"], "needs --config"),
        (["gan", "train", "--config", "nope"], "neither a file nor a shipped GAN config"),
        (["gan", "translate", str(tmp_path / "absent"), "--images", str(tiny_synth_root), "--out", str(tmp_path / "o")],
         "does not exist"),
        (["gan", "translate", str(gan_run), "--images", str(tiny_synth_root), "--out", str(tmp_path / "o"),
          "--direction", "sideways"], "--direction 'sideways' is unknown"),
        (["gan", "train", "--resume", str(tmp_path)], "holds no last.pt"),
    ]
    for args, sentence in cases:
        result = _cli(*args)
        assert isinstance(result.exception, VireidError) and sentence in str(result.exception), (args, result.output)
        assert "\n" not in str(result.exception)
    with pytest.raises(ConfigError, match="unknown config key 'gan.lamda_cycle'"):
        load_gan_config("gan_synth", ["gan.lamda_cycle=5"])
    with pytest.raises(ConfigError, match="multiples of 4"):
        load_gan_config("gan_synth", ["data.height=66"])
    with pytest.raises(ConfigError, match="gan.generator.channel"):
        load_gan_config("gan_synth", ["gan.generator={channel: 4}"])
    with pytest.raises(ConfigError, match="direction 'up' is unknown"):
        TRANSFORM_STEPS.get("gan_translate")(run=str(gan_run), direction="up")
    reid_run = tmp_path / "reid.pt"
    _tiny_reid_checkpoint(reid_run)
    with pytest.raises(VireidError, match="is not a checkpoint of vireid gan train .it is a ReID checkpoint"):
        TRANSFORM_STEPS.get("gan_translate")(run=str(reid_run))
    with pytest.raises(VireidError, match="ReID model .* does not exist"):
        from vireid.workflows.gan import load_reid_model

        load_reid_model(tmp_path / "none", torch.device("cpu"))


def test_report_shows_the_translation_grids(gan_run, tmp_path):
    import base64

    from vireid.viz.report import build_report

    run = tmp_path / "reid-run"
    run.mkdir()
    page = build_report(run, pictures=False, gan_run=gan_run).read_text()
    grid = base64.b64encode((gan_run / "samples" / "epoch_002.png").read_bytes()).decode()
    assert "Translation grid, GAN run run, epoch 002" in page and grid in page and "visible -&gt; infrared" in page
    with pytest.raises(VireidError, match="holds no translation grids"):
        build_report(run, pictures=False, gan_run=tmp_path)


def test_measure_writes_frechet_distances(gan_run):
    from vireid.workflows.gan import config_of_run

    reid = config_of_run(gan_run).gan.reid_model
    result = _cli("gan", "measure", str(gan_run), "--reid", reid, "--device", "cpu", "--max-images", "40")
    assert result.exit_code == 0, result.output
    measures = json.loads((gan_run / "gan_measures.json").read_text())
    assert measures["images"]["visible"] == 40 and 2 <= measures["images"]["infrared"] <= 40 and measures["split"] == "test"
    for key in ("fd_translated_ir", "fd_visible_ir", "fd_translated_vis", "fd_infrared_vis"):
        assert np.isfinite(measures[key]) and measures[key] >= -1e-9
    assert f"{measures['fd_translated_ir']:.4f}" in result.output
