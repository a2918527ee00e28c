"""Export a local Stable Diffusion 1.x diffusers checkpoint for fd (nothing is downloaded).

  python experiments/export_sd15.py --checkpoint /path/to/stable-diffusion-v1-5 --out models/sd15 \
      [--device cuda --dtype float16]

Writes, through fd_export.export_model: time_embed / encoder / decoder / full (split UNet),
cond_encoder (CLIP text encoder: token ids [B,77] -> last_hidden_state [B,77,768]), vae_decoder
(latents / scaling_factor -> images in [-1,1]), tokenizer.json (HF tokenizers format, read by the
Rust `tokenizers` crate) and manifest.json with the checkpoint's scheduler config.
Defaults: float16 on CUDA, float32 on CPU.
"""
from __future__ import annotations

import argparse
import json

from fd_export.sd15 import export_sd15


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="local diffusers SD 1.x folder")
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["float32", "float16"])
    args = ap.parse_args()
    m = export_sd15(args.checkpoint, args.out, args.device, args.dtype)
    print(json.dumps({k: m[k] for k in ("name", "dtype", "params")}, indent=2))


if __name__ == "__main__":
    main()
