"""Architectures of the presets: plain diffusers/transformers config dicts, so `--model DIR`
checkpoints and presets go through the same constructors (`specs.PRESETS` names them)."""
from __future__ import annotations

from types import MappingProxyType

SD21_UNET = MappingProxyType(dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                      "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=1024, use_linear_projection=True, norm_num_groups=32, act_fn="silu",
    flip_sin_to_cos=True, freq_shift=0,
))
OPENCLIP_H_TEXT = MappingProxyType(dict(  # OpenCLIP ViT-H text tower, penultimate layer (23 of 24)
    vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
    num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=512,
    layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407, pad_token_id=0,
))
TAESD = MappingProxyType(dict())  # AutoencoderTiny's defaults are the TAESD architecture
SD_VAE = MappingProxyType(dict(  # SD 1.x/2.x's full VAE (AutoencoderKL), `--decoder vae`
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
    block_out_channels=(128, 256, 512, 512), act_fn="silu", scaling_factor=0.18215,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
))
SDXL_VAE = MappingProxyType({**SD_VAE, "scaling_factor": 0.13025})  # SDXL's: SD's, rescaled

TINY_UNET = MappingProxyType(dict(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
    block_out_channels=(32, 64), attention_head_dim=(2, 4),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32, use_linear_projection=True, norm_num_groups=16, act_fn="silu",
    flip_sin_to_cos=True, freq_shift=0,
))
TINY_TEXT = MappingProxyType(dict(
    vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, max_position_embeddings=77, hidden_act="gelu", projection_dim=32,
    layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407, pad_token_id=0,
))
TINY_TAESD = MappingProxyType(dict(
    encoder_block_out_channels=(16, 16, 16, 16), decoder_block_out_channels=(16, 16, 16, 16),
    num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1),
))
TINY_VAE = MappingProxyType(dict(  # four levels, as SD_VAE: 8 pixels per latent cell
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=4,
    block_out_channels=(8, 8, 16, 16), act_fn="silu", scaling_factor=0.18215, sample_size=64,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
))

# SDXL (sdxl-turbo's configs: UNet sample_size 64 -> 512x512 images). CLIP-L penultimate layer
# plus OpenCLIP-bigG's penultimate layer and pooled projection.
SDXL_UNET = MappingProxyType(dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280), attention_head_dim=(5, 10, 20),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048, use_linear_projection=True,
    addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, norm_num_groups=32, act_fn="silu",
    flip_sin_to_cos=True, freq_shift=0,
))
CLIP_L_TEXT = MappingProxyType(dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
    num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
    projection_dim=768, layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407,
    pad_token_id=49407,
))
OPENCLIP_BIGG_TEXT = MappingProxyType(dict(  # CLIPTextModelWithProjection
    vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
    num_attention_heads=20, max_position_embeddings=77, hidden_act="gelu", projection_dim=1280,
    layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407, pad_token_id=0,
))
TINY_XL_UNET = MappingProxyType(dict(  # diffusers' SDXL dummy components, one layer per block
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
    block_out_channels=(32, 64), attention_head_dim=(2, 4),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 2),
    cross_attention_dim=64, use_linear_projection=True, addition_embed_type="text_time",
    addition_time_embed_dim=8, projection_class_embeddings_input_dim=80, norm_num_groups=16,
    act_fn="silu", flip_sin_to_cos=True, freq_shift=0,
))
