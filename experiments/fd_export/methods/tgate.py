"""T-GATE (Liu et al. 2024): the four whole-UNet graphs that take or return every attention output,
adding them to an export, and the official pipeline + tgate_scheduler as a reference."""
from __future__ import annotations

import json
import os

import torch
from torch import nn

from ..flops import DTYPES, count_flops
from ..folder import load_unet, sha256, write_manifest
from ..graphs import Decoder, Encoder, TimeEmbed
from ..tracing import trace_methods

# what the wrapped processors read and record while a T-GATE graph runs (set by its forward)
_TGATE_CTX: dict = dict(reuse=dict(cross=False, self=False), given=dict(cross=[], self=[]), seen=dict(cross={}, self={}))



class _TGateProcessor:
    """Wraps an attention layer's processor: returns the cached output given to the graph when its
    kind (cross / self) is reused, else computes it and records it."""

    def __init__(self, inner, kind: str, index: int):
        self.inner, self.kind, self.index = inner, kind, index

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        if _TGATE_CTX["reuse"][self.kind]:
            return _TGATE_CTX["given"][self.kind][self.index]
        out = self.inner(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                         attention_mask=attention_mask, temb=temb, **kw)
        _TGATE_CTX["seen"][self.kind][self.index] = out
        return out


# ---------------------------------------------------------------------------------------------
# T-GATE (Liu et al. 2024, HaozheLiu-ST/T-GATE): attention outputs cached and reused. Four graphs
# of the whole UNet (encoder + decoder on the time embedding, as the split graphs), sharing its
# weights; every attention layer's output (its `to_out` result, the tensor T-GATE caches) is either
# computed or read from an input, in a fixed layer order (manifest `tgate.cross_layers` /
# `self_layers`):
#   tgate_capture    sample, emb, cond                  -> (out, cross..., self...)
#   tgate_sa_reuse   sample, emb, cond, self...         -> out               (semantics planning)
#   tgate_ca_reuse   sample, emb, cond, cross...        -> (out, self...)    (fidelity improving)
#   tgate_both_reuse sample, emb, cond, cross..., self...-> out
# ---------------------------------------------------------------------------------------------
TGATE_MODES = {"tgate_capture": (False, False), "tgate_sa_reuse": (False, True), "tgate_ca_reuse": (True, False),
               "tgate_both_reuse": (True, True)}


def tgate_layers(unet) -> tuple[list[str], list[str]]:
    """Names of the cross- and self-attention layers T-GATE caches (attn2 / attn1 of every
    transformer block), in module order; refuses layers whose output is not the cached tensor."""
    cross, selfs = [], []
    for name, mod in unet.named_modules():
        if type(mod).__name__ != "Attention":
            continue
        if mod.residual_connection or mod.rescale_output_factor != 1.0:
            raise ValueError(f"T-GATE: attention `{name}` adds a residual or rescales its output")
        (cross if mod.is_cross_attention else selfs).append(name)
    if not cross:
        raise ValueError("T-GATE needs cross-attention layers; this UNet has none")
    return cross, selfs


class TGateUNet(nn.Module):
    """The UNet with T-GATE's attention caching (`mode` one of TGATE_MODES). Installs the wrapping
    processors on the UNet's attention layers (once; the four graphs share them)."""

    def __init__(self, unet, mode: str):
        super().__init__()
        self.enc, self.dec = Encoder(unet), Decoder(unet)
        self.cross, self.selfs = tgate_layers(unet)
        self.reuse_ca, self.reuse_sa = TGATE_MODES[mode]
        mods = dict(unet.named_modules())
        for kind, names in (("cross", self.cross), ("self", self.selfs)):
            for i, name in enumerate(names):
                if not isinstance(mods[name].processor, _TGateProcessor):
                    mods[name].processor = _TGateProcessor(mods[name].processor, kind, i)

    def forward(self, sample, emb, cond, *cached):
        n_ca = len(self.cross) if self.reuse_ca else 0
        _TGATE_CTX.update(reuse=dict(cross=self.reuse_ca, self=self.reuse_sa),
                          given=dict(cross=list(cached[:n_ca]), self=list(cached[n_ca:])), seen=dict(cross={}, self={}))
        feats = self.enc(sample, emb, cond)
        out = self.dec(feats[0], emb, cond, *feats[1:])
        seen = _TGATE_CTX["seen"]
        extra = []
        if not self.reuse_sa and not self.reuse_ca:
            extra += [seen["cross"][i] for i in range(len(self.cross))]
        if not self.reuse_sa:
            extra += [seen["self"][i] for i in range(len(self.selfs))]
        return (out,) + tuple(extra) if extra else out


TGATE_FILE = "tgate.pt"


def add_tgate_graphs(model_dir: str, device: str = "cpu") -> dict:
    """Add T-GATE's four graphs (graphs.TGateUNet: capture, sa_reuse, ca_reuse, both_reuse) to an
    existing 2-D UNet export that keeps its UNet weights, in their own file (tgate.pt), and the
    attention layers they cache under manifest `tgate` (names and per-sample output shapes)."""

    with open(os.path.join(model_dir, "manifest.json")) as f:
        if json.load(f).get("tome"):
            raise ValueError(f"{model_dir}: a ToMe export keeps no UNet weights to trace from; add the graphs to the "
                             "model it was exported from")
    unet, m = load_unet(model_dir)
    if m.get("kind", "unet2d") != "unet2d" or m.get("control") or m.get("prepare"):
        raise ValueError(f"{model_dir}: T-GATE graphs are exported for plain 2-D UNets (no ControlNet, no added "
                         "conditioning)")
    dtype = DTYPES[m["dtype"]]
    unet = unet.to(device=device, dtype=dtype)
    parts = {mode: TGateUNet(unet, mode) for mode in TGATE_MODES}
    cap = parts["tgate_capture"]
    h, w = m["sample_size"]
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(1, m["in_channels"], h, w, generator=g).to(device, dtype)
    cond = torch.randn(1, m["cond"]["seq_len"], m["cond"]["dim"], generator=g).to(device, dtype)
    with torch.no_grad():
        emb = TimeEmbed(unet)(torch.tensor([500.0], device=device))
        outs = cap(sample, emb, cond)
    nc = len(cap.cross)
    ca, sa = list(outs[1:1 + nc]), list(outs[1 + nc:])
    inputs = {"tgate_capture": [sample, emb, cond], "tgate_sa_reuse": [sample, emb, cond, *sa],
              "tgate_ca_reuse": [sample, emb, cond, *ca], "tgate_both_reuse": [sample, emb, cond, *ca, *sa]}
    traced = {k: (parts[k], inputs[k]) for k in TGATE_MODES}
    path = os.path.join(model_dir, TGATE_FILE)
    trace_methods(traced, path)
    digest = sha256(path)
    for key, (module, inp) in traced.items():
        m["graphs"][key] = dict(file=TGATE_FILE, method=key, sha256=digest, flops=count_flops(module, inp))
    m["tgate"] = dict(cross_layers=cap.cross, self_layers=cap.selfs,
                      cross_shapes=[list(t.shape[1:]) for t in ca], self_shapes=[list(t.shape[1:]) for t in sa])
    write_manifest(model_dir, m)
    return m


def tgate_reference(unet, sched, x, cond, uncond, guidance: float, gate_step: int, sp_interval: int = 5,
                    fi_interval: int = 1, warm_up: int = 2):
    """T-GATE's sampling loop (HaozheLiu-ST/T-GATE, tgate/SD.py with tgate_utils.tgate_scheduler
    and tgate_processor), transcribed for a batch with classifier-free guidance: each attention
    layer's forward is replaced (as the official register_forward does) by one that returns the
    layer's cache when its kind is reused, else computes its output and, when told to cache,
    keeps it (whole, or at the gate step the mean of the unconditional and conditional halves).
    Steps i < gate_step - 1: CFG batch; cross-attention computed; self-attention computed before
    `warm_up`, computed and cached at `warm_up` and at every multiple of `sp_interval` after it,
    reused otherwise. Step gate_step - 1: CFG batch, both kinds computed and cached as half means.
    Steps after: the unconditional states alone, no guidance, cross-attention reused,
    self-attention computed and cached at multiples of `fi_interval`, reused otherwise."""
    mods = [m for m in unet.modules() if type(m).__name__ == "Attention"]
    state = dict(ca=(False, False), sa=(False, False), keep=True)
    originals = {}

    def wrap(mod):
        orig = mod.forward
        originals[mod] = orig

        def forward(hidden_states, encoder_hidden_states=None, attention_mask=None, **kw):
            cross = encoder_hidden_states is not None
            cache_it, reuse = state["ca"] if cross else state["sa"]
            if reuse and getattr(mod, "tg_cache", None) is not None:
                return mod.tg_cache
            out = orig(hidden_states, encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask, **kw)
            if cache_it:
                if state["keep"]:
                    mod.tg_cache = out
                else:
                    u, c = out.chunk(2)
                    mod.tg_cache = (u + c) / 2
            return out
        mod.forward = forward

    for mod in mods:
        mod.tg_cache = None
        wrap(mod)
    try:
        for i, t in enumerate(sched.timesteps):
            if i < gate_step - 1:
                state["ca"] = (False, False)
                if i < warm_up:
                    state["sa"] = (False, False)
                elif i == warm_up or i % sp_interval == 0:
                    state["sa"] = (True, False)
                else:
                    state["sa"] = (False, True)
                state["keep"] = True
            elif i == gate_step - 1:
                state.update(ca=(True, False), sa=(True, False), keep=False)
            else:
                state["ca"] = (False, True)
                state["sa"] = (True, False) if i % fi_interval == 0 else (False, True)
                state["keep"] = True
            if i < gate_step:
                out = unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
                u, c = out.chunk(2)
                eps = u + guidance * (c - u)
            else:
                eps = unet(x, t, encoder_hidden_states=uncond).sample
            x = sched.step(eps, t, x).prev_sample
    finally:
        for mod, orig in originals.items():
            mod.forward = orig
            del mod.tg_cache
    return x
