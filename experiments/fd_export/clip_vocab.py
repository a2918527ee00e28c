"""The CLIP BPE vocabulary from open_clip_torch's bundled asset, built as CLIP's SimpleTokenizer builds it,
and SD's CLIPTokenizer made from it (no download): what the tiny SD / SDXL / CLIP fixtures and the
random-init GPU models tokenise with."""
from __future__ import annotations

import gzip
import importlib.util
import json
import os
import shutil

from .errors import ExportError


def open_clip_vocab_path() -> str:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ExportError("open_clip_torch is not installed in the venv (run scripts/setup.sh)")
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
