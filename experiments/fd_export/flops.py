"""FLOP counting: torch.utils.flop_counter (FLOPs = 2 x MACs) with attention counted on every
device. The one counter the exporter and experiments/bench/recount_flops.py use."""
from __future__ import annotations

import json
import os
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from .errors import ExportError


# torch.utils.flop_counter counts attention (2 x MACs of Q K^T and A V) for the CUDA SDPA kernels
# but has no formula for the CPU flash kernel, so on CPU every attention layer counted 0 FLOPs
# (seen: SD-1.5 677 GFLOPs/forward exported on CPU vs 803 on CUDA). Use torch's own SDPA formula.
def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def flop_counter_mode() -> FlopCounterMode:
    """torch's FLOP counter (2 x MACs) with attention counted on every device: the one counter the
    exporter and experiments/bench/recount_flops.py use."""
    return FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops})


def count_flops(module: nn.Module, inputs: Sequence[torch.Tensor]) -> int:
    with flop_counter_mode() as fc, torch.no_grad():
        module(*inputs)
    return int(fc.get_total_flops())


def n_params(*modules) -> int:
    return sum(p.numel() for m in modules if m is not None for p in m.parameters())


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def recount(model_dir: str) -> dict[str, tuple[int, int]]:
    """{graph: (manifest flops, recounted flops)} for every graph of an fd export, counted by running
    each saved TorchScript graph on example inputs built from the manifest's shapes."""
    with open(os.path.join(model_dir, "manifest.json")) as f:
        m = json.load(f)
    dtype = DTYPES[m["dtype"]]
    files: dict[str, torch.jit.ScriptModule] = {}

    def graph(key):
        g = m["graphs"][key]
        if g["file"] not in files:
            files[g["file"]] = torch.jit.load(os.path.join(model_dir, g["file"]), map_location="cpu").eval()
        mod = files[g["file"]]
        return getattr(mod, g["method"]) if g.get("method", "forward") != "forward" else mod

    g = torch.Generator().manual_seed(0)
    sample = torch.randn(1, m["in_channels"], *m["sample_size"], generator=g).to(dtype)
    cond = torch.randn(1, m["cond"]["seq_len"], m["cond"]["dim"], generator=g).to(dtype)
    t = torch.tensor([500.0])
    out: dict[str, int] = {}

    def count(key, *inputs):
        with flop_counter_mode() as fc, torch.no_grad():
            res = graph(key)(*inputs)
        out[key] = int(fc.get_total_flops())
        return res

    emb = count("time_embed", t)
    feats = count("encoder", sample, emb, cond)
    for key in ("decoder", "decoder_analysis"):
        if key in m["graphs"]:
            count(key, feats[0], emb, cond, *feats[1:])
    if "full" in m["graphs"]:
        count("full", sample, t, cond)
    from .schema import deepcache_graph

    for b in m.get("deepcache", {}):
        shallow = count(deepcache_graph(b, "shallow_encoder"), sample, emb, cond)
        cached = count(deepcache_graph(b, "deep_decoder"), feats[0], emb, cond, *feats[1:])
        count(deepcache_graph(b, "shallow_decoder"), cached, emb, cond, *shallow)
    if "cond_encoder" in m["graphs"]:
        c = m["cond"]
        ids = torch.zeros(1, dtype=torch.long) if c["kind"] == "class" else torch.zeros(1, c["seq_len"], dtype=torch.long)
        count("cond_encoder", ids)
    if "vae_decoder" in m["graphs"]:
        count("vae_decoder", sample)
    missing = set(m["graphs"]) - set(out)
    if missing:
        raise ExportError(f"{model_dir}: no example inputs for graphs {sorted(missing)}")
    return {k: (int(m["graphs"][k]["flops"]), v) for k, v in out.items()}
