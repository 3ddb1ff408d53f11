"""Differentiable preference scorers: (images [B, 3, H, W] float in [0, 1], prompts) -> scores [B].

Spec syntax (`--scorer`, repeatable; the training objective is the weighted sum):

    NAME[@SOURCE][=WEIGHT]

  NAME    `pickscore`, `imagereward`, `hpsv2` (HPS v2.1, see hpsv2.py), or `module:factory`
          (any importable module; `factory()` returns a callable (images, prompts) -> scores,
          differentiable in `images`, or with `differentiable = False` set on it)
  SOURCE  optional: an HF id or a local directory replacing the scorer's default weights
          (pickscore: a CLIPModel dir; if it has preprocessor_config.json and a tokenizer it is
          also the processor, else the LAION ViT-H processor is used; hpsv2: a checkpoint
          file or HF `REPO[:FILE]`)
  WEIGHT  optional float, default 1.0

e.g. `--scorer pickscore=1.0 --scorer mymod:make=0.5`, `--scorer pickscore@/models/PickScore_v1`.
Heavy packages are imported lazily; a missing one raises MissingDependencyError naming the extra.
Every scorer returned here is frozen (requires_grad False, eval mode).
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from ..errors import InputError, ModelLoadError, PahiError, require
from ..hub import local_snapshot
from .spec import BUILTIN, ScorerSpec, parse_scorer, parse_scorers  # noqa: F401
from .clip_preprocess import CLIP_MEAN, CLIP_STD, ClipImagePreprocess, pooled as _pooled  # noqa: F401

ScoreFn = Callable[[torch.Tensor, Sequence[str]], torch.Tensor]
PICKSCORE_MODEL = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
IMAGEREWARD_MODEL = "ImageReward-v1.0"


class ClipPreferenceScorer(nn.Module):
    """PickScore-style: logit_scale.exp() * cosine(image_embeds, text_embeds) of a CLIPModel."""

    def __init__(self, model: nn.Module, tokenizer, preprocess: ClipImagePreprocess):
        super().__init__()
        self.model, self.tokenizer, self.preprocess = model, tokenizer, preprocess

    def forward(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        pixels = self.preprocess(images.to(device)).to(self.model.dtype)
        tok = self.tokenizer(list(prompts), padding="max_length", truncation=True,
                             max_length=self.model.config.text_config.max_position_embeddings,
                             return_tensors="pt").to(device)
        image_embeds = _pooled(self.model.get_image_features(pixel_values=pixels))
        with torch.no_grad():  # the prompt is fixed; only the image side needs gradients
            text_embeds = _pooled(self.model.get_text_features(
                input_ids=tok.input_ids, attention_mask=tok.attention_mask))
        image_embeds = nn.functional.normalize(image_embeds.float(), dim=-1)
        text_embeds = nn.functional.normalize(text_embeds.float(), dim=-1)
        return self.model.logit_scale.exp().float() * (image_embeds * text_embeds).sum(-1)


def _resolve(source: str, what: str) -> Path:
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists() or source.startswith((".", "/", "~")):
        raise InputError(f"--scorer {what}: '{source}' is not a directory")
    return Path(local_snapshot(source, hint=f"; pass a local directory with --scorer {what}@DIR"))


def load_pickscore(source: str | None = None, processor: str | None = None) -> ClipPreferenceScorer:
    """PickScore (`yuvalkirstain/PickScore_v1`, processor from the LAION CLIP-ViT-H-14 repo), or
    any CLIPModel directory / HF id in its place."""
    from transformers import AutoTokenizer, CLIPModel

    model_dir = _resolve(source or PICKSCORE_MODEL, "pickscore")
    if processor is None and source and (model_dir / "preprocessor_config.json").is_file():
        processor_dir = model_dir
    else:
        processor_dir = _resolve(processor or PICKSCORE_PROCESSOR, "pickscore")
    try:
        model = CLIPModel.from_pretrained(str(model_dir), use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(str(processor_dir))
        config = json.loads((processor_dir / "preprocessor_config.json").read_text())
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"could not load pickscore from '{model_dir}': "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return ClipPreferenceScorer(model, tokenizer, ClipImagePreprocess.from_config(config))


def load_imagereward(source: str | None = None) -> nn.Module:
    """ImageReward-v1.0 through the `image-reward` package (BLIP ViT-L + reward MLP).

    Its loader reads the package's own checkpoint format (a torch pickle, downloaded by the
    package), which is why it sits behind an optional extra."""
    ir = require("ImageReward", "imagereward")
    try:
        model = ir.load(source or IMAGEREWARD_MODEL, device="cpu")
    except Exception as e:  # the package raises bare exceptions for missing files / network
        raise ModelLoadError(f"could not load ImageReward '{source or IMAGEREWARD_MODEL}': "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return ImageRewardScorer(model)


class ImageRewardScorer(nn.Module):
    """Differentiable ImageReward: torch preprocessing (224, bicubic, CLIP mean/std, as the
    package's transform) -> BLIP image encoder -> text encoder with cross attention -> MLP,
    standardised with the model's mean/std."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.preprocess = model, ClipImagePreprocess(224, (224, 224))

    def forward(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        m = self.model
        device = next(m.parameters()).device
        tok = m.blip.tokenizer(list(prompts), padding="max_length", truncation=True,
                               max_length=35, return_tensors="pt").to(device)
        image_embeds = m.blip.visual_encoder(self.preprocess(images.to(device)))
        atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=device)
        out = m.blip.text_encoder(tok.input_ids, attention_mask=tok.attention_mask,
                                  encoder_hidden_states=image_embeds,
                                  encoder_attention_mask=atts, return_dict=True)
        reward = m.mlp(out.last_hidden_state[:, 0, :].float()).squeeze(-1)
        return (reward - m.mean) / m.std


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__


def load_factory(name: str) -> ScoreFn:
    """`module:factory` -> factory(), checked to be callable."""
    module_name, _, attr = name.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except ImportError as e:
        raise InputError(f"--scorer {name}: cannot import '{module_name}' ({e})") from None
    except AttributeError:
        raise InputError(f"--scorer {name}: '{module_name}' has no '{attr}'") from None
    except Exception as e:  # the module itself failed while importing (its own bug)
        raise InputError(f"--scorer {name}: importing '{module_name}' failed "
                         f"({_reason(e)})") from None
    if not callable(factory):
        raise InputError(f"--scorer {name}: '{module_name}.{attr}' is a "
                         f"{type(factory).__name__}, not a factory function")
    try:
        scorer = factory()
    except Exception as e:
        raise InputError(f"--scorer {name}: {attr}() failed ({_reason(e)})") from None
    if not callable(scorer):
        raise InputError(f"--scorer {name}: {attr}() must return a callable "
                         "(images [B,3,H,W] in [0,1], prompts) -> scores [B]")
    return scorer


def load_scorer(spec: ScorerSpec, device: torch.device | str = "cpu") -> ScoreFn:
    """One scorer, frozen and on `device`."""
    if spec.name == "pickscore":
        scorer = load_pickscore(spec.source)
    elif spec.name == "imagereward":
        scorer = load_imagereward(spec.source)
    elif spec.name == "hpsv2":
        from .hpsv2 import load_hpsv2

        scorer = load_hpsv2(spec.source)
    else:
        scorer = load_factory(spec.name)
    if isinstance(scorer, nn.Module):
        scorer.requires_grad_(False).eval().to(device)
    return scorer


class ScorerSet:
    """Several weighted scorers. `total` is the training objective; `each` reports them apart."""

    def __init__(self, specs: Sequence[ScorerSpec], scorers: Sequence[ScoreFn]):
        if not specs:
            raise InputError("give at least one --scorer")
        self.specs, self.scorers = list(specs), list(scorers)

    @classmethod
    def load(cls, texts: Sequence[str], device: torch.device | str = "cpu") -> "ScorerSet":
        specs = parse_scorers(texts)
        if not specs:
            raise InputError("give at least one --scorer")
        return cls(specs, [load_scorer(s, device) for s in specs])

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self.specs]

    def check_differentiable(self, why: str = "--refine") -> None:
        """Refuse scorers that declare `differentiable = False` (one-line InputError)."""
        for spec, scorer in zip(self.specs, self.scorers):
            if getattr(scorer, "differentiable", True) is False:
                raise InputError(f"--scorer {spec.label} is not differentiable; {why} needs "
                                 "gradients of the score (rank with --best-of instead)")

    def modules(self) -> list[nn.Module]:
        return [s for s in self.scorers if isinstance(s, nn.Module)]

    def each(self, images: torch.Tensor, prompts: Sequence[str]) -> list[torch.Tensor]:
        """Per-scorer scores, each [B] float32."""
        out = []
        for spec, scorer in zip(self.specs, self.scorers):
            try:
                s = scorer(images, list(prompts))
            except (PahiError, torch.cuda.OutOfMemoryError):
                raise
            except Exception as e:  # a scorer's own bug or bad weights: name it, one line
                raise InputError(f"--scorer {spec.label} failed ({_reason(e)})") from None
            if not isinstance(s, torch.Tensor) or s.numel() != images.shape[0]:
                raise InputError(f"--scorer {spec.label} returned "
                                 f"{getattr(s, 'shape', type(s).__name__)}, expected "
                                 f"[{images.shape[0]}] scores")
            if images.requires_grad and torch.is_grad_enabled() and not s.requires_grad:
                raise InputError(f"--scorer {spec.label} is not differentiable: its scores do "
                                 "not depend on the images through torch operations")
            s = s.reshape(images.shape[0]).float().to(images.device)
            bad = (~torch.isfinite(s.detach())).nonzero().flatten().tolist()
            if bad:  # best-of would keep a nan candidate, training would go nan
                raise InputError(f"--scorer {spec.label} returned {s[bad[0]].item()} for image "
                                 f"{bad[0]} of {len(s)} (scores must be finite numbers)")
            out.append(s)
        return out

    def total(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Weighted sum [B] of all scorers: the score s in the loss softplus(s - s').
        InputError when a scorer fails or returns nan/inf, or when weight x score overflows."""
        total = sum(spec.weight * s for spec, s in zip(self.specs, self.each(images, prompts)))
        if not torch.isfinite(total.detach()).all():
            raise InputError(f"the weighted scores of {self} are not finite (weight x score "
                             "overflows float32); use smaller --scorer weights")
        return total

    def __str__(self) -> str:
        return " + ".join(str(s) for s in self.specs)
