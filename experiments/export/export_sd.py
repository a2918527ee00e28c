"""Export a local Stable Diffusion diffusers folder (1.x, 2.x or XL) for fd (nothing is downloaded).

  python experiments/export/export_sd.py --checkpoint /path/to/stable-diffusion-v1-5 --out models/sd15 \
      [--device cuda --dtype float16]

One code path for the three (fd_export.sd.export_sd; XL when the folder has text_encoder_2/):
split UNet graphs (+ cond_prepare for SDXL's pooled embeds and time ids), the prompt encoder(s),
the VAE decoder, tokenizer.json (+ tokenizer_2.json) and manifest.json with the checkpoint's
scheduler config; with --controlnet DIR also the `controlnet` graph (run at key steps only
under encoder propagation, its residuals added to the encoder features before they are cached).
--tome RATIO merges tokens in every UNet graph (tomesd 0.1.3, fixed partition; see
fd_export.tome). A text-to-video UNet3D folder (text-to-video-ms) needs --frames F (the temporal
layers are traced for F frames). A UNet form fd does not support is refused before anything is written, naming
the config field. Defaults: float16 on CUDA, float32 on CPU.
"""
from __future__ import annotations

import argparse
import json

from fd_export import cli
from fd_export.forms import UnsupportedConfig
from fd_export.sd import export_sd
from fd_export.tome import settings_from, tome_args


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="local diffusers Stable Diffusion folder (1.x, 2.x, XL)")
    ap.add_argument("--controlnet", help="local diffusers ControlNetModel folder for this base model (SD 1.x / 2.x)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["float32", "float16"])
    ap.add_argument("--frames", type=int, help="frames per video, for a text-to-video UNet3D folder (fixed at export)")
    ap.add_argument("--keep-weights", action="store_true",
                    help="also write unet_weights.safetensors, so that add_deepcache.py / add_teacache.py / "
                         "add_tgate.py can add peer-method graphs later")
    ap.add_argument("--format", choices=["torchscript", "aoti"], default="torchscript",
                    help="aoti: also compile AOTInductor packages of every graph (UNet, text encoder(s), VAE "
                         "decoder, ControlNet) for --device, each checked against its TorchScript graph "
                         "(fd_export.aoti, needs g++); fd runs them with --format aoti")
    tome_args(ap, "--tome", "tome-")
    args = ap.parse_args()
    tome = settings_from(args.tome, args, "tome-") if args.tome is not None else None
    try:
        m = export_sd(args.checkpoint, args.out, args.device, args.dtype, controlnet=args.controlnet, tome=tome,
                      frames=args.frames, save_weights=args.keep_weights, aoti=args.format == "aoti")
    except (UnsupportedConfig, ValueError) as e:
        raise SystemExit(f"{args.checkpoint}/unet/config.json: {e}") from e
    print(json.dumps({k: m[k] for k in ("name", "family", "dtype", "params")}, indent=2))


if __name__ == "__main__":
    cli.run(main)
