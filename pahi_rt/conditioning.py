"""Per-architecture conditioning: prompts -> token ids -> what the UNet is conditioned on.

The model spec (`specs.ModelSpec.conditioning`) names the tensors; this adapter makes them:

  SD 2.x  ids [B, 77]      -> text_encoder(ids).last_hidden_state          [B, 77, D]
          (a plain tensor: the UNet's encoder_hidden_states and the head's text feature)
  SDXL    ids [B, 2, 77]   (row 0: tokenizer, row 1: tokenizer_2, as diffusers' encode_prompt)
          -> `Conditioning`: hidden_states = concat(penultimate hidden state of text_encoder,
             of text_encoder_2) [B, 77, D1 + D2]; text_embeds = text_encoder_2's pooled
             projection [B, P]; time_ids [B, 6] = (H, W, 0, 0, H, W) for the latent being
             denoised (StableDiffusionXLPipeline._get_add_time_ids with original = target size,
             no crop), so one encoding serves every image size.

The head's text feature is the hidden state tensor in both (`text_feature`); the pooled
projection and time ids only feed the UNet (`unet_kwargs`).

Backends pass the conditioning between stages by the spec's names (`by_name`: the
`TextOutputs` dict; SD 2.x {text_embeddings}, SDXL {text_embeddings, text_embeds, time_ids},
time_ids at the run's size) and the torch backend turns them back (`from_names`). Graphs read
the same declaration: a text encoder graph per architecture with one output per non-time
conditioning tensor (`ConditioningTensor.name`: text_embeddings, text_embeds), time_ids as a
host input from `add_time_ids` at the run's size, and UNet inputs (sample, timestep,
*conditioning names). A third architecture needs: a value in
`specs.ARCHITECTURES` with its `ModelSpec.conditioning`, a branch here in `encode_prompts` and
`unet_kwargs` (or its own Conditioning type), its detection in `components.detect_architecture`,
and its loader parts; heads, training, test-time and the torch backend are unchanged.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Sequence, Union

import torch

from .errors import ModelLoadError
from .specs import NAMES, SDXL, TIME_IDS


@dataclass(frozen=True)
class Conditioning:
    """SDXL conditioning of a batch: hidden_states [B, 77, D], text_embeds [B, P].

    Behaves like the hidden state tensor where the code around a head needs a tensor (batch
    indexing, `.to`, `.float`, `shape`), carrying text_embeds along."""

    hidden_states: torch.Tensor
    text_embeds: torch.Tensor
    vae_scale_factor: int = 8  # pixels per latent cell: time_ids from the latent's size

    shape = property(lambda self: self.hidden_states.shape)
    dtype = property(lambda self: self.hidden_states.dtype)
    device = property(lambda self: self.hidden_states.device)

    def __len__(self) -> int:
        return len(self.hidden_states)

    def __getitem__(self, index) -> "Conditioning":
        return replace(self, hidden_states=self.hidden_states[index],
                       text_embeds=self.text_embeds[index])

    def _map(self, fn) -> "Conditioning":
        return replace(self, hidden_states=fn(self.hidden_states), text_embeds=fn(self.text_embeds))

    def to(self, *args, **kwargs) -> "Conditioning":
        return self._map(lambda t: t.to(*args, **kwargs))

    def float(self) -> "Conditioning":
        return self._map(lambda t: t.float())

    def clone(self) -> "Conditioning":
        return self._map(lambda t: t.clone())

    def time_ids(self, height: int, width: int) -> torch.Tensor:
        """[B, 6] for an image of height x width pixels (original = target size, crop 0, 0)."""
        return add_time_ids((height, width), (0, 0), (height, width), self.dtype,
                            self.device).repeat(len(self), 1)


Conditioned = Union[torch.Tensor, Conditioning]  # what flows from the text encoder to the UNet


def add_time_ids(original_size, crops_coords_top_left, target_size, dtype=torch.float32,
                 device=None) -> torch.Tensor:
    """SDXL's micro-conditioning [1, 6], as diffusers' `_get_add_time_ids` builds it."""
    ids = list(original_size) + list(crops_coords_top_left) + list(target_size)
    return torch.tensor([ids], dtype=dtype, device=device)


def check_add_time_ids(unet_config, projection_dim: int, source: str) -> None:
    """The UNet's added embedding must take time ids plus text_embeds, as diffusers checks
    (addition_time_embed_dim * 6 + projection_dim == add_embedding input width)."""
    expected = unet_config.get("projection_class_embeddings_input_dim")
    passed = unet_config.get("addition_time_embed_dim", 0) * TIME_IDS + projection_dim
    if expected != passed:
        raise ModelLoadError(f"model '{source}': the UNet expects an added embedding of "
                             f"{expected}, but time ids and text_embeds give {passed} (check "
                             "unet addition_time_embed_dim and text_encoder_2 projection_dim)")


def text_feature(cond: Conditioned) -> torch.Tensor:
    """What a PAHI head reads: the UNet's encoder_hidden_states [B, 77, D]."""
    return cond.hidden_states if isinstance(cond, Conditioning) else cond


def unet_kwargs(cond: Conditioned, latents: torch.Tensor) -> dict:
    """Keyword arguments of the UNet call for `latents` [B, C, h, w]."""
    if not isinstance(cond, Conditioning):
        return {"encoder_hidden_states": cond}
    h, w = (s * cond.vae_scale_factor for s in latents.shape[-2:])
    return {"encoder_hidden_states": cond.hidden_states,
            "added_cond_kwargs": {"text_embeds": cond.text_embeds, "time_ids": cond.time_ids(h, w)}}


def by_name(cond: Conditioned, spec, height: int, width: int) -> dict:
    """`cond` as the spec's conditioning tensors by name (`ModelSpec.conditioning`): SD 2.x
    {text_embeddings [B, 77, D]}; SDXL adds text_embeds [B, P] and time_ids [B, 6] for an image
    of height x width pixels."""
    if not isinstance(cond, Conditioning):
        return {t.name: cond for t in spec.conditioning}  # one tensor: the hidden states
    values = {"encoder_hidden_states": cond.hidden_states, "text_embeds": cond.text_embeds,
              "time_ids": cond.time_ids(height, width)}
    return {t.name: values[t.unet_arg] for t in spec.conditioning}


def from_names(text: dict, spec) -> Conditioned:
    """`by_name`'s inverse: what `sampling.denoise` and the heads take (SDXL's time ids are
    rebuilt from the latent's size by `unet_kwargs`: the same values at the run's size)."""
    by_arg = {t.unet_arg: text[t.name] for t in spec.conditioning}
    if spec.architecture != SDXL:
        return by_arg["encoder_hidden_states"]
    return Conditioning(by_arg["encoder_hidden_states"], by_arg["text_embeds"],
                        spec.vae_scale_factor)


def text_encoder_outputs(spec) -> tuple[str, ...]:
    """Names of the conditioning tensors a text encoder graph outputs, in spec order: all but
    time_ids, which the host makes at the run's size (`host_conditioning`)."""
    return tuple(t.name for t in spec.conditioning if t.name != NAMES.time_ids)


def host_conditioning(spec, batch: int, height: int, width: int, dtype=torch.float32,
                      device=None) -> dict:
    """The conditioning tensors no graph computes from the prompt: SDXL {time_ids [B, 6]} for
    an image of height x width pixels (as `Conditioning.time_ids`); {} for SD 2.x."""
    if NAMES.time_ids not in (t.name for t in spec.conditioning):
        return {}
    ids = add_time_ids((height, width), (0, 0), (height, width), dtype, device)
    return {NAMES.time_ids: ids.repeat(batch, 1)}


def unet_kwargs_by_name(spec, text: dict) -> dict:
    """UNet keyword arguments from the conditioning tensors by name (graphs: `by_name`'s
    dict), placed as `ModelSpec.conditioning` declares (`added`: in added_cond_kwargs)."""
    kwargs, added = {}, {}
    for t in spec.conditioning:
        (added if t.added else kwargs)[t.unet_arg] = text[t.name]
    return {**kwargs, "added_cond_kwargs": added} if added else kwargs


def cat(conds: Sequence[Conditioned]) -> Conditioned:
    """Concatenate along the batch."""
    if conds and isinstance(conds[0], Conditioning):
        return replace(conds[0], hidden_states=torch.cat([c.hidden_states for c in conds]),
                       text_embeds=torch.cat([c.text_embeds for c in conds]))
    return torch.cat(list(conds))


def stack(rows: Sequence[Conditioned]) -> Conditioned:
    """Stack single-image rows (`cond[i]`) into a batch."""
    if rows and isinstance(rows[0], Conditioning):
        return replace(rows[0], hidden_states=torch.stack([c.hidden_states for c in rows]),
                       text_embeds=torch.stack([c.text_embeds for c in rows]))
    return torch.stack(list(rows))


def tokenize(tokenizer, prompts: Sequence[str], max_tokens: int = 77) -> torch.Tensor:
    """Token ids [B, max_tokens] (int64), padded and truncated like diffusers; warns on
    truncation."""
    ids = tokenizer(list(prompts), padding="max_length", max_length=max_tokens, truncation=True,
                    return_tensors="pt").input_ids
    full = tokenizer(list(prompts), padding="longest", truncation=False).input_ids
    for prompt, toks in zip(prompts, full):
        if len(toks) > max_tokens:
            warnings.warn(f"prompt truncated to {max_tokens} tokens ({len(toks)} given): "
                          f"'{prompt[:60]}...'", stacklevel=2)
    return ids


def tokenize_prompts(components, prompts: Sequence[str]) -> torch.Tensor:
    """Token ids of `spec.token_ids_shape` per prompt: [B, 77], or [B, 2, 77] for SDXL."""
    spec = components.spec
    ids = tokenize(components.tokenizer, prompts, spec.max_tokens)
    if spec.architecture != SDXL:
        return ids
    with warnings.catch_warnings():  # the first tokenizer has warned about truncation already
        warnings.simplefilter("ignore")
        ids_2 = tokenize(components.tokenizer_2, prompts, spec.max_tokens)
    return torch.stack([ids, ids_2], dim=1)


def encode_prompts(components, ids: torch.Tensor) -> Conditioned:
    """Token ids from `tokenize_prompts` -> the UNet's conditioning (module docstring)."""
    spec = components.spec
    if spec.architecture != SDXL:
        return components.text_encoder(ids.to(components.text_encoder.device))[0]
    hidden = []
    for row, encoder in enumerate((components.text_encoder, components.text_encoder_2)):
        out = encoder(ids[:, row].to(encoder.device), output_hidden_states=True)
        hidden.append(out.hidden_states[-2])
    pooled = out[0]  # CLIPTextModelWithProjection: text_embeds [B, P]
    return Conditioning(torch.cat(hidden, dim=-1), pooled, spec.vae_scale_factor)
