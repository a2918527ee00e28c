"""Export a random-init model with Stable Diffusion 1.5's exact architecture (UNet, CLIP ViT-L/14
text encoder, VAE, scheduler config, real CLIP BPE tokenizer) through the same code path as
export_sd.py. No weights: the samples are noise, but shapes, FLOPs and therefore timings are
SD-1.5's, so `fd bench` on it measures the paper's speed question on any GPU without a checkpoint.

  python experiments/gpu/make_sd15_random.py --out out/sd15-random --device cuda --dtype float16 \
      [--tokenizer DIR] [--tiny]

--tokenizer: a saved CLIPTokenizer folder; when it does not exist it is built from open_clip's BPE
vocabulary (PyPI open_clip_torch, as in experiments/tests/make_sd_tiny.py) and saved there, so a
machine without open_clip can be handed the folder.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from fd_export import cli
from fd_export.sd import SD15_UNET, export_sd_parts
from fd_export.tome import settings_from, tome_args

# stable-diffusion-v1-5/text_encoder/config.json (CLIP ViT-L/14 text tower)
SD15_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
                 bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
# stable-diffusion-v1-5/vae/config.json
SD15_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512, scaling_factor=0.18215)
# stable-diffusion-v1-5/scheduler/scheduler_config.json
SD15_SCHEDULER = {"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                  "beta_start": 0.00085, "num_train_timesteps": 1000, "set_alpha_to_one": False,
                  "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None, "clip_sample": False}
# --tiny (the CPU smoke test of `just gpu`): the same classes and block types with every width shrunk
TINY_TEXT = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, projection_dim=32)
TINY_VAE = dict(block_out_channels=(32, 32, 32, 32), norm_num_groups=8)
TINY_SD15_UNET = dict(sample_size=8, block_out_channels=(32, 32, 64, 64), cross_attention_dim=32, norm_num_groups=8)


def tokenizer(path: str, pad_token: str = "<|endoftext|>"):
    """The CLIPTokenizer saved at `path`, built there from open_clip's vocabulary when missing (pad = EOS
    as SD 1.x; "!" for SDXL's second tokenizer, kept at `path + "-pad-bang"`)."""
    from transformers import CLIPTokenizer

    if os.path.isdir(path):
        return CLIPTokenizer.from_pretrained(path)
    from fd_export.clip_vocab import build_clip_tokenizer

    return build_clip_tokenizer(path, pad_token=pad_token)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["float32", "float16"])
    ap.add_argument("--tokenizer", default="out/sd15-tokenizer", help="CLIPTokenizer folder (built when missing)")
    ap.add_argument("--tiny", action="store_true", help="shrink every width (the CPU smoke test of `just gpu`)")
    ap.add_argument("--keep-weights", action="store_true", help="keep unet_weights.safetensors (for add_tgate.py / add_teacache.py)")
    tome_args(ap, "--tome", "tome-")
    args = ap.parse_args()
    tome = settings_from(args.tome, args, "tome-") if args.tome is not None else None
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    t0 = time.time()
    tok = tokenizer(args.tokenizer)
    torch.manual_seed(0)
    tiny = args.tiny
    unet = UNet2DConditionModel(**dict(SD15_UNET, **(TINY_SD15_UNET if tiny else {})))
    text = CLIPTextModel(CLIPTextConfig(**dict(SD15_TEXT, **(TINY_TEXT if tiny else {}))))
    vae = AutoencoderKL(**dict(SD15_VAE, **(TINY_VAE if tiny else {})))
    m = export_sd_parts(unet, text, tok, vae, SD15_SCHEDULER, args.out, "sd15-architecture-random-init",
                        args.device, args.dtype, tome=tome, save_weights=args.keep_weights)
    print(json.dumps(dict(name=m["name"], dtype=m["dtype"], params=m["params"],
                          gflops={k: g["flops"] / 1e9 for k, g in m["graphs"].items()},
                          seconds=round(time.time() - t0, 1)), indent=2))


if __name__ == "__main__":
    cli.run(main)
