"""Export a random-init model with the exact architecture of SDXL base 1.0, of SD-1.5 with a
ControlNet, of text-to-video-ms-1.7b (UNet3D, 16 frames at 256 px) or of DiT-XL/2 256, through the
same code path as export_sd.py / export_dit.py. No weights: the samples are noise, but
shapes, FLOPs and therefore timings are the real models', so `fd bench` on them answers the speed
question on any GPU without a checkpoint (`just gpu`, experiments/gpu/gpu_session.py).

  python experiments/gpu/make_random_family.py --family sdxl --out out/sdxl-random --device cuda --dtype float16
  python experiments/gpu/make_random_family.py --family controlnet --out out/cn-random --device cuda --dtype float16
  python experiments/gpu/make_random_family.py --family t2v --out out/t2v-random --device cuda --dtype float16
  python experiments/gpu/make_random_family.py --family dit --out out/dit-random --device cuda --dtype float16

--tokenizer: a saved CLIPTokenizer folder (built from open_clip's BPE vocabulary when missing, as
make_sd15_random.py does). --tiny shrinks every width (the CPU smoke test of `just gpu`).
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from fd_export import cli
from fd_export.sd import SD15_UNET, export_sd_parts

# stabilityai/stable-diffusion-xl-base-1.0 configs (unet, text_encoder_2, vae, scheduler)
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048, transformer_layers_per_block=(1, 2, 10), use_linear_projection=True,
    addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
)
SDXL_TEXT_2 = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                   num_attention_heads=20, max_position_embeddings=77, hidden_act="gelu", projection_dim=1280,
                   bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
SDXL_SCHEDULER = {"_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                  "beta_start": 0.00085, "interpolation_type": "linear", "num_train_timesteps": 1000,
                  "prediction_type": "epsilon", "steps_offset": 1, "timestep_spacing": "leading",
                  "use_karras_sigmas": False}


# damo-vilab/text-to-video-ms-1.7b: UNet3DConditionModel's defaults at 256 px (latent 32), text
# encoder OpenCLIP ViT-H/14 (as SD 2.x: width 1024, 23 layers)
T2V_UNET = dict(sample_size=32, cross_attention_dim=1024, attention_head_dim=64)
T2V_TEXT = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", bos_token_id=49406,
                eos_token_id=49407, pad_token_id=1)
T2V_FRAMES = 16
# facebook/DiT-XL-2-256: 28 blocks of width 1152 (16 heads x 72), patch 2 on 32x32 latents, learned sigma
DIT_XL_2 = dict(sample_size=32, patch_size=2, in_channels=4, out_channels=8, num_layers=28, num_attention_heads=16,
                attention_head_dim=72, num_embeds_ada_norm=1000, norm_type="ada_norm_zero",
                norm_elementwise_affine=False)
DIT_SCHEDULER = {"_class_name": "DDPMScheduler", "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02,
                 "num_train_timesteps": 1000, "clip_sample": False, "variance_type": "learned_range",
                 "timestep_spacing": "linspace"}


def main():
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from make_sd15_random import SD15_SCHEDULER, SD15_TEXT, SD15_VAE, TINY_SD15_UNET, TINY_TEXT, TINY_VAE, tokenizer
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=["sdxl", "controlnet", "t2v", "dit"], required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["float32", "float16"])
    ap.add_argument("--tokenizer", default="out/sd15-tokenizer", help="CLIPTokenizer folder (built when missing)")
    ap.add_argument("--tiny", action="store_true", help="shrink every width (CPU smoke test of this script)")
    args = ap.parse_args()
    t0 = time.time()
    tok = tokenizer(args.tokenizer)
    text_cfg, vae_cfg = dict(SD15_TEXT), dict(SD15_VAE)
    if args.tiny:
        text_cfg.update(TINY_TEXT)
        vae_cfg.update(TINY_VAE)
    torch.manual_seed(0)
    vae = AutoencoderKL(**vae_cfg)
    if args.family == "dit":
        from diffusers import DiTTransformer2DModel

        from fd_export.dit import export_dit
        from fd_export.flops import DTYPES

        cfg = dict(DIT_XL_2)
        if args.tiny:
            cfg.update(sample_size=8, num_layers=4, num_attention_heads=2, attention_head_dim=8)
        m = export_dit(args.out, "dit-xl-2-architecture-random-init", DiTTransformer2DModel(**cfg), DIT_SCHEDULER,
                       guidance_channels=3, vae=vae, dtype=DTYPES[args.dtype or "float32"], device=args.device)
    elif args.family == "t2v":
        from diffusers import UNet3DConditionModel

        unet_cfg, t2v_text = dict(T2V_UNET), dict(T2V_TEXT)
        if args.tiny:
            unet_cfg.update(sample_size=8, block_out_channels=(32, 32, 64, 64), cross_attention_dim=32,
                            attention_head_dim=8, norm_num_groups=8)
            t2v_text.update(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)
        m = export_sd_parts(UNet3DConditionModel(**unet_cfg), CLIPTextModel(CLIPTextConfig(**t2v_text)), tok, vae,
                            SD15_SCHEDULER, args.out, "t2v-ms-architecture-random-init", args.device, args.dtype,
                            frames=2 if args.tiny else T2V_FRAMES)
    elif args.family == "sdxl":
        unet_cfg, text_2_cfg = dict(SDXL_UNET), dict(SDXL_TEXT_2)
        if args.tiny:
            unet_cfg.update(sample_size=8, block_out_channels=(32, 64, 64), attention_head_dim=(2, 4, 4),
                            transformer_layers_per_block=(1, 1, 1), cross_attention_dim=64,
                            addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 32,
                            norm_num_groups=8)
            text_2_cfg.update(TINY_TEXT)
        vae = AutoencoderKL(**dict(vae_cfg, scaling_factor=0.13025, force_upcast=True))
        tok_2 = tokenizer(args.tokenizer + "-pad-bang", pad_token="!")
        m = export_sd_parts(UNet2DConditionModel(**unet_cfg), CLIPTextModel(CLIPTextConfig(**text_cfg)), tok, vae,
                            SDXL_SCHEDULER, args.out, "sdxl-architecture-random-init", args.device, args.dtype,
                            text_2=CLIPTextModelWithProjection(CLIPTextConfig(**text_2_cfg)), tok_2=tok_2)
    else:
        unet_cfg = dict(SD15_UNET)
        if args.tiny:
            unet_cfg.update(TINY_SD15_UNET)
        unet = UNet2DConditionModel(**unet_cfg)
        # lllyasviel's SD-1.5 ControlNets are ControlNetModel.from_unet of SD-1.5's UNet
        cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 96, 256))
        m = export_sd_parts(unet, CLIPTextModel(CLIPTextConfig(**text_cfg)), tok, vae, SD15_SCHEDULER, args.out,
                            "sd15-controlnet-architecture-random-init", args.device, args.dtype, controlnet=cn)
    print(json.dumps(dict(name=m["name"], dtype=m["dtype"], params=m["params"],
                          gflops={k: g["flops"] / 1e9 for k, g in m["graphs"].items()},
                          seconds=round(time.time() - t0, 1)), indent=2))


if __name__ == "__main__":
    cli.run(main)
