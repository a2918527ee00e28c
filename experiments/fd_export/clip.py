"""Export CLIP image and text towers from a local transformers checkpoint for fd's CLIP score
(nothing is downloaded; users bring e.g. openai/clip-vit-base-patch32 or ViT-L/14).

  python experiments/export/export_clip.py --checkpoint /path/to/clip-vit-base-patch32 --out models/clip-b32

Writes clip.pt (one TorchScript module, methods `encode_image(pixel_values [B,3,S,S])` and
`encode_text(input_ids [B,L])`, both -> projected embeddings [B,P]), tokenizer.json and
clip_manifest.json (image size, normalisation mean/std, max length, pad id, SHA-256).
fd preprocesses images with torch ops: [-1,1] -> [0,1], bicubic (antialiased) resize of the short
side to S, centre crop S, normalise — named `torch-bicubic-aa` in reports (transformers' processor
uses PIL's bicubic; the two differ slightly).
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings

import torch
from torch import nn


class ClipTowers(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def encode_image(self, pixel_values):
        out = self.model.get_image_features(pixel_values=pixel_values)
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def encode_text(self, input_ids):
        out = self.model.get_text_features(input_ids=input_ids)
        return out if isinstance(out, torch.Tensor) else out.pooler_output


def preprocess(images: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """fd's CLIP preprocessing (`torch-bicubic-aa`): images [B,C,H,W] in [-1,1] -> pixel_values."""
    x = ((images.float() + 1) / 2).clamp(0, 1)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[:, :, top:top + size, left:left + size]
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (x - m) / s


def export_clip(checkpoint: str, out: str):
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(checkpoint).eval()
    tok = CLIPTokenizer.from_pretrained(checkpoint)
    proc = CLIPImageProcessor.from_pretrained(checkpoint)
    size = int(model.config.vision_config.image_size)
    max_len = int(model.config.text_config.max_position_embeddings)
    os.makedirs(out, exist_ok=True)
    towers = ClipTowers(model).eval()
    pix = torch.randn(1, 3, size, size)
    ids = torch.zeros(1, max_len, dtype=torch.long)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace_module(towers, {"encode_image": (pix,), "encode_text": (ids,)}, check_trace=False)
    path = os.path.join(out, "clip.pt")
    traced.save(path + ".tmp")
    os.replace(path + ".tmp", path)
    tok.backend_tokenizer.save(os.path.join(out, "tokenizer.json"))
    manifest = dict(
        schema_version=1, name=os.path.basename(os.path.normpath(checkpoint)), image_size=size,
        mean=list(proc.image_mean), std=list(proc.image_std), max_length=max_len, pad_id=int(tok.pad_token_id),
        projection_dim=int(model.config.projection_dim), preprocessing="torch-bicubic-aa",
        sha256=hashlib.sha256(open(path, "rb").read()).hexdigest(),
    )
    with open(os.path.join(out, "clip_manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    return manifest
