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

from .. import conditioning, sampling
from ..conditioning import text_encoder_outputs
from ..specs import GRAPHS, NAMES

TEXT_ENCODER, HEAD, UNET, DECODER = (GRAPHS.text_encoder, GRAPHS.head, GRAPHS.unet,
                                     GRAPHS.decoder)


@dataclass(frozen=True)
class GraphSpec:
    """A graph's name (= artifact file stem), its inputs and outputs."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def graph_io(name: str, spec=None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(inputs, outputs) of component graph `name` for a model `spec` (None: SD 2.x's). The
    text encoder outputs and the UNet takes the spec's conditioning tensors by name
    (`ModelSpec.conditioning`; SDXL: text_embeddings, text_embeds, and time_ids from the host)."""
    conds = tuple(t.name for t in spec.conditioning) if spec else (NAMES.text_embeddings,)
    encoded = text_encoder_outputs(spec) if spec else (NAMES.text_embeddings,)
    return {TEXT_ENCODER: ((NAMES.input_ids,), encoded),
            HEAD: ((NAMES.eps, NAMES.text_embeddings), (NAMES.noise,)),
            UNET: ((NAMES.sample, NAMES.timestep, *conds), (NAMES.noise_pred,)),
            DECODER: ((NAMES.latents,), (NAMES.image,))}[name]


COMPONENTS = (TEXT_ENCODER, HEAD, UNET, DECODER)
FUSED_IO = ((NAMES.input_ids, NAMES.eps), (NAMES.image,))


def graph_spec(name: str, spec=None) -> GraphSpec:
    """Spec of a component graph (`unet`, ...) or a fused graph named after its mode, for a
    model `spec` (None: SD 2.x's names)."""
    if name in COMPONENTS:
        return GraphSpec(name, *graph_io(name, spec))
    return GraphSpec(name, *FUSED_IO)


class TextEncoderGraph(nn.Module):
    """input_ids [B, *spec.token_ids_shape] int64 -> the text encoder outputs by spec name
    (`conditioning.text_encoder_outputs`): SD 2.x text_embeddings [B, 77, D]; SDXL both
    encoders in one graph, (text_embeddings [B, 77, D1 + D2], text_embeds [B, P])."""

    def __init__(self, components):
        super().__init__()
        self.spec = components.spec
        self.text_encoder = components.text_encoder
        self.text_encoder_2 = getattr(components, "text_encoder_2", None)

    def forward(self, input_ids):
        if self.text_encoder_2 is None:
            return sampling.encode_text(self.text_encoder, input_ids)
        cond = conditioning.encode_prompts(self, input_ids)
        return cond.hidden_states, cond.text_embeds


class HeadGraph(nn.Module):
    """(eps [B, 4, h, w], text_embeddings) -> unit-scale noise mu + sigma * eps."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, eps, text_embeddings):
        return self.head(eps, text_embeddings)


class UNetGraph(nn.Module):
    """(sample, timestep [B], *the spec's conditioning tensors) -> noise_pred; the Euler
    update stays outside."""

    def __init__(self, unet: nn.Module, spec=None):
        super().__init__()
        self.unet = unet
        self.names = [t.name for t in spec.conditioning] if spec else [NAMES.text_embeddings]
        self.spec = spec

    def forward(self, sample, timestep, *conds):
        if self.spec is None:
            return self.unet(sample, timestep, encoder_hidden_states=conds[0]).sample
        kwargs = conditioning.unet_kwargs_by_name(self.spec, dict(zip(self.names, conds)))
        return self.unet(sample, timestep, **kwargs).sample


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
        return TextEncoderGraph(components)
    if name == HEAD:
        return HeadGraph(head)
    if name == UNET:
        return UNetGraph(components.unet, components.spec)
    if name == DECODER:
        return DecoderGraph(components.decoder, components.spec.latent_scale)
    raise ValueError(f"{name} is not a component graph")


def example_inputs(name: str, components, batch: int, height: int, width: int) -> tuple:
    """Host example inputs for tracing graph `name` (float32; fp16 comes after export)."""
    spec = components.spec
    c, h, w = spec.latent_shape(height, width)
    ids = torch.zeros((batch, *spec.token_ids_shape), dtype=torch.int64)
    latent = torch.randn((batch, c, h, w), generator=torch.Generator().manual_seed(0))
    inputs = {NAMES.input_ids: ids, NAMES.eps: latent, NAMES.sample: latent,
              NAMES.latents: latent, NAMES.timestep: torch.full((batch,), 999.0),
              **{t.name: torch.zeros((batch, *t.shape)) for t in spec.conditioning},
              **conditioning.host_conditioning(spec, batch, height, width)}
    return tuple(inputs[n] for n in graph_spec(name, spec).inputs)
