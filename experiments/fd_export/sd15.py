"""Stable Diffusion 1.x: export of a local diffusers checkpoint folder or of in-memory parts
(nothing is downloaded), and the SD-1.5 UNet architecture config (random-init timing and FLOP checks).

Writes, through fd_export.export_model: time_embed / encoder / decoder / full (split UNet),
cond_encoder (CLIP text encoder: token ids [B,77] -> last_hidden_state [B,77,768]), vae_decoder
(latents / scaling_factor -> images in [-1,1]), tokenizer.json (HF tokenizers format, read by the
Rust `tokenizers` crate) and manifest.json with the checkpoint's scheduler config.
Defaults: float16 on CUDA, float32 on CPU.
"""
from __future__ import annotations

import json
import os

import torch

from .export import export_model
from .graphs import TextEncode

# The SD-1.5 UNet architecture (diffusers config of runwayml/stable-diffusion-v1-5/unet).
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8,
)


def export_sd15(checkpoint: str, out: str, device: str = "cpu", dtype: str | None = None, name: str | None = None):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    for sub in ("unet", "text_encoder", "tokenizer", "vae", "scheduler"):
        if not os.path.isdir(os.path.join(checkpoint, sub)):
            raise SystemExit(f"{checkpoint}: missing `{sub}/` (expected a diffusers Stable Diffusion folder)")
    unet = UNet2DConditionModel.from_pretrained(checkpoint, subfolder="unet")
    text = CLIPTextModel.from_pretrained(checkpoint, subfolder="text_encoder")
    tok = CLIPTokenizer.from_pretrained(checkpoint, subfolder="tokenizer")
    vae = AutoencoderKL.from_pretrained(checkpoint, subfolder="vae")
    with open(os.path.join(checkpoint, "scheduler", "scheduler_config.json")) as f:
        sched = json.load(f)
    return export_sd15_parts(unet, text, tok, vae, sched, out, name or os.path.basename(os.path.normpath(checkpoint)),
                             device, dtype)


def export_sd15_parts(unet, text, tok, vae, sched: dict, out: str, name: str, device: str = "cpu",
                      dtype: str | None = None):
    """Export in-memory Stable Diffusion 1.x parts (UNet2DConditionModel, CLIPTextModel,
    CLIPTokenizer, AutoencoderKL, scheduler config dict): what export_sd15 does after loading a
    folder, shared with experiments/make_sd15_random.py."""
    torch_dtype = {"float32": torch.float32, "float16": torch.float16}[dtype or ("float16" if device.startswith("cuda") else "float32")]
    os.makedirs(out, exist_ok=True)
    tok.backend_tokenizer.save(os.path.join(out, "tokenizer.json"))
    max_len = int(tok.model_max_length if tok.model_max_length < 10_000 else text.config.max_position_embeddings)
    cond_spec = dict(kind="text", seq_len=max_len, dim=int(text.config.hidden_size),
                     tokenizer=dict(file="tokenizer.json", max_length=max_len, pad_id=int(tok.pad_token_id)))
    return export_model(
        out, name, unet, sched, TextEncode(text), cond_spec,
        cond_example=torch.zeros(1, max_len, dtype=torch.long), vae=vae,
        vae_scaling_factor=float(vae.config.scaling_factor), dtype=torch_dtype, device=device,
    )
