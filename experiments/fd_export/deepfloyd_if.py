"""DeepFloyd-IF stage I: export of a local diffusers IF stage-I folder (unet/, text_encoder/ (T5),
tokenizer/, scheduler/); nothing is downloaded.

Writes, through fd_export.export_model: the split UNet in pixel space (learned-range variance output:
[noise, variance values] on channels), cond_prepare (the T5 states pooled into the time embedding
by `add_embedding`, and projected for attention by `encoder_hid_proj`), cond_encoder (T5 encoder:
token ids -> last hidden state, with the pad mask the pipeline passes), tokenizer.json (lowercased
and stripped prompts: the pipeline with clean_caption=False; its caption cleaning is not reproduced)
and the DDPM scheduler config (variance_type learned_range, dynamic thresholding).
"""
from __future__ import annotations

import json
import os

import torch

from .errors import ExportError
from .export import export_model
from .graphs import T5Encode


def export_if(checkpoint: str, out: str, device: str = "cpu", dtype: str | None = None, name: str | None = None,
              aoti=False, aoti_max_batch=None):
    from diffusers import UNet2DConditionModel
    from transformers import AutoTokenizer, T5EncoderModel

    for sub in ("unet", "text_encoder", "tokenizer", "scheduler"):
        if not os.path.isdir(os.path.join(checkpoint, sub)):
            raise ExportError(f"{checkpoint}: missing `{sub}/` (expected a diffusers DeepFloyd-IF stage I folder with "
                             "unet/, text_encoder/, tokenizer/, scheduler/)")
    unet = UNet2DConditionModel.from_pretrained(checkpoint, subfolder="unet")
    if unet.config.class_embed_type is not None:
        raise ExportError(f"{checkpoint}/unet: class_embed_type {unet.config.class_embed_type!r} (IF stage II's noise-level "
                         "conditioning) is not exported; only stage I is supported")
    text = T5EncoderModel.from_pretrained(checkpoint, subfolder="text_encoder")
    tok = AutoTokenizer.from_pretrained(checkpoint, subfolder="tokenizer")
    with open(os.path.join(checkpoint, "scheduler", "scheduler_config.json")) as f:
        sched = json.load(f)
    return export_if_parts(unet, text, tok, sched, out, name or os.path.basename(os.path.normpath(checkpoint)),
                           device, dtype, aoti, aoti_max_batch)


def export_if_parts(unet, text, tok, sched: dict, out: str, name: str, device: str = "cpu", dtype: str | None = None,
                    aoti=False, aoti_max_batch=None):
    """Export in-memory IF stage-I parts (UNet2DConditionModel, T5EncoderModel, a fast T5
    tokenizer, scheduler config dict); `aoti` as export_model's."""
    from .forms import unet_form

    unet_form(unet.config)
    if not getattr(tok, "is_fast", False):
        raise ExportError("the IF tokenizer must be a fast tokenizer (tokenizer.json), e.g. T5TokenizerFast")
    torch_dtype = {"float32": torch.float32, "float16": torch.float16}[dtype or ("float16" if device.startswith("cuda") else "float32")]
    # the tokenizer file is written by export_model after every check passed
    files = {"tokenizer.json": tok.backend_tokenizer.to_str(pretty=True)}
    max_len = 77  # IFPipeline.encode_prompt: max_length = 77
    spec = dict(file="tokenizer.json", max_length=max_len, pad_id=int(tok.pad_token_id), lowercase=True)
    cond_spec = dict(kind="text", seq_len=max_len, dim=int(text.config.d_model), tokenizer=spec, uncond="empty_prompt")
    return export_model(
        out, name, unet, sched, T5Encode(text, int(tok.pad_token_id)), cond_spec,
        cond_example=torch.ones(1, max_len, dtype=torch.long), vae=None, dtype=torch_dtype, device=device,
        family="if-stage1", extra_files=files, aoti=aoti, aoti_max_batch=aoti_max_batch,
        aoti_tol=1e-2 if torch_dtype == torch.float16 else 1e-5,
    )
