"""Stable Diffusion 1.x / 2.x / XL: export of a local diffusers pipeline folder or of in-memory parts
(nothing is downloaded), one code path for the three; and the SD-1.5 UNet architecture config
(random-init timing and FLOP checks).

Writes, through fd_export.export_model: the split UNet (time_embed / encoder / decoder / full, and
cond_prepare for SDXL's added conditioning), cond_encoder (token ids -> text states as the pipeline
builds them: SD 1.x/2.x CLIP last_hidden_state; SDXL both encoders' penultimate hidden states
concatenated + the second encoder's pooled projection), vae_decoder (latents / scaling_factor ->
images in [-1,1]; float32 when the VAE config says `force_upcast`), tokenizer.json (+
tokenizer_2.json; HF tokenizers format, read by the Rust `tokenizers` crate) and manifest.json with
the checkpoint's scheduler config. Defaults: float16 on CUDA, float32 on CPU.
"""
from __future__ import annotations

import json
import os

import torch
from torch import nn

from .errors import ExportError
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


class TextEncodeXL(nn.Module):
    """SDXL's prompt encoding (StableDiffusionXLPipeline.encode_prompt, clip_skip None): each
    encoder's penultimate hidden states, concatenated on features; the pooled embedding is the
    second encoder's projected text embedding."""

    def __init__(self, text, text_2):
        super().__init__()
        self.text, self.text_2 = text, text_2

    def forward(self, ids, ids_2):
        h = self.text(ids, output_hidden_states=True, return_dict=True).hidden_states[-2]
        out = self.text_2(ids_2, output_hidden_states=True, return_dict=True)
        return torch.cat([h, out.hidden_states[-2]], dim=-1), out.text_embeds


def _need(checkpoint: str, subs) -> None:
    for sub in subs:
        if not os.path.isdir(os.path.join(checkpoint, sub)):
            raise ExportError(f"{checkpoint}: missing `{sub}/` (expected a diffusers Stable Diffusion folder with "
                             f"{', '.join(s + '/' for s in subs)})")


def export_sd(checkpoint: str, out: str, device: str = "cpu", dtype: str | None = None, name: str | None = None,
              controlnet: str | None = None, tome: dict | None = None, frames: int | None = None,
              save_weights: bool = False, aoti=False, aoti_max_batch=None):
    """Export a local diffusers Stable Diffusion folder (1.x, 2.x or XL: XL when it has
    `text_encoder_2/`), with an optional local ControlNetModel folder for it; `save_weights` keeps
    the UNet's weights beside the graphs (what add_deepcache / add_teacache / add_tgate trace from)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    if not os.path.isdir(checkpoint):
        raise ExportError(f"{checkpoint}: not a folder (expected a local diffusers Stable Diffusion folder)")
    xl = os.path.isdir(os.path.join(checkpoint, "text_encoder_2")) or os.path.isdir(os.path.join(checkpoint, "tokenizer_2"))
    subs = ["unet", "text_encoder", "tokenizer", "vae", "scheduler"] + (["text_encoder_2", "tokenizer_2"] if xl else [])
    _need(checkpoint, subs)
    if controlnet is not None and not os.path.isfile(os.path.join(controlnet, "config.json")):
        raise ExportError(f"{controlnet}: missing `config.json` (expected a diffusers ControlNetModel folder)")
    with open(os.path.join(checkpoint, "unet", "config.json")) as f:
        video = json.load(f).get("_class_name") == "UNet3DConditionModel"
    if video:  # text-to-video (damo-vilab/text-to-video-ms-1.7b form): frames as an extra axis
        from diffusers import UNet3DConditionModel

        unet = UNet3DConditionModel.from_pretrained(checkpoint, subfolder="unet")
    else:
        unet = UNet2DConditionModel.from_pretrained(checkpoint, subfolder="unet")
    text = CLIPTextModel.from_pretrained(checkpoint, subfolder="text_encoder")
    tok = CLIPTokenizer.from_pretrained(checkpoint, subfolder="tokenizer")
    vae = AutoencoderKL.from_pretrained(checkpoint, subfolder="vae")
    with open(os.path.join(checkpoint, "scheduler", "scheduler_config.json")) as f:
        sched = json.load(f)
    name = name or os.path.basename(os.path.normpath(checkpoint))
    cn = None
    if controlnet is not None:
        from diffusers import ControlNetModel

        cn = ControlNetModel.from_pretrained(controlnet)
    if not xl:
        return export_sd_parts(unet, text, tok, vae, sched, out, name, device, dtype, controlnet=cn, tome=tome,
                               frames=frames, save_weights=save_weights, aoti=aoti, aoti_max_batch=aoti_max_batch)
    if cn is not None:
        raise ExportError(f"{controlnet}: SDXL ControlNets (added embeddings) are not exported yet")
    text_2 = CLIPTextModelWithProjection.from_pretrained(checkpoint, subfolder="text_encoder_2")
    tok_2 = CLIPTokenizer.from_pretrained(checkpoint, subfolder="tokenizer_2")
    force_zeros = True  # StableDiffusionXLPipeline's default
    index = os.path.join(checkpoint, "model_index.json")
    if os.path.isfile(index):
        with open(index) as f:
            force_zeros = bool(json.load(f).get("force_zeros_for_empty_prompt", True))
    return export_sd_parts(unet, text, tok, vae, sched, out, name, device, dtype, text_2=text_2, tok_2=tok_2,
                           force_zeros_for_empty_prompt=force_zeros, tome=tome, save_weights=save_weights, aoti=aoti,
                           aoti_max_batch=aoti_max_batch)


def _tokenizer_spec(tok, text, file: str, files: dict) -> dict:
    """The manifest entry of a tokenizer saved as `file`; its content goes into `files`, which
    export_model writes only after every check passed (nothing is written for a refused export)."""
    files[file] = tok.backend_tokenizer.to_str(pretty=True)
    max_len = int(tok.model_max_length if tok.model_max_length < 10_000 else text.config.max_position_embeddings)
    return dict(file=file, max_length=max_len, pad_id=int(tok.pad_token_id))


def export_sd_parts(unet, text, tok, vae, sched: dict, out: str, name: str, device: str = "cpu",
                    dtype: str | None = None, text_2=None, tok_2=None, force_zeros_for_empty_prompt: bool = True,
                    controlnet=None, tome: dict | None = None, frames: int | None = None,
                    save_weights: bool = False, aoti=False, aoti_max_batch=None):
    """Export in-memory Stable Diffusion parts (UNet2DConditionModel, CLIPTextModel, CLIPTokenizer,
    AutoencoderKL, scheduler config dict; for SDXL also CLIPTextModelWithProjection + its
    tokenizer): what export_sd does after loading a folder, shared with the random-init builders."""
    from .forms import unet_form
    from .video import check_video, is_video_unet

    if is_video_unet(unet):
        check_video(unet, frames)  # refuse before writing anything
    else:
        unet_form(unet.config)  # refuse an unsupported UNet before writing anything
    torch_dtype = {"float32": torch.float32, "float16": torch.float16}[dtype or ("float16" if device.startswith("cuda") else "float32")]
    files = {}
    spec = _tokenizer_spec(tok, text, "tokenizer.json", files)
    max_len = spec["max_length"]
    if text_2 is None:
        # SD 2.x uses linear projections; a UNet3D is the text-to-video-ms form
        family = "t2v" if is_video_unet(unet) else ("sd2" if unet.config.use_linear_projection else "sd1")
        cond_spec = dict(kind="text", seq_len=max_len, dim=int(text.config.hidden_size), tokenizer=spec,
                         uncond="empty_prompt")
        encoder, example = TextEncode(text), torch.zeros(1, max_len, dtype=torch.long)
    else:
        family = "sdxl"
        spec_2 = _tokenizer_spec(tok_2, text_2, "tokenizer_2.json", files)
        if spec_2["max_length"] != max_len:
            raise ExportError(f"tokenizer_2 pads to {spec_2['max_length']} tokens, tokenizer to {max_len}")
        cond_spec = dict(kind="text", seq_len=max_len, dim=int(text.config.hidden_size + text_2.config.hidden_size),
                         tokenizer=spec, tokenizer_2=spec_2, pooled_dim=int(text_2.config.projection_dim),
                         uncond="zeros" if force_zeros_for_empty_prompt else "empty_prompt")
        encoder = TextEncodeXL(text, text_2)
        example = [torch.zeros(1, max_len, dtype=torch.long)] * 2
    return export_model(
        out, name, unet, sched, encoder, cond_spec, cond_example=example, vae=vae,
        vae_scaling_factor=float(vae.config.scaling_factor), dtype=torch_dtype, device=device, family=family,
        controlnet=controlnet, tome=tome, frames=frames, save_weights=save_weights, extra_files=files, aoti=aoti,
        aoti_tol=1e-2 if torch_dtype == torch.float16 else 1e-5, aoti_max_batch=aoti_max_batch,
    )
