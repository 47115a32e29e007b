"""CLIP image encoders (open_clip) and the CLIP-ReID method: losses by hand, prompts, stages, offline
behaviour, bad names, ONNX parity and a two-stage training through the trainer. Every model here is
vireid's tiny CLIP (random initialisation): nothing downloads."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from conftest import REPO, tiny_overrides  # noqa: E402
from vireid.errors import ConfigError


def tiny_model(num_classes: int = 5, **kwargs):
    from vireid.modeling.methods.clip_reid import ClipReID

    torch.manual_seed(0)
    params = {"clip_model": "tiny-vit", "img_size": (64, 32), "stage1_epochs": 1, **kwargs}
    return ClipReID(num_classes=num_classes, **params)


# ----------------------------------------------------------------------------- losses by hand
def test_stage1_contrastive_loss_equals_the_hand_computed_sum() -> None:
    from vireid.modeling.losses.clip_reid import ClipContrastiveLoss

    image = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    text = torch.tensor([[0.5, 0.0], [0.0, 2.0], [0.5, 0.0]])
    labels = torch.tensor([0, 1, 0])

    def one_direction(a, b):  # - mean_i mean_{p: y_p = y_i} log softmax_j(a_i . b_j)[p], written out
        total = 0.0
        for i in range(3):
            dots = [sum(x * y for x, y in zip(a[i].tolist(), b[j].tolist())) for j in range(3)]
            log_norm = math.log(sum(math.exp(d) for d in dots))
            positives = [p for p in range(3) if labels[p] == labels[i]]
            total += -sum(dots[p] - log_norm for p in positives) / len(positives)
        return total / 3

    expected = one_direction(image, text) + one_direction(text, image)
    got = ClipContrastiveLoss()(torch.stack([image, text], dim=1), labels)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    # i2t alone: image 0 vs texts (0.5, 0, 0.5); its positives are texts 0 and 2
    i2t = ClipContrastiveLoss(t2i_weight=0.0)(torch.stack([image, text], dim=1), labels)
    assert float(i2t) == pytest.approx(one_direction(image, text), rel=1e-6)
    with pytest.raises(ValueError, match=r"\[B, 2, D\]"):
        ClipContrastiveLoss()(image, labels)


def test_stage2_image_to_text_logits_and_cross_entropy_by_hand() -> None:
    model = tiny_model(num_classes=4, modality_prompts=True)
    model.on_epoch_start(1)  # stage 2
    model.train()
    images = torch.randn(4, 3, 64, 32)
    modalities = torch.tensor([0, 1, 0, 1])
    out = model(images, modalities)
    with torch.no_grad():
        model.eval()
        _, projected = model.image_encoder(images)
        model.train()
    texts = model.all_text_features()  # [2 templates, 4 identities, D]
    for i in range(4):
        for k in range(4):
            expected = float(projected[i] @ texts[int(modalities[i]), k])
            assert float(out["i2t_logits"][i, k].detach()) == pytest.approx(expected, rel=1e-4, abs=1e-5)
    # eq. 6 with label smoothing (epsilon 0.1), as the config applies it: (1-e) * nll + e * mean(-log p)
    from vireid.modeling.losses import CrossEntropyLabelSmooth

    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0]])
    log_p = [2.0 - math.log(math.exp(2.0) + 3.0)] + [0.0 - math.log(math.exp(2.0) + 3.0)] * 3
    expected = 0.9 * -log_p[0] + 0.1 * -sum(log_p) / 4
    assert float(CrossEntropyLabelSmooth(4, 0.1)(logits, torch.tensor([0]))) == pytest.approx(expected, rel=1e-6)
    assert set(out) == {"features", "features_proj", "bn_features", "logits", "logits_proj", "i2t_logits"}
    assert out["logits"].shape == (4, 4) and out["logits_proj"].shape == (4, 4)


# ----------------------------------------------------------------------------- prompts
def test_modality_aware_prompts_put_identity_tokens_in_the_placeholders() -> None:
    model = tiny_model(num_classes=3, modality_prompts=True)
    learner = model.prompt_learner
    from vireid.modeling.backbones.clip import clip_tokenizer

    tok = clip_tokenizer("tiny-vit", 16)
    words = [tok.decode([t for t in row.tolist() if t not in (0, 49406, 49407)]) for row in learner.tokens]
    assert words[0].strip() == "a visible photo of a x x x x person ."
    assert words[1].strip() == "an infrared photo of a x x x x person ."
    assert learner.n_ctx == 4
    labels, templates = torch.tensor([2, 2]), torch.tensor([0, 1])
    prompts, eot = learner(labels, templates)
    base = model.text_encoder.token_embedding(learner.tokens)
    for row, template in enumerate(templates.tolist()):
        slots = (learner.slot_index[template] >= 0).nonzero().flatten().tolist()
        assert len(slots) == 4
        assert torch.equal(prompts[row, slots], learner.cls_ctx[2])  # identity 2's tokens, in order
        others = [i for i in range(prompts.shape[1]) if i not in slots]
        assert torch.equal(prompts[row, others], base[template, others])
        assert int(eot[row]) == int((learner.tokens[template] == 49407).nonzero())
    # the same identity tokens in both templates; one template without modality_prompts
    assert tiny_model(num_classes=3).prompt_learner.tokens.shape[0] == 1
    with pytest.raises(ConfigError, match="placeholder"):
        tiny_model(modality_prompts=True, infrared_prompt="An infrared photo of a X X person.")


# ----------------------------------------------------------------------------- stage 1 freezes the encoders
def test_stage1_trains_only_the_identity_tokens() -> None:
    model = tiny_model(num_classes=4)
    assert all(p.requires_grad for p in model.image_encoder.parameters())  # built for inference: nothing frozen
    model.on_epoch_start(0)  # the trainer's hook at every epoch
    model.train()
    assert model.stage == 1 and not model.image_encoder.training and not model.text_encoder.training
    groups = model.param_groups(1e-3)
    optimizer = torch.optim.Adam(groups, lr=1e-3, weight_decay=1e-4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    from vireid.modeling.losses.clip_reid import ClipContrastiveLoss

    labels = torch.tensor([0, 0, 1, 1])
    out = model(torch.randn(4, 3, 64, 32), torch.tensor([0, 1, 0, 1]), labels=labels)
    ClipContrastiveLoss()(out["image_text"], labels).backward()
    optimizer.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"prompt_learner.cls_ctx"}
    assert all(p.grad is None for p in model.image_encoder.parameters())
    assert all(p.grad is None for p in model.text_encoder.parameters())
    # stage 2: the tokens freeze, the image encoder and heads train
    model.on_epoch_start(1)
    model.train()
    assert model.stage == 2 and model.image_encoder.training and not model.prompt_learner.cls_ctx.requires_grad
    assert all(p.requires_grad for p in model.image_encoder.parameters())
    assert not model.neck.bn.bias.requires_grad  # BNNeck's frozen shift stays frozen


def test_group_lr_factor_follows_both_stages() -> None:
    model = tiny_model(stage1_epochs=10, stage1_lr=1e-2, stage1_warmup_epochs=2, stage1_warmup_lr=1e-3,
                       stage1_min_lr=0.0)
    schedule = lambda t: 0.5 if t < 3 else 0.25  # noqa: E731 - the config's schedule on the stage-2 clock
    assert model.group_lr_factor("prompt", 0.0, schedule) == pytest.approx(0.1)
    assert model.group_lr_factor("prompt", 1.0, schedule) == pytest.approx(0.55)
    assert model.group_lr_factor("prompt", 6.0, schedule) == pytest.approx(0.5)  # cosine half-way
    assert model.group_lr_factor("prompt", 10.0, schedule) == 0.0
    assert model.group_lr_factor("backbone", 9.9, schedule) == 0.0
    assert model.group_lr_factor("backbone", 11.0, schedule) == 0.5
    assert model.group_lr_factor("head", 14.0, schedule) == 0.25


# ----------------------------------------------------------------------------- weights, offline, bad names
def test_a_pretrained_tag_offline_without_cache_is_one_sentence(monkeypatch, tmp_path) -> None:
    import huggingface_hub.constants as hub

    from vireid.modeling.backbones.clip import build_clip

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ConfigError) as err:
        build_clip("RN50", "openclip:RN50/openai", (256, 128))
    message = str(err.value)
    assert "openclip:RN50/openai" in message and "HF_HUB_OFFLINE=1" in message and "local weights" not in message
    assert "connected machine" in message and "\n" not in message
    assert not (tmp_path / "empty-cache").exists() or not any((tmp_path / "empty-cache").rglob("*.bin"))


@pytest.mark.parametrize("kwargs, pattern", [
    ({"clip_model": "ViT-B-99"}, r"not an open_clip model .*did you mean.*ViT-B-16"),
    ({"clip_model": "ViT-B-16", "pretrained": "openclip:ViT-B-16/opneai"}, r"no weights 'opneai'.*its tags are openai"),
    ({"clip_model": "RN50", "pretrained": "openclip:ViT-B-16/openai"}, r"is for 'ViT-B-16' but clip_model is 'RN50'"),
    ({"clip_model": "tiny-vit", "pretrained": "openclip:ViT-B-16/openai"}, r"no pretrained weights"),
    ({"clip_model": "tiny-vit", "pretrained": "no/such/file.bin"}, r"neither openclip:<model>/<tag>"),
    ({"clip_model": "tiny-vit", "img_size": (60, 32)}, r"not divisible by tiny-vit's patch size 8x8"),
    ({"clip_model": "tiny-rn", "img_size": (64, 48)}, r"not divisible by 32"),
])
def test_bad_names_and_sizes_are_one_sentence(kwargs, pattern) -> None:
    from vireid.modeling.backbones.clip import build_clip

    kwargs = {"img_size": (64, 32), **kwargs}
    with pytest.raises(ConfigError, match=pattern) as err:
        build_clip(**kwargs)
    assert "\n" not in str(err.value)


def test_local_weights_file_loads_and_resizes_position_embeddings(tmp_path) -> None:
    from vireid.modeling.backbones.clip import ClipImageEncoder, build_clip

    torch.manual_seed(1)
    source = build_clip("tiny-vit", None, (32, 32))  # a square grid, as CLIP checkpoints have
    path = tmp_path / "tiny.bin"
    torch.save(source.state_dict(), path)
    loaded = build_clip("tiny-vit", str(path), (64, 32))
    assert loaded.visual.positional_embedding.shape == (1 + 8 * 4, 64)
    assert torch.equal(loaded.visual.conv1.weight, source.visual.conv1.weight)
    assert torch.equal(loaded.token_embedding.weight, source.token_embedding.weight)
    assert torch.equal(loaded.visual.positional_embedding[0], source.visual.positional_embedding[0])  # class token
    same = build_clip("tiny-vit", str(path), (32, 32))
    x = torch.randn(2, 3, 32, 32)
    a, b = ClipImageEncoder(source).eval(), ClipImageEncoder(same).eval()
    assert torch.allclose(a(x)[1], b(x)[1])


def test_rn_encoder_shapes_and_clip_registry() -> None:
    from vireid.modeling import BACKBONES

    encoder = BACKBONES.build("clip", clip_model="tiny-rn", img_size=(64, 32))
    features, projected = encoder.eval()(torch.randn(2, 3, 64, 32))
    assert features.shape == (2, 512) and projected.shape == (2, 32)
    assert encoder.visual.attnpool.positional_embedding.shape[0] == 1 + 2 * 1


# ----------------------------------------------------------------------------- export and training
def test_onnx_export_matches_pytorch(tmp_path, tiny_synth_root) -> None:
    from vireid.config import load_config
    from vireid.export.onnx import export_model, make_session, run_session

    cfg = load_config(REPO / "src" / "vireid" / "configs" / "clip_reid_synth.yaml",
                      [o for o in tiny_overrides(tiny_synth_root, tmp_path) if not o.startswith("model.params.backbone")])
    model = tiny_model(num_classes=6).eval()
    report = export_model(model, cfg, {"num_classes": 6}, tmp_path / "clip.onnx")
    assert report.max_abs_diff <= 1e-4 and report.embed_dim == 64 + 32
    x = torch.randn(3, 3, 64, 32)
    m = torch.tensor([0, 1, 1])
    got = run_session(make_session(tmp_path / "clip.onnx"), x.numpy(), m.numpy())
    with torch.no_grad():
        expected = model(x, m).numpy()
    assert abs(got - expected).max() <= 1e-4


def test_two_stage_training_through_the_trainer(tmp_path, tiny_synth_root) -> None:
    from vireid.config import load_config
    from vireid.engine.trainer import Trainer, load_model_from_checkpoint

    overrides = [o for o in tiny_overrides(tiny_synth_root, tmp_path, **{"train.epochs": 2, "train.eval_every": 0,
                                                                        "sampler.epoch_length": 3})
                 if not o.startswith("model.params.backbone")]
    cfg = load_config(REPO / "src" / "vireid" / "configs" / "clip_reid_synth.yaml",
                      overrides + ["model.params.stage1_epochs=1"])
    torch.manual_seed(cfg.seed)
    trainer = Trainer(cfg, tmp_path / "run")
    initial = {k: v.clone() for k, v in trainer.core_model.state_dict().items()}
    try:
        stage1 = trainer.train_epoch(0)
        after1 = {k: v.clone() for k, v in trainer.core_model.state_dict().items()}
        stage2 = trainer.train_epoch(1)
    finally:
        trainer.close()
    after2 = trainer.core_model.state_dict()
    # a stage whose outputs no loss term reads is one clear sentence, not a crash
    trainer.loss_terms = {k: v for k, v in trainer.loss_terms.items() if k != "prompt_contrast"}
    with pytest.raises(ConfigError, match=r"no term of the config's 'losses' reads what the model outputs now \(image_text\)"):
        trainer._compute_losses({"image_text": torch.zeros(2, 2, 4)}, torch.tensor([0, 1]), torch.tensor([0, 1]))
    assert set(stage1) & {"prompt_contrast", "i2t", "id"} == {"prompt_contrast"}
    assert {"i2t", "id", "id_proj", "triplet_feat", "triplet_proj"} <= set(stage2) and "prompt_contrast" not in stage2
    changed1 = {k for k in initial if not torch.equal(initial[k], after1[k])}
    assert changed1 == {"prompt_learner.cls_ctx"}
    assert torch.equal(after1["prompt_learner.cls_ctx"], after2["prompt_learner.cls_ctx"])
    assert not torch.equal(after1["image_encoder.visual.conv1.weight"], after2["image_encoder.visual.conv1.weight"])
    assert torch.equal(after1["text_encoder.token_embedding.weight"], after2["text_encoder.token_embedding.weight"])
    # a saved checkpoint rebuilds the model (vireid eval / extract / serve use this)
    trainer._save("last.pt")
    model, _, ckpt = load_model_from_checkpoint(tmp_path / "run" / "last.pt")
    assert model(torch.randn(2, 3, 64, 32), 1).shape == (2, ckpt["embed_dim"]) == (2, 96)


def test_flops_count_the_attention_of_clip_transformers() -> None:
    """nn.MultiheadAttention's fused evaluation kernel is invisible to torch's FLOP counter; the count must
    equal the unfused (training-mode) forward's."""
    from torch.utils.flop_counter import FlopCounterMode

    from vireid.modeling.flops import count_forward_flops

    model = tiny_model()
    flops = count_forward_flops(model, (64, 32))
    encoder = model.image_encoder.train()  # no dropout in CLIP: the same arithmetic, unfused attention
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        encoder(torch.zeros(1, 3, 64, 32))
    assert flops == counter.get_total_flops() > 0
    assert torch.backends.mha.get_fastpath_enabled()  # restored


def test_pruning_shrinks_rn_encoders_and_refuses_vit_ones_in_one_sentence() -> None:
    from vireid.errors import VireidError
    from vireid.modeling.pruning import apply_pruning_spec, prune_model

    model = tiny_model(clip_model="tiny-rn").eval()
    x = torch.randn(2, 3, 64, 32)
    spec = prune_model(model, 0.5, multiple=4)
    assert spec["kept"]["image_encoder.visual.layer4.0/conv1"] == 64  # of 128
    rebuilt = apply_pruning_spec(tiny_model(clip_model="tiny-rn").eval(), spec)
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.allclose(rebuilt(x, 0), model(x, 0))
    with pytest.raises(VireidError, match="no block whose inner channels can be pruned") as err:
        prune_model(tiny_model().eval(), 0.5)
    assert "\n" not in str(err.value)
