"""Build a tiny random-init Stable-Diffusion-shaped checkpoint (the real classes built from config
dicts: UNet2DConditionModel, CLIPTextModel, AutoencoderKL, the real CLIP BPE vocabulary shipped in
PyPI package open_clip_torch), export it with export_sd.py, and store Python reference outputs.

  python experiments/tests/make_sd_tiny.py target/fixtures/sd-tiny

Output (regenerated when this script or the exporters change): OUT/checkpoint (diffusers folder), OUT/model
(fd export), OUT/reference.safetensors + OUT/prompts.json for the Rust tests in
crates/fd-model/tests/sd_tiny.rs.
"""
from __future__ import annotations

import json
import os
import shutil
import sys

import torch
from diffusers.utils import logging as diffusers_logging

from fd_export.clip_vocab import build_clip_tokenizer, open_clip_simple_tokenizer

diffusers_logging.set_verbosity_error()

HERE = os.path.dirname(os.path.abspath(__file__))

PROMPTS = [
    "a photograph of an astronaut riding a horse",
    "",
    "A Cat, sitting on the MAT!!  (with   extra spaces) and émojis 🐱",
    "word " * 100,  # longer than 77 tokens: truncated, EOS kept
    "it's 3:45pm -- don't 'quote' me; 1234567 x_y",
]


def build_checkpoint(ckpt: str) -> None:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=32,
    ).save_pretrained(os.path.join(ckpt, "unet"))
    CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    )).save_pretrained(os.path.join(ckpt, "text_encoder"))
    AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(32, 64), latent_channels=4,
        norm_num_groups=32, sample_size=16,
    ).save_pretrained(os.path.join(ckpt, "vae"))
    # Stable Diffusion 1.5's scheduler config
    DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                  set_alpha_to_one=False, steps_offset=1).save_pretrained(os.path.join(ckpt, "scheduler"))
    build_clip_tokenizer(os.path.join(ckpt, "tokenizer"))


def main(out: str) -> None:
    from fd_export.testing import fixture_stamp, write_stamp

    # regenerate when this script or the exporters change
    stamp = fixture_stamp(out, [__file__])
    if stamp is None:
        return
    shutil.rmtree(out, ignore_errors=True)
    ckpt, model = os.path.join(out, "checkpoint"), os.path.join(out, "model")
    build_checkpoint(ckpt)
    from fd_export.sd import export_sd

    export_sd(ckpt, model, "cpu", "float32", name="sd-tiny")

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(ckpt, subfolder="tokenizer")
    text = CLIPTextModel.from_pretrained(ckpt, subfolder="text_encoder").eval()
    unet = UNet2DConditionModel.from_pretrained(ckpt, subfolder="unet").eval()
    vae = AutoencoderKL.from_pretrained(ckpt, subfolder="vae").eval()
    ids = tok(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    # independent check of the vocabulary build: open_clip's own tokenizer gives the same ids
    oc = open_clip_simple_tokenizer()
    oc_ids = oc(PROMPTS, context_length=77)
    # open_clip pads with 0 after EOS where SD's tokenizer pads with EOS (49407): compare up to EOS
    for row, oc_row in zip(ids, oc_ids):
        n = int((oc_row != 0).sum())
        assert torch.equal(row[:n], oc_row[:n].long()), (row[:n], oc_row[:n])
    g = torch.Generator().manual_seed(3)
    latents = torch.randn(len(PROMPTS), 4, 8, 8, generator=g)
    t = torch.tensor([999.0, 500.0, 21.0, 1.0, 250.0])
    with torch.no_grad():
        cond = text(ids)[0]
        eps = unet(latents, t, encoder_hidden_states=cond).sample
        images = vae.decode(latents / vae.config.scaling_factor).sample
    save_file(dict(ids=ids.contiguous(), cond=cond.contiguous(), latents=latents, t=t, eps=eps, images=images.contiguous()),
              os.path.join(out, "reference.safetensors"))
    with open(os.path.join(out, "prompts.json"), "w") as f:
        json.dump(PROMPTS, f, ensure_ascii=False)
    write_stamp(out, stamp)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "target/fixtures/sd-tiny")
