"""CLIP-ReID (Li et al., "CLIP-ReID: exploiting vision-language model for image re-identification
without concrete text labels", AAAI 2023; reference repository Syliz517/CLIP-ReID,
``model/make_model_clipreid.py``, ``processor/processor_clipreid_stage1.py`` / ``_stage2.py``,
``configs/person/vit_clipreid.yml``), run by vireid's one trainer.

Identities have no words, so CLIP-ReID *learns* them: every identity ``y`` owns ``n`` text tokens
``[X]_1..[X]_n`` spliced into a prompt, "A photo of a [X]_1 [X]_2 [X]_3 [X]_4 person." (n = 4).

**Stage 1** (the first ``stage1_epochs`` epochs): both CLIP encoders are frozen; only the identity
tokens learn, from the image-to-text and text-to-image contrastive losses between each image's
feature and its identity's prompt feature (loss ``clip_contrastive``,
:mod:`vireid.modeling.losses.clip_reid`; eqs. 3-5 of the paper). The model's training output is
``image_text``: ``[B, 2, D]`` (projected image feature, prompt feature). Learning rate: the
``stage1_*`` parameters (the reference's Adam at 3.5e-4, 5 warm-up epochs from 1e-5, cosine to
1e-6 over the stage). Where the reference extracts the image features once and then samples
batches of 64 of them, vireid computes them under ``no_grad`` for each batch of the usual
identity sampler (same features for a frozen encoder, up to augmentation; one encoder forward per
batch instead of one per image overall).

**Stage 2** (the remaining epochs): the identity tokens are frozen, the prompt features of all
identities are computed once per epoch, and the image encoder is fine-tuned with

- the image-to-text cross entropy ``L_i2tce`` (eq. 6): logits ``V_i · T_y`` over all identities'
  prompt features (output ``i2t_logits``; the config applies ``cross_entropy`` with label
  smoothing, as the reference's ``make_loss.py`` does);
- identity losses on two BNNeck classifiers, one on the encoder feature (``logits``) and one on
  the projected feature (``logits_proj``), each weight 0.25 in the reference ViT config;
- triplet losses on the encoder feature (``features``) and the projected feature
  (``features_proj``). (The reference also puts one on the ViT's second-to-last block; vireid
  omits that one.)

The learning rate of stage 2 is the config's ``optim.lr`` with its ``sched`` on a clock that starts
at stage 2 (``sched.milestones`` count stage-2 epochs; the reference: Adam 5e-6, 10 warm-up epochs
from 0.1x, steps at 30 and 50 of 60). The trainer asks :meth:`ClipReID.group_lr_factor` for each
parameter group's factor (its generic per-group schedule hook).

**Modality-aware prompts** (``modality_prompts: true``): a visible image's identity tokens sit in
``visible_prompt`` ("A visible photo of a X X X X person."), an infrared image's in
``infrared_prompt`` ("An infrared photo of a X X X X person."). The identity tokens are shared;
the modality word differs. Stage 2 then has one prompt feature per (modality, identity) and each
image's ``i2t_logits`` use its own modality's prompts.

Test-time embedding (``embedding``): ``features`` = ``[encoder feature, projected feature]``
before the BNNecks (the reference's ``TEST.NECK_FEAT: before``), or ``bn_features`` (after them).
The image encoder is shared by both modalities (:mod:`vireid.modeling.backbones.clip`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from vireid.errors import ConfigError
from vireid.modeling.backbones.clip import ClipImageEncoder, ClipTextEncoder, build_clip, clip_tokenizer
from vireid.modeling.heads import BNNeck, LinearClassifier
from vireid.modeling.registries import METHODS

EMBEDDINGS = ("features", "bn_features")
PLACEHOLDER = "X"


class PromptLearner(nn.Module):
    """Identity tokens ``[K, n, width]`` (N(0, 0.02²), as the reference) and the tokenised templates.

    Every template holds the same number ``n`` of placeholder words ``X``; :meth:`forward` returns
    the token embeddings of each sample's template with its identity's ``n`` tokens in the
    placeholder slots, and the position of each row's end-of-text token.
    """

    def __init__(self, num_classes: int, templates: Sequence[str], tokenizer: object, token_embedding: nn.Embedding,
                 context_length: int) -> None:
        super().__init__()
        placeholder = tokenizer.encode(PLACEHOLDER)  # type: ignore[attr-defined]
        if len(placeholder) != 1:
            raise ConfigError("the tokenizer splits the placeholder X into several tokens; use a CLIP BPE tokenizer")
        tokens = tokenizer(list(templates), context_length=context_length)  # type: ignore[operator]
        slots = tokens == placeholder[0]
        counts = slots.sum(1).tolist()
        if counts[0] < 1 or len(set(counts)) != 1:
            raise ConfigError(f"every prompt must hold the same number (>= 1) of placeholder words X, e.g. "
                              f"'A photo of a X X X X person.'; got {dict(zip(templates, counts))}")
        if (tokens[:, -1] != 0).any():
            raise ConfigError(f"a prompt is longer than the text encoder's {context_length} tokens; shorten it")
        self.n_ctx = int(counts[0])
        self.templates = list(templates)
        # slot index (0..n-1) of each position, -1 elsewhere
        slot_index = torch.full(tokens.shape, -1, dtype=torch.long)
        for row in range(tokens.shape[0]):
            slot_index[row, slots[row]] = torch.arange(self.n_ctx)
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("slot_index", slot_index, persistent=False)
        self.register_buffer("eot_index", tokens.argmax(dim=-1), persistent=False)  # end-of-text: the largest id
        width = int(token_embedding.weight.shape[1])
        self.cls_ctx = nn.Parameter(torch.randn(num_classes, self.n_ctx, width) * 0.02)
        self.token_embedding = [token_embedding]  # shared with the (frozen) text encoder; not a submodule twice

    def forward(self, labels: torch.Tensor, template: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Identity labels ``[B]`` and template indices ``[B]`` -> prompt embeddings ``[B, L, width]``, EOT ``[B]``."""
        embed = self.token_embedding[0]
        with torch.no_grad():
            base = embed(self.tokens)  # [T, L, width]; from the current (frozen) token table
        base = base[template]
        slots = self.slot_index[template]  # [B, L]
        ctx = self.cls_ctx[labels]  # [B, n, width]
        gathered = torch.gather(ctx, 1, slots.clamp(min=0).unsqueeze(-1).expand(-1, -1, ctx.shape[-1]))
        prompts = torch.where((slots >= 0).unsqueeze(-1), gathered.to(base.dtype), base)
        return prompts, self.eot_index[template]


@METHODS.register("clip_reid")
class ClipReID(nn.Module):
    """CLIP-ReID over an open_clip model (see the module docstring).

    Args:
        num_classes: training identities.
        clip_model: open_clip model name (``ViT-B-16``, ``RN50``, ...) or ``tiny-vit`` / ``tiny-rn``.
        pretrained: ``null``, ``openclip:<model>/<tag>`` or a local weights file
            (:mod:`vireid.modeling.backbones.clip`).
        quick_gelu: null (what the weights' tag asks for), true or false.
        img_size: (height, width) of the inputs (filled in from ``data.height/width``).
        stage1_epochs: epochs of stage 1 (the reference: 120); the rest of ``train.epochs`` is stage 2.
        stage1_lr, stage1_warmup_epochs, stage1_warmup_lr, stage1_min_lr: stage 1's learning rate,
            linear warm-up from ``stage1_warmup_lr`` and cosine decay to ``stage1_min_lr`` over stage 1
            (the reference's ``SOLVER.STAGE1``: 3.5e-4, 5, 1e-5, 1e-6).
        prompt: the template with ``n`` placeholder words ``X`` (the reference: 4).
        modality_prompts: use ``visible_prompt`` / ``infrared_prompt`` by the image's modality.
        embedding: ``features`` (before the BNNecks) or ``bn_features`` (after them).
    """

    has_unused_parameters = True  # stage 1 trains only the identity tokens, stage 2 never touches them
    #: Outputs present only in one training stage: the trainer skips the loss terms reading the other stage's.
    phase_outputs = frozenset({"image_text", "features", "features_proj", "bn_features", "logits", "logits_proj",
                               "i2t_logits"})

    def __init__(
        self,
        num_classes: int,
        clip_model: str = "ViT-B-16",
        pretrained: str | None = None,
        quick_gelu: bool | None = None,
        img_size: Sequence[int] = (256, 128),
        stage1_epochs: int = 120,
        stage1_lr: float = 3.5e-4,
        stage1_warmup_epochs: int = 5,
        stage1_warmup_lr: float = 1e-5,
        stage1_min_lr: float = 1e-6,
        prompt: str = "A photo of a X X X X person.",
        modality_prompts: bool = False,
        visible_prompt: str = "A visible photo of a X X X X person.",
        infrared_prompt: str = "An infrared photo of a X X X X person.",
        embedding: str = "features",
    ) -> None:
        super().__init__()
        if embedding not in EMBEDDINGS:
            raise ConfigError(f"embedding must be one of {', '.join(EMBEDDINGS)}, got {embedding!r}")
        if int(stage1_epochs) < 0:
            raise ConfigError(f"stage1_epochs must be >= 0, got {stage1_epochs!r}")
        if not (stage1_lr > 0 and stage1_warmup_lr > 0 and stage1_min_lr >= 0):
            raise ConfigError("stage1_lr and stage1_warmup_lr must be > 0 and stage1_min_lr >= 0")
        self.num_classes = int(num_classes)
        self.embedding = embedding
        self.stage1_epochs = int(stage1_epochs)
        self.stage1_lr = float(stage1_lr)
        self.stage1_warmup_epochs = int(stage1_warmup_epochs)
        self.stage1_warmup_lr = float(stage1_warmup_lr)
        self.stage1_min_lr = float(stage1_min_lr)
        self.modality_prompts = bool(modality_prompts)
        clip = build_clip(clip_model, pretrained, img_size, quick_gelu)
        self.clip_model = clip_model
        self.image_encoder = ClipImageEncoder(clip, clip_model)
        self.text_encoder = ClipTextEncoder(clip)
        for p in self.text_encoder.parameters():  # the text encoder never trains (both stages)
            p.requires_grad_(False)
        templates = [visible_prompt, infrared_prompt] if self.modality_prompts else [prompt]
        tokenizer = clip_tokenizer(clip_model, self.text_encoder.context_length)
        self.prompt_learner = PromptLearner(self.num_classes, templates, tokenizer, self.text_encoder.token_embedding,
                                            self.text_encoder.context_length)
        width, proj = self.image_encoder.out_channels, self.image_encoder.proj_dim
        self.embed_dim = width + proj
        self.neck = BNNeck(width)
        self.neck_proj = BNNeck(proj)
        self.classifier = LinearClassifier(width, self.num_classes)
        self.classifier_proj = LinearClassifier(proj, self.num_classes)
        self._trainable = {id(p): p.requires_grad for p in self.parameters()}
        self._text_features: torch.Tensor | None = None
        # the stage a training-mode forward runs; parameters are frozen per stage by on_epoch_start / set_stage
        # (a model built for inference keeps its gradients, which Grad-CAM pictures need)
        self.stage = 1 if self.stage1_epochs > 0 else 2

    # ------------------------------------------------------------------ stages
    def _stage2_parts(self) -> list[nn.Module]:
        return [self.image_encoder, self.neck, self.neck_proj, self.classifier, self.classifier_proj]

    def set_stage(self, stage: int) -> None:
        """Stage 1: only the identity tokens train; stage 2: the image encoder and heads train, tokens frozen."""
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage}")
        self.stage = stage
        self.prompt_learner.cls_ctx.requires_grad_(stage == 1)
        for part in self._stage2_parts():
            for p in part.parameters():
                p.requires_grad_(stage == 2 and self._trainable[id(p)])
        self._text_features = None
        self.train(self.training)

    def on_epoch_start(self, epoch: int) -> None:
        """Trainer hook: the stage of ``epoch`` (0-based); the prompt features are recomputed at each stage-2 epoch."""
        self.set_stage(1 if epoch < self.stage1_epochs else 2)

    def train(self, mode: bool = True) -> ClipReID:
        super().train(mode)
        if mode and self.stage == 1:  # the frozen image encoder keeps its statistics (BatchNorm of RN models)
            self.image_encoder.eval()
            self.text_encoder.eval()
        if mode:
            self.text_encoder.eval()
        return self

    def group_lr_factor(self, name: str | None, t: float, schedule) -> float:
        """Trainer hook: the learning-rate factor of parameter group ``name`` at fractional epoch ``t``.

        ``prompt``: stage 1's warm-up + cosine (relative to ``stage1_lr``), 0 afterwards; every other
        group: 0 in stage 1, then the config's schedule ``schedule(t - stage1_epochs)``.
        """
        if name == "prompt":
            if t >= self.stage1_epochs:
                return 0.0
            if t < self.stage1_warmup_epochs:
                lr = self.stage1_warmup_lr + (self.stage1_lr - self.stage1_warmup_lr) * t / self.stage1_warmup_epochs
            else:
                span = max(self.stage1_epochs - self.stage1_warmup_epochs, 1e-9)
                progress = min((t - self.stage1_warmup_epochs) / span, 1.0)
                lr = self.stage1_min_lr + 0.5 * (self.stage1_lr - self.stage1_min_lr) * (1 + math.cos(math.pi * progress))
            return lr / self.stage1_lr
        if t < self.stage1_epochs:
            return 0.0
        return float(schedule(t - self.stage1_epochs))

    def param_groups(self, base_lr: float, pretrained_lr_mult: float = 1.0) -> list[dict[str, object]]:
        """``backbone`` (the image encoder), ``head`` (BNNecks, classifiers) and ``prompt`` (the identity tokens, at ``stage1_lr``)."""
        encoder = list(self.image_encoder.parameters())
        heads = [p for part in self._stage2_parts()[1:] for p in part.parameters() if self._trainable[id(p)]]
        return [
            {"params": encoder, "lr": base_lr * pretrained_lr_mult, "name": "backbone"},
            {"params": heads, "lr": base_lr, "name": "head"},
            {"params": [self.prompt_learner.cls_ctx], "lr": self.stage1_lr, "name": "prompt"},
        ]

    # ------------------------------------------------------------------ text side
    def templates_for(self, modalities: torch.Tensor | int, batch: int, device: torch.device) -> torch.Tensor:
        if isinstance(modalities, int):
            modalities = torch.full((batch,), modalities, dtype=torch.long, device=device)
        if not self.modality_prompts:
            return torch.zeros(batch, dtype=torch.long, device=device)
        return modalities.to(device=device, dtype=torch.long)

    def text_features(self, labels: torch.Tensor, templates: torch.Tensor) -> torch.Tensor:
        """Prompt features ``[B, D]`` of identities ``labels`` in templates ``templates`` (0 visible / 1 infrared)."""
        prompts, eot = self.prompt_learner(labels, templates)
        return self.text_encoder(prompts, eot)

    @torch.no_grad()
    def all_text_features(self, chunk: int = 256) -> torch.Tensor:
        """Stage 2's fixed prompt features ``[T, K, D]`` (T = 2 with modality-aware prompts, else 1)."""
        device = self.prompt_learner.cls_ctx.device
        rows = []
        for template in range(len(self.prompt_learner.templates)):
            feats = []
            for start in range(0, self.num_classes, chunk):
                labels = torch.arange(start, min(start + chunk, self.num_classes), device=device)
                feats.append(self.text_features(labels, torch.full_like(labels, template)))
            rows.append(torch.cat(feats))
        return torch.stack(rows)

    # ------------------------------------------------------------------ forward
    def forward(self, images: torch.Tensor, modalities: torch.Tensor | int,
                labels: torch.Tensor | None = None) -> dict[str, torch.Tensor] | torch.Tensor:
        """Evaluation: the embedding ``[B, embed_dim]``. Training: stage 1 ``{"image_text"}`` (needs
        ``labels``), stage 2 ``features``, ``features_proj``, ``bn_features``, ``logits``, ``logits_proj``,
        ``i2t_logits``."""
        if self.training and self.stage == 1:
            if labels is None:
                raise ValueError("CLIP-ReID stage 1 needs the identity labels (the trainer passes them)")
            with torch.no_grad():
                _, image = self.image_encoder(images)
            templates = self.templates_for(modalities, images.shape[0], images.device)
            text = self.text_features(labels.to(images.device), templates)
            return {"image_text": torch.stack([image.float(), text.float()], dim=1)}
        features, projected = self.image_encoder(images)
        bn, bn_proj = self.neck(features), self.neck_proj(projected)
        if not self.training:
            if self.embedding == "features":
                return torch.cat([features, projected], dim=1)
            return torch.cat([bn, bn_proj], dim=1)
        if self._text_features is None:
            self._text_features = self.all_text_features()
        templates = self.templates_for(modalities, images.shape[0], images.device)
        text = self._text_features.to(projected.dtype)  # [T, K, D]
        i2t = torch.einsum("bd,tkd->btk", projected, text)
        i2t = i2t.gather(1, templates.view(-1, 1, 1).expand(-1, 1, text.shape[1])).squeeze(1)
        return {
            "features": features,
            "features_proj": projected,
            "bn_features": torch.cat([bn, bn_proj], dim=1),
            "logits": self.classifier(bn),
            "logits_proj": self.classifier_proj(bn_proj),
            "i2t_logits": i2t,
        }

    # ------------------------------------------------------------------ pictures
    def cam_target_layer(self, modality: int) -> nn.Module:
        """Grad-CAM's layer (one shared encoder): see :meth:`ClipImageEncoder.cam_target_layer`."""
        return self.image_encoder.cam_target_layer()

    def cam_attention(self, modality: int) -> dict[str, object] | None:
        """Attention rollout's input for ViT encoders (:meth:`ClipImageEncoder.cam_attention`), None for ResNets."""
        return self.image_encoder.cam_attention()

    def extra_repr(self) -> str:
        return (f"clip_model={self.clip_model!r}, stage={self.stage}, stage1_epochs={self.stage1_epochs}, "
                f"modality_prompts={self.modality_prompts}, embedding={self.embedding!r}")


__all__ = ["ClipReID", "PromptLearner"]
