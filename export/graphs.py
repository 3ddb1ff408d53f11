"""What gets exported: torch modules with graph-shaped signatures, and their tensor names.

Each `GraphSpec` names a graph's inputs/outputs from `specs.NAMES` (one source of truth, read by
the exporter, the engine builder and the runtimes). The modules call the reference sampler's
functions (`pahi_rt.sampling`). Fused graphs (input ids + eps -> uint8 NHWC image) are composed
from these component graphs by `compose.py`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .. import sampling
from ..specs import GRAPHS, NAMES

TEXT_ENCODER, HEAD, UNET, DECODER = (GRAPHS.text_encoder, GRAPHS.head, GRAPHS.unet,
                                     GRAPHS.decoder)


@dataclass(frozen=True)
class GraphSpec:
    """A graph's name (= artifact file stem), its inputs and outputs."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


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
    return GraphSpec(name, *FUSED_IO)


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


def build_module(name: str, components, head: nn.Module | None = None) -> nn.Module:
    """The torch module behind component graph `name` (fused graphs are composed)."""
    if name == TEXT_ENCODER:
        return TextEncoderGraph(components.text_encoder)
    if name == HEAD:
        return HeadGraph(head)
    if name == UNET:
        return UNetGraph(components.unet)
    if name == DECODER:
        return DecoderGraph(components.decoder, components.spec.latent_scale)
    raise ValueError(f"{name} is not a component graph")


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
