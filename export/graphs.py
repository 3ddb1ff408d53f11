"""What gets exported: torch modules with graph-shaped signatures, and their tensor names.

Each `GraphSpec` names a graph's inputs/outputs from `specs.NAMES` (one source of truth, read by
the exporter, the engine builder and the runtimes). Fused graphs reuse the reference sampler's
functions (`pahi_rt.sampling`), so they compute the same math by construction:
input ids + eps -> text encoder -> noise source -> Euler steps -> TAESD -> uint8 NHWC image.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .. import sampling
from ..specs import NAMES

TEXT_ENCODER, HEAD, UNET, DECODER = "text_encoder", "head", "unet", "decoder"
COMPONENTS = (TEXT_ENCODER, HEAD, UNET, DECODER)


@dataclass(frozen=True)
class GraphSpec:
    """A graph's name (= artifact file stem), its inputs and outputs, and whether it is fused."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    fused: bool = False


GRAPH_IO = {
    TEXT_ENCODER: ((NAMES.input_ids,), (NAMES.text_embeddings,)),
    HEAD: ((NAMES.eps, NAMES.text_embeddings), (NAMES.noise,)),
    UNET: ((NAMES.sample, NAMES.timestep, NAMES.text_embeddings), (NAMES.noise_pred,)),
    DECODER: ((NAMES.latents,), (NAMES.image,)),
}
FUSED_IO = ((NAMES.input_ids, NAMES.eps), (NAMES.image,))


def graph_spec(name: str) -> GraphSpec:
    """Spec of a component graph (`unet`, ...) or a fused graph named after its mode."""
    if name in GRAPH_IO:
        return GraphSpec(name, *GRAPH_IO[name])
    return GraphSpec(name, *FUSED_IO, fused=True)


class TextEncoderGraph(nn.Module):
    """input_ids [B, 77] int64 -> text_embeddings [B, 77, D]."""

    def __init__(self, text_encoder: nn.Module):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids):
        return sampling.encode_text(self.text_encoder, input_ids)


class HeadGraph(nn.Module):
    """(eps [B, 4, h, w], text_embeddings) -> unit-scale noise mu + sigma * eps."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, eps, text_embeddings):
        return self.head(eps, text_embeddings)


class UNetGraph(nn.Module):
    """(sample, timestep [B], text_embeddings) -> noise_pred; the Euler update stays outside."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, text_embeddings):
        return self.unet(sample, timestep, encoder_hidden_states=text_embeddings).sample


class DecoderGraph(nn.Module):
    """x0 latents -> image [B, 3, H, W] in [-1, 1]."""

    def __init__(self, decoder: nn.Module, latent_scale: float):
        super().__init__()
        self.decoder, self.latent_scale = decoder, latent_scale

    def forward(self, latents):
        return sampling.decode(self.decoder, latents, self.latent_scale)


class FusedGraph(nn.Module):
    """Prompt tokens and eps -> uint8 image [B, H, W, 3]: the whole reference sampler."""

    def __init__(self, components, schedule: sampling.Schedule, head: nn.Module | None = None):
        super().__init__()
        self.text_encoder, self.unet = components.text_encoder, components.unet
        self.decoder, self.head = components.decoder, head
        self.schedule, self.latent_scale = schedule, components.spec.latent_scale

    def forward(self, input_ids, eps):
        emb = sampling.encode_text(self.text_encoder, input_ids)
        noise = self.head(eps, emb) if self.head is not None else sampling.gaussian(eps, emb)
        latents = sampling.denoise(self.unet, noise, emb, self.schedule)
        image = sampling.decode(self.decoder, latents, self.latent_scale)
        x = (image.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
        return (x * 255).round().to(torch.uint8)


def build_module(name: str, components, head: nn.Module | None = None, steps: int = 1
                 ) -> nn.Module:
    """The torch module behind graph `name` (component name, or a fused mode's name)."""
    if name == TEXT_ENCODER:
        return TextEncoderGraph(components.text_encoder)
    if name == HEAD:
        return HeadGraph(head)
    if name == UNET:
        return UNetGraph(components.unet)
    if name == DECODER:
        return DecoderGraph(components.decoder, components.spec.latent_scale)
    schedule = sampling.Schedule.from_spec(components.spec.scheduler, steps)
    return FusedGraph(components, schedule, None if name.startswith("gaussian") else head)


def example_inputs(name: str, components, batch: int, height: int, width: int) -> tuple:
    """Host example inputs for tracing graph `name` (float32; fp16 comes after export)."""
    spec = components.spec
    c, h, w = spec.latent_shape(height, width)
    ids = torch.zeros((batch, spec.max_tokens), dtype=torch.int64)
    emb = torch.zeros((batch, spec.max_tokens, spec.text_dim))
    latent = torch.randn((batch, c, h, w), generator=torch.Generator().manual_seed(0))
    inputs = {NAMES.input_ids: ids, NAMES.text_embeddings: emb, NAMES.eps: latent,
              NAMES.sample: latent, NAMES.latents: latent,
              NAMES.timestep: torch.full((batch,), 999.0)}
    return tuple(inputs[n] for n in graph_spec(name).inputs)
