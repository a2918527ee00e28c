"""Split a diffusers UNet2DConditionModel into TorchScript graphs + manifest.json.

Graphs (all traced on the export device/dtype; traced graphs accept other batch sizes):
  time_embed   timesteps [B] float32                    -> emb [B, E]
  encoder      sample [B,C,H,W], emb [B,E], cond [B,L,D] -> (mid, skip_0, ..., skip_{S-1})
  decoder      mid, emb, cond, skip_0..skip_{S-1}        -> model output [B,C_out,H,W]
  full         sample, timesteps [B], cond               -> model output (reference, = diffusers forward)
  cond_encoder class ids [B] int64 | token ids [B,77]    -> cond [B,L,D]          (optional)
  vae_decoder  latents [B,4,h,w] (already / scaling)     -> images [B,3,H,W] in [-1,1] (optional)

The encoder is the paper's E (conv_in, down blocks, mid block; the time embedding is its own graph so
that a non-key step can run D with its own embedding); the decoder is D (up blocks, norm, conv_out).
FLOPs per graph are measured at batch 1 with torch.utils.flop_counter (FLOPs = 2 x MACs).

  python experiments/export_unet.py --checkpoint ~/.cache/fd/train/fmnist/checkpoint.pt --out models/fmnist
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import sys
import warnings
from typing import Sequence

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

SCHEMA_VERSION = 1
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------
# Wrappers: each holds only the submodules its graph needs, so a graph file embeds only its part.
# They mirror UNet2DConditionModel.forward stage by stage (no class/aug embeddings, no ControlNet).
# ---------------------------------------------------------------------------------------------
class TimestepProj(nn.Module):
    """diffusers `Timesteps` (`get_timestep_embedding`) with its frequency table held as a buffer.

    Traced as-is, diffusers' `torch.arange(..., device=timesteps.device)` is recorded with the
    export device as a constant (`device=torch.device("cpu")`), so the graph fails on any other
    device. A buffer moves with the graph (`torch.jit.load(map_location=...)`, tch
    `load_on_device`). The table is computed with diffusers' own ops in float32 on the CPU, so the
    values are the ones the traced CPU graph computed."""

    def __init__(self, tp, device: torch.device | str = "cpu", max_period: int = 10000):
        super().__init__()
        self.half = tp.num_channels // 2
        self.odd = tp.num_channels % 2 == 1
        self.flip = bool(tp.flip_sin_to_cos)
        self.scale = tp.scale
        exponent = -math.log(max_period) * torch.arange(start=0, end=self.half, dtype=torch.float32)
        exponent = exponent / (self.half - tp.downscale_freq_shift)
        # float32 like diffusers (also in a float16 export), on the device the graph is traced on
        self.register_buffer("freqs", torch.exp(exponent).to(device))

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        emb = timesteps[:, None].float() * self.freqs[None, :]
        emb = self.scale * emb
        emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
        if self.flip:
            emb = torch.cat([emb[:, self.half:], emb[:, :self.half]], dim=-1)
        if self.odd:
            emb = torch.nn.functional.pad(emb, (0, 1, 0, 0))
        return emb


class TimeEmbed(nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.time_proj = TimestepProj(unet.time_proj, unet.device)
        self.time_embedding = unet.time_embedding

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        # diffusers get_time_embed: time_proj in float32, cast to the model dtype
        t_emb = self.time_proj(timesteps.float()).to(self.time_embedding.linear_1.weight.dtype)
        return self.time_embedding(t_emb)


class Encoder(nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.conv_in = unet.conv_in
        self.down_blocks = unet.down_blocks
        self.mid_block = unet.mid_block

    def forward(self, sample, emb, cond):
        # 1. pre-process
        sample = self.conv_in(sample)
        # 2. down
        skips = (sample,)
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                sample, res = block(hidden_states=sample, temb=emb, encoder_hidden_states=cond)
            else:
                sample, res = block(hidden_states=sample, temb=emb)
            skips += res
        # 3. mid
        sample = self.mid_block(sample, emb, encoder_hidden_states=cond)
        return (sample,) + skips


class Decoder(nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.up_blocks = unet.up_blocks
        self.conv_norm_out = unet.conv_norm_out
        self.conv_act = unet.conv_act
        self.conv_out = unet.conv_out
        self.up_factor = 2 ** unet.num_upsamplers

    def run_up(self, sample, emb, cond, skips, out_size, final_index: int, outputs: list | None = None):
        """Up blocks on `sample`; `final_index` is the index (in self.up_blocks) of the UNet's last
        up block, or -1 when it is not among them. Each block's output is appended to `outputs`."""
        # diffusers forwards explicit upsample sizes when the output size is not a multiple of the
        # overall up factor.
        forward_upsample_size = any(s % self.up_factor != 0 for s in out_size)
        for i, block in enumerate(self.up_blocks):
            is_final = i == final_index
            res = skips[-len(block.resnets):]
            skips = skips[: -len(block.resnets)]
            upsample_size = skips[-1].shape[2:] if (not is_final and forward_upsample_size) else None
            if getattr(block, "has_cross_attention", False):
                sample = block(hidden_states=sample, temb=emb, res_hidden_states_tuple=res,
                               encoder_hidden_states=cond, upsample_size=upsample_size)
            else:
                sample = block(hidden_states=sample, temb=emb, res_hidden_states_tuple=res,
                               upsample_size=upsample_size)
            if outputs is not None:
                outputs.append(sample)
        return sample

    def forward(self, mid, emb, cond, *skips):
        # 4. up (the output size is the first skip's)
        sample = self.run_up(mid, emb, cond, tuple(skips), skips[0].shape[-2:], final_index=len(self.up_blocks) - 1)
        # 5. post-process
        if self.conv_norm_out is not None:
            sample = self.conv_act(self.conv_norm_out(sample))
        return self.conv_out(sample)


# ---------------------------------------------------------------------------------------------
# DeepCache (Ma et al. 2023), block-level branch b: at a full step the whole UNet runs and the
# input h of up block U[n-1-b] is cached; at a cached step only the shallow path runs: conv_in and
# the down-path units whose skips the last b+1 up blocks consume, then U[n-1-b..] on cached h.
# ---------------------------------------------------------------------------------------------
def shallow_skip_count(unet, branch: int) -> int:
    ups = unet.up_blocks
    return sum(len(b.resnets) for b in ups[len(ups) - 1 - branch:])


class ShallowEncoder(nn.Module):
    """conv_in + down-path units up to the `count`-th skip (a unit = resnet[+attention], or a
    downsampler), mirroring CrossAttnDownBlock2D / DownBlock2D.forward."""

    def __init__(self, unet, branch: int):
        super().__init__()
        self.conv_in = unet.conv_in
        self.count = shallow_skip_count(unet, branch)
        blocks, n = [], 1
        for block in unet.down_blocks:
            if n >= self.count:
                break
            blocks.append(block)
            n += len(block.resnets) + (1 if block.downsamplers is not None else 0)
        self.down_blocks = nn.ModuleList(blocks)

    def forward(self, sample, emb, cond):
        h = self.conv_in(sample)
        skips = [h]
        for block in self.down_blocks:
            attns = block.attentions if getattr(block, "has_cross_attention", False) else [None] * len(block.resnets)
            for resnet, attn in zip(block.resnets, attns):
                if len(skips) >= self.count:
                    return tuple(skips)
                h = resnet(h, emb)
                if attn is not None:
                    h = attn(h, encoder_hidden_states=cond, return_dict=False)[0]
                skips.append(h)
            if block.downsamplers is not None:
                if len(skips) >= self.count:
                    return tuple(skips)
                for ds in block.downsamplers:
                    h = ds(h)
                skips.append(h)
        return tuple(skips[: self.count])


class AnalysisDecoder(Decoder):
    """The decoder that also returns every up block's output (feature-drift analysis)."""

    def forward(self, mid, emb, cond, *skips):
        ups = []
        sample = self.run_up(mid, emb, cond, tuple(skips), skips[0].shape[-2:], len(self.up_blocks) - 1, ups)
        if self.conv_norm_out is not None:
            sample = self.conv_act(self.conv_norm_out(sample))
        return (self.conv_out(sample),) + tuple(ups)


class DeepDecoder(Decoder):
    """Up blocks U[0..n-1-b) on the encoder features: returns h, the input of U[n-1-b]."""

    def __init__(self, unet, branch: int):
        super().__init__(unet)
        self.up_blocks = nn.ModuleList(list(unet.up_blocks)[: len(unet.up_blocks) - 1 - branch])
        self.conv_norm_out = self.conv_act = self.conv_out = None

    def forward(self, mid, emb, cond, *skips):
        return self.run_up(mid, emb, cond, tuple(skips), skips[0].shape[-2:], final_index=-1)


class ShallowDecoder(Decoder):
    """Up blocks U[n-1-b..] + norm/conv_out on cached h and the fresh shallow skips."""

    def __init__(self, unet, branch: int):
        super().__init__(unet)
        self.up_blocks = nn.ModuleList(list(unet.up_blocks)[len(unet.up_blocks) - 1 - branch:])

    def forward(self, h, emb, cond, *skips):
        sample = self.run_up(h, emb, cond, tuple(skips), skips[0].shape[-2:], final_index=len(self.up_blocks) - 1)
        if self.conv_norm_out is not None:
            sample = self.conv_act(self.conv_norm_out(sample))
        return self.conv_out(sample)


class Full(nn.Module):
    def __init__(self, unet):
        super().__init__()
        # diffusers' own forward, with the device-portable time projection (on a copy whose
        # submodule table is its own, so the caller's UNet is left as it was).
        unet = copy.copy(unet)
        unet._modules = dict(unet._modules)
        unet.time_proj = TimestepProj(unet.time_proj, unet.device)
        self.unet = unet

    def forward(self, sample, timesteps, cond):
        return self.unet(sample, timesteps, encoder_hidden_states=cond, return_dict=False)[0]


class VaeDecode(nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.post_quant_conv = vae.post_quant_conv
        self.decoder = vae.decoder

    def forward(self, latents):
        if self.post_quant_conv is not None:
            latents = self.post_quant_conv(latents)
        return self.decoder(latents)


class TextEncode(nn.Module):
    def __init__(self, text_model):
        super().__init__()
        self.text_model = text_model

    def forward(self, input_ids):
        return self.text_model(input_ids, return_dict=False)[0]


# ---------------------------------------------------------------------------------------------
def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# torch.utils.flop_counter counts attention (2 x MACs of Q K^T and A V) for the CUDA SDPA kernels
# but has no formula for the CPU flash kernel, so on CPU every attention layer counted 0 FLOPs
# (seen: SD-1.5 677 GFLOPs/forward exported on CPU vs 803 on CUDA). Use torch's own SDPA formula.
def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def flop_counter_mode() -> FlopCounterMode:
    """torch's FLOP counter (2 x MACs) with attention counted on every device: the one counter the
    exporter and experiments/recount_flops.py use."""
    return FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops})


def count_flops(module: nn.Module, inputs: Sequence[torch.Tensor]) -> int:
    with flop_counter_mode() as fc, torch.no_grad():
        module(*inputs)
    return int(fc.get_total_flops())


def n_params(*modules) -> int:
    return sum(p.numel() for m in modules if m is not None for p in m.parameters())


def trace_and_save(module, inputs, path):
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # shape asserts inside diffusers blocks become constants; batch size stays dynamic
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(module, tuple(inputs), check_trace=False, strict=False)
    tmp = path + ".tmp"
    traced.save(tmp)
    os.replace(tmp, path)


def trace_methods(parts: dict, path: str) -> None:
    """Trace every (module, example inputs) of `parts` as a method named by its key of one
    TorchScript module; parameters shared between the parts are saved once."""
    holder = nn.ModuleDict({k: m for k, (m, _) in parts.items()})

    def method(key):
        return lambda self, *args: self.parts[key](*args)

    cls = type("SplitUNet", (nn.Module,), {k: method(k) for k in parts})
    wrapper = cls()
    wrapper.parts = holder
    wrapper.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # shape asserts inside diffusers blocks become constants
        traced = torch.jit.trace_module(wrapper, {k: tuple(inp) for k, (_, inp) in parts.items()}, check_trace=False)
    tmp = path + ".tmp"
    traced.save(tmp)
    os.replace(tmp, path)


def export_model(
    out_dir: str,
    name: str,
    unet,
    scheduler_config: dict,
    cond_encoder: nn.Module | None,
    cond_spec: dict,
    cond_example: torch.Tensor | None = None,
    vae=None,
    vae_scaling_factor: float | None = None,
    extra_files: dict | None = None,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    extra_manifest: dict | None = None,
    with_full: bool = True,
    deepcache_branches: Sequence[int] = (0,),
) -> dict:
    """Export `unet` (+ optional conditioning encoder and VAE decoder) into `out_dir`.

    cond_spec: manifest "cond" entry (kind: class|text|embedding, seq_len, dim, ...).
    cond_example: example input of cond_encoder at batch 1 (class ids [1] or token ids [1,77]).
    """
    os.makedirs(out_dir, exist_ok=True)
    unet = unet.to(device=device, dtype=dtype).eval()
    cfg = unet.config
    h, w = (cfg.sample_size, cfg.sample_size) if isinstance(cfg.sample_size, int) else tuple(cfg.sample_size)
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(1, cfg.in_channels, h, w, generator=g).to(device, dtype)
    timesteps = torch.tensor([500.0], device=device)
    cond = torch.randn(1, cond_spec["seq_len"], cond_spec["dim"], generator=g).to(device, dtype)

    te, enc, dec, full = TimeEmbed(unet), Encoder(unet), Decoder(unet), Full(unet)
    with torch.no_grad():
        emb = te(timesteps)
        feats = enc(sample, emb, cond)
    graphs = {}

    # The UNet graphs are traced as methods of ONE TorchScript module (unet.pt), so the weights
    # they share are stored once; each method is its own traced graph.
    unet_parts: dict[str, tuple[nn.Module, list]] = {
        "time_embed": (te, [timesteps]),
        "encoder": (enc, [sample, emb, cond]),
        "decoder": (dec, [feats[0], emb, cond, *feats[1:]]),
        # same weights, also returns the up-block outputs (fd-analysis); costs no extra file size
        "decoder_analysis": (AnalysisDecoder(unet), [feats[0], emb, cond, *feats[1:]]),
    }
    if with_full:  # the unsplit reference graph, for parity checks
        unet_parts["full"] = (full, [sample, timesteps, cond])
    deepcache = {}
    for b in deepcache_branches:
        if not 0 <= b < len(unet.up_blocks) - 1:
            raise ValueError(f"DeepCache branch {b} outside 0..{len(unet.up_blocks) - 2}")
        se, dd, sd = ShallowEncoder(unet, b), DeepDecoder(unet, b), ShallowDecoder(unet, b)
        with torch.no_grad():
            cached = dd(feats[0], emb, cond, *feats[1:])
            shallow = se(sample, emb, cond)
        unet_parts[f"deepcache{b}_shallow_encoder"] = (se, [sample, emb, cond])
        unet_parts[f"deepcache{b}_deep_decoder"] = (dd, [feats[0], emb, cond, *feats[1:]])
        unet_parts[f"deepcache{b}_shallow_decoder"] = (sd, [cached, emb, cond, *shallow])
        deepcache[str(b)] = dict(shallow_skips=shallow_skip_count(unet, b), cache_shape=list(cached.shape[1:]))
    unet_path = os.path.join(out_dir, "unet.pt")
    trace_methods(unet_parts, unet_path)
    unet_hash = sha256(unet_path)
    for key, (module, inputs) in unet_parts.items():
        graphs[key] = dict(file="unet.pt", method=key, sha256=unet_hash, flops=count_flops(module, inputs))

    def add(key, module, inputs):
        path = os.path.join(out_dir, f"{key}.pt")
        trace_and_save(module, inputs, path)
        graphs[key] = dict(file=f"{key}.pt", method="forward", sha256=sha256(path), flops=count_flops(module, inputs))

    params = dict(
        time_embed=n_params(te),
        encoder=n_params(enc),
        decoder=n_params(dec),
    )
    if cond_encoder is not None:
        cond_encoder = cond_encoder.to(device).eval()
        if dtype != torch.float32:
            cond_encoder = cond_encoder.to(dtype)
        add("cond_encoder", cond_encoder, [cond_example.to(device)])
        params["cond_encoder"] = n_params(cond_encoder)
    vae_entry = None
    if vae is not None:
        vae = vae.to(device=device, dtype=dtype).eval()
        vd = VaeDecode(vae)
        add("vae_decoder", vd, [sample])
        params["vae_decoder"] = n_params(vd)
        vae_entry = dict(scaling_factor=float(vae_scaling_factor), out_channels=int(vae.config.out_channels),
                         upscale=2 ** (len(vae.config.block_out_channels) - 1))
    for fname, content in (extra_files or {}).items():
        with open(os.path.join(out_dir, fname), "w") as f:
            f.write(content)

    import diffusers

    manifest = dict(
        schema_version=SCHEMA_VERSION,
        name=name,
        in_channels=int(cfg.in_channels),
        out_channels=int(cfg.out_channels),
        sample_size=[int(h), int(w)],
        time_embed_dim=int(emb.shape[1]),
        mid_shape=list(feats[0].shape[1:]),
        skip_shapes=[list(s.shape[1:]) for s in feats[1:]],
        cond=cond_spec,
        prediction_type=scheduler_config.get("prediction_type", "epsilon"),
        scheduler=scheduler_config,
        dtype=str(dtype).replace("torch.", ""),
        export_device=device,
        graphs=graphs,
        deepcache=deepcache,
        vae=vae_entry,
        params=params,
        unet_config={k: v for k, v in dict(cfg).items() if not k.startswith("_")},
        exporter=dict(torch=torch.__version__, diffusers=diffusers.__version__, script="experiments/export_unet.py"),
    )
    manifest.update(extra_manifest or {})
    # remove graph files of an earlier export that this manifest no longer lists
    listed = {g["file"] for g in graphs.values()}
    for f in os.listdir(out_dir):
        if f.endswith(".pt") and f not in listed and f != "classifier.pt":
            os.remove(os.path.join(out_dir, f))
    tmp = os.path.join(out_dir, "manifest.json.tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=2, default=lambda o: list(o) if isinstance(o, tuple) else str(o))
        f.write("\n")
    os.replace(tmp, os.path.join(out_dir, "manifest.json"))
    return manifest


def write_pipeline_reference(unet, cond_encoder, null_id: int, scheduler_config: dict, out_path: str,
                             seeds=(0, 1), classes=(7, 8), steps: int = 50, guidance: float = 3.0) -> None:
    """The plain diffusers pipeline loop (DDIM, CFG) on a few seeds: what Rust sampling must equal."""
    from diffusers import DDIMScheduler
    from safetensors.torch import save_file

    sched = DDIMScheduler(**{k: v for k, v in scheduler_config.items() if not k.startswith("_")})
    sched.set_timesteps(steps)
    shape = (1, unet.config.in_channels, *([unet.config.sample_size] * 2))
    noise = torch.cat([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])
    x = noise * sched.init_noise_sigma
    with torch.no_grad():
        cond = torch.cat([cond_encoder(torch.full((len(seeds),), null_id)), cond_encoder(torch.tensor(classes))])
        for t in sched.timesteps:
            eps = unet(torch.cat([x, x]), t, encoder_hidden_states=cond).sample
            u, c = eps.chunk(2)
            x = sched.step(u + guidance * (c - u), t, x).prev_sample
    save_file(dict(samples=x.contiguous(), seeds=torch.tensor(seeds), classes=torch.tensor(classes),
                   steps=torch.tensor(steps), guidance=torch.tensor(guidance)), out_path)


def export_fmnist_checkpoint(checkpoint: str, out_dir: str, use_ema: bool = True, with_full: bool = False) -> dict:
    """Export the default model from a train_fmnist.py checkpoint (EMA weights by default)."""
    from fd_models import FMNIST_COND
    from fmnist_data import CLASS_NAMES
    from train_fmnist import SCHEDULER_CONFIG, Bundle

    ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
    os.makedirs(out_dir, exist_ok=True)
    bundle = Bundle()
    bundle.load_state_dict(ck["ema" if use_ema else "model"])
    cond_spec = dict(kind="class", seq_len=FMNIST_COND["seq_len"], dim=FMNIST_COND["dim"],
                     num_classes=FMNIST_COND["num_classes"], null_id=bundle.cond.null_id,
                     class_names=CLASS_NAMES)
    sched_cfg = dict(SCHEDULER_CONFIG, _class_name="DDIMScheduler")
    write_pipeline_reference(bundle.unet.eval(), bundle.cond.eval(), bundle.cond.null_id, sched_cfg,
                             os.path.join(out_dir, "reference_ddim50_cfg3.safetensors"))
    return export_model(
        out_dir, "fmnist-cfg-unet", bundle.unet, sched_cfg,
        bundle.cond, cond_spec, cond_example=torch.tensor([0]),
        extra_manifest=dict(training=dict(checkpoint_step=int(ck["step"]), wall_s=float(ck["wall_s"]),
                                          ema=use_ema)),
        with_full=with_full, deepcache_branches=(0, 1),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="train_fmnist.py checkpoint (exports the EMA weights)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--with-full", action="store_true", help="also export the unsplit reference graph")
    args = ap.parse_args()
    if not args.checkpoint:
        ap.error("--checkpoint is required (for Stable Diffusion folders use export_sd15.py)")
    m = export_fmnist_checkpoint(args.checkpoint, args.out, with_full=args.with_full)
    print(json.dumps({k: m[k] for k in ("name", "graphs", "params")}, indent=2))


if __name__ == "__main__":
    main()
