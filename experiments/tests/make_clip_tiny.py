"""Tiny random-init CLIP (transformers CLIPModel from a config, real CLIP BPE vocabulary), exported
with export_clip.py, plus Python reference embeddings and scores for crates/fd-eval/tests/clip.rs.

  python experiments/tests/make_clip_tiny.py target/fixtures/clip-tiny
"""
import hashlib
import json
import os
import shutil
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))

PROMPTS = ["a photo of a cat", "a red sneaker on white", "", "an ankle boot " * 30]


def main(out):
    sources = [__file__, os.path.join(os.path.dirname(HERE), "fd_export", "clip.py")]
    stamp = hashlib.sha256(b"".join(open(f, "rb").read() for f in sources)).hexdigest()
    if os.path.exists(os.path.join(out, "stamp")) and open(os.path.join(out, "stamp")).read() == stamp:
        print(f"{out}: up to date")
        return
    shutil.rmtree(out, ignore_errors=True)
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    from fd_export.clip import export_clip, preprocess
    from fd_export.clip_vocab import write_clip_vocab

    ckpt = os.path.join(out, "checkpoint")
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=49406,
                         eos_token_id=49407, pad_token_id=49407),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37,
                           num_hidden_layers=2, num_attention_heads=4),
        projection_dim=16,
    )
    CLIPModel(cfg).save_pretrained(ckpt)
    vocab = os.path.join(out, "_vocab")
    write_clip_vocab(vocab)
    CLIPTokenizer(os.path.join(vocab, "vocab.json"), os.path.join(vocab, "merges.txt"), pad_token="<|endoftext|>",
                  model_max_length=77).save_pretrained(ckpt)
    shutil.rmtree(vocab)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(ckpt)
    man = export_clip(ckpt, os.path.join(out, "model"))

    from safetensors.torch import save_file

    model = CLIPModel.from_pretrained(ckpt).eval()
    tok = CLIPTokenizer.from_pretrained(ckpt)
    g = torch.Generator().manual_seed(1)
    images = torch.rand(len(PROMPTS), 3, 40, 36, generator=g) * 2 - 1
    pix = preprocess(images, man["image_size"], man["mean"], man["std"])
    ids = tok(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        img = model.get_image_features(pixel_values=pix)
        txt = model.get_text_features(input_ids=ids)
        img = img if isinstance(img, torch.Tensor) else img.pooler_output
        txt = txt if isinstance(txt, torch.Tensor) else txt.pooler_output
    cos = torch.nn.functional.cosine_similarity(img.double(), txt.double(), dim=-1)
    clip_s = 2.5 * cos.clamp(min=0)            # Hessel et al. CLIP-S (the paper's ~0.77 scale)
    tm = (100 * cos).clamp(min=0)              # torchmetrics CLIPScore convention
    save_file(dict(images=images, pixel_values=pix, ids=ids, image_embeds=img.contiguous(),
                   text_embeds=txt.contiguous(), cos=cos, clip_s=clip_s, torchmetrics=tm),
              os.path.join(out, "reference.safetensors"))
    json.dump(PROMPTS, open(os.path.join(out, "prompts.json"), "w"))
    open(os.path.join(out, "stamp"), "w").write(stamp)
    print("wrote", out)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "target/fixtures/clip-tiny")
