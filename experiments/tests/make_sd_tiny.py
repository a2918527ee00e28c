"""Build a tiny random-init Stable-Diffusion-shaped checkpoint (the real classes built from config
dicts: UNet2DConditionModel, CLIPTextModel, AutoencoderKL, the real CLIP BPE vocabulary shipped in
PyPI package open_clip_torch), export it with export_sd.py, and store Python reference outputs.

  python experiments/tests/make_sd_tiny.py target/fixtures/sd-tiny

Output (regenerated when this script or the exporters change): OUT/checkpoint (diffusers folder), OUT/model
(fd export), OUT/reference.safetensors + OUT/prompts.json for the Rust tests in
crates/fd-model/tests/sd_tiny.rs.
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import os
import shutil
import sys

import torch
from diffusers.utils import logging as diffusers_logging

diffusers_logging.set_verbosity_error()

HERE = os.path.dirname(os.path.abspath(__file__))

PROMPTS = [
    "a photograph of an astronaut riding a horse",
    "",
    "A Cat, sitting on the MAT!!  (with   extra spaces) and émojis 🐱",
    "word " * 100,  # longer than 77 tokens: truncated, EOS kept
    "it's 3:45pm -- don't 'quote' me; 1234567 x_y",
]


def open_clip_vocab_path() -> str:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("open_clip_torch is not installed in the venv (run scripts/setup.sh)")
    return os.path.join(list(spec.submodule_search_locations)[0], "bpe_simple_vocab_16e6.txt.gz")


def open_clip_simple_tokenizer():
    """open_clip's own pure-Python CLIP tokenizer, loaded without importing the package (which
    would need torchvision)."""
    path = os.path.join(os.path.dirname(open_clip_vocab_path()), "tokenizer.py")
    spec = importlib.util.spec_from_file_location("oc_tokenizer", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.SimpleTokenizer(open_clip_vocab_path())


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) + list(
        range(ord("\u00ae"), ord("\u00ff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_clip_vocab(dst: str) -> None:
    """vocab.json + merges.txt from the BPE merges file, built as CLIP's SimpleTokenizer does."""

    merges = gzip.open(open_clip_vocab_path()).read().decode("utf-8").split("\n")
    merges = merges[1:49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(dst, "vocab.json"), "w") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f)
    with open(os.path.join(dst, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")


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


def build_clip_tokenizer(dst: str, pad_token: str = "<|endoftext|>"):
    """SD's CLIPTokenizer (the real CLIP BPE vocabulary, 77 tokens; pad = EOS as SD 1.x, or "!"
    as SDXL's tokenizer_2), saved to `dst`."""
    from transformers import CLIPTokenizer

    vocab_dir = dst + "_vocab"
    write_clip_vocab(vocab_dir)
    tok = CLIPTokenizer(os.path.join(vocab_dir, "vocab.json"), os.path.join(vocab_dir, "merges.txt"),
                        pad_token=pad_token, model_max_length=77)
    tok.save_pretrained(dst)
    shutil.rmtree(vocab_dir)
    return tok


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
