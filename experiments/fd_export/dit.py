"""DiT (diffusers `DiTTransformer2DModel`, class-conditional, adaLN-zero) as split graphs, the way
the authors' FasterDiffusion-DiT splits DiT-XL/2: the "encoder" is the patch embedding and the first
`split` transformer blocks (18 of 28 for DiT-XL/2), its output token tensor is what a key step
caches; the "decoder" is the remaining blocks and the final adaLN layer + unpatchify, run with each
step's own time embedding.

Graphs (same signatures as the UNet's, fd_export.graphs):

  time_embed   timesteps [B] float32              -> emb [B, 256]: the sinusoidal projection
               (diffusers `Timesteps(256, flip_sin_to_cos, shift 1)`); each block's own MLP and
               label table run inside the blocks, as in diffusers
  cond_encoder class ids [B] int64                -> cond [B, 1, 1]: the id as a float (the blocks
               embed it; id `num_classes` is the null class of classifier-free guidance)
  encoder      sample [B,C,H,W], emb, cond        -> (tokens [B, D, H/p, W/p],): the token tensor laid
               out channel-first on its patch grid, so fd's feature batching and the drift statistics
               (channel mean -> 2-D map -> Frobenius norm) read it like a UNet feature map
  decoder      tokens, emb, cond                  -> model output [B, C_out, H, W] (C_out = 2C with a
               learned sigma: [epsilon, variance interpolation])
  decoder_analysis  same inputs -> (output, each decoder block's tokens as a grid)
  encoder_analysis  the encoder's inputs -> (tokens, each earlier encoder block's tokens as a grid):
               the drift analysis of every block (the paper's Fig. 11), never used for sampling
  full         sample, timesteps [B], cond        -> diffusers' own forward (parity reference)
  vae_decoder  latents -> images (a latent DiT's VAE; optional)

Classifier-free guidance: diffusers' DiTPipeline guides every latent channel; the original DiT code
and the authors' FasterDiffusion-DiT guide the first 3 of 4 ("for exact reproducibility").
`guidance_channels` in the manifest records which (None = all); fd's executor reads it.
"""
from __future__ import annotations

import copy
import json
import os

import torch
from torch import nn

from .flops import count_flops, n_params
from .folder import sha256, write_manifest
from .graphs import TimestepProj, VaeDecode
from .schema import SCHEMA_VERSION
from .tracing import trace_and_save, trace_methods

# FasterDiffusion-DiT caches the output of DiT-XL/2's block 18 of 28
AUTHORS_SPLIT = (18, 28)


def default_split(num_layers: int) -> int:
    """The authors' 18/28 ratio for a model with `num_layers` blocks (at least one block each side)."""
    return max(1, min(num_layers - 1, round(num_layers * AUTHORS_SPLIT[0] / AUTHORS_SPLIT[1])))


def check_dit(model, split: int) -> None:
    """Refuse what fd does not export, naming the config field, before any file is written."""
    cfg = model.config
    if type(model).__name__ != "DiTTransformer2DModel":
        raise ValueError(f"{type(model).__name__}: only diffusers DiTTransformer2DModel is exported as a DiT")
    if cfg.norm_type != "ada_norm_zero" or cfg.num_embeds_ada_norm is None:
        raise ValueError(f"DiT config `norm_type` = {cfg.norm_type!r} / `num_embeds_ada_norm` = "
                         f"{cfg.num_embeds_ada_norm!r}: only class-conditional adaLN-zero DiTs are exported")
    if cfg.out_channels not in (cfg.in_channels, 2 * cfg.in_channels):
        raise ValueError(f"DiT config `out_channels` = {cfg.out_channels}: must be `in_channels` ({cfg.in_channels}) "
                         "or twice it (learned sigma)")
    n = len(model.transformer_blocks)
    if not 1 <= split < n:
        raise ValueError(f"split {split} outside 1..{n - 1}: the encoder and the decoder need at least one of "
                         f"the model's {n} transformer blocks each")


def _grid(h: torch.Tensor, d: int, gh: int, gw: int) -> torch.Tensor:
    """[B, N, D] tokens -> [B, D, gh, gw] (row-major patch order, as the patch embedding lays them)."""
    return h.transpose(1, 2).reshape(-1, d, gh, gw)


def _tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)


class DiTParts(nn.Module):
    """The model with every block's timestep projection taken out (`time_proj` -> identity): the
    blocks then take the `time_embed` graph's projection as their `timestep`, so one projection per
    step serves all blocks and the numbers are diffusers' own (its blocks project the same t)."""

    def __init__(self, model, split: int):
        super().__init__()
        m = copy.deepcopy(model).eval()
        for blk in m.transformer_blocks:
            blk.norm1.emb.time_proj = nn.Identity()
        self.m, self.split = m, split
        cfg = m.config
        self.p = cfg.patch_size
        self.d = cfg.num_attention_heads * cfg.attention_head_dim
        size = cfg.sample_size
        self.gh = self.gw = size // self.p
        self.out_channels = cfg.out_channels

    def blocks(self, h, emb, labels, blocks, outputs: list | None = None):
        for blk in blocks:
            h = blk(h, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None, timestep=emb,
                    cross_attention_kwargs=None, class_labels=labels)
            if outputs is not None:
                outputs.append(_grid(h, self.d, self.gh, self.gw))
        return h

    def head(self, h, emb, labels):
        m = self.m
        conditioning = m.transformer_blocks[0].norm1.emb(emb, labels, hidden_dtype=h.dtype)
        shift, scale = m.proj_out_1(nn.functional.silu(conditioning)).chunk(2, dim=1)
        h = m.norm_out(h) * (1 + scale[:, None]) + shift[:, None]
        h = m.proj_out_2(h)
        h = h.reshape(-1, self.gh, self.gw, self.p, self.p, self.out_channels)
        h = torch.einsum("nhwpqc->nchpwq", h)
        return h.reshape(-1, self.out_channels, self.gh * self.p, self.gw * self.p)


def _labels(cond: torch.Tensor) -> torch.Tensor:
    return cond[:, 0, 0].round().long()


class DiTEncoder(nn.Module):
    """The encoder graph; with `analysis`, also every encoder block's output but the last (which is
    the cached tokens themselves): `encoder_analysis`."""

    def __init__(self, parts: DiTParts, analysis: bool = False):
        super().__init__()
        self.parts, self.analysis = parts, analysis

    def forward(self, sample, emb, cond):
        p = self.parts
        outs: list | None = [] if self.analysis else None
        h = p.m.pos_embed(sample)
        h = p.blocks(h, emb, _labels(cond), p.m.transformer_blocks[:p.split], outs)
        tokens = _grid(h, p.d, p.gh, p.gw)
        return (tokens, *outs[:-1]) if outs is not None else (tokens,)


class DiTDecoder(nn.Module):
    def __init__(self, parts: DiTParts, analysis: bool = False):
        super().__init__()
        self.parts, self.analysis = parts, analysis

    def forward(self, tokens, emb, cond):
        p = self.parts
        labels = _labels(cond)
        outs: list | None = [] if self.analysis else None
        h = p.blocks(_tokens(tokens), emb, labels, p.m.transformer_blocks[p.split:], outs)
        out = p.head(h, emb, labels)
        return (out, *outs) if self.analysis else out


# ---------------------------------------------------------------------------------------------
# TeaCache / First-Block Cache on a DiT, as their official DiT code paths run them (TeaCache's
# FLUX / Open-Sora / Latte forwards; ParaAttention's and diffusers' FirstBlockCache): the
# transformer's token stream is cut at the patch embedding, after the first block and after the
# last block, and a step that reuses the cache adds the cached *token residual* of the skipped
# blocks, then runs the final layer at its own timestep. Four graphs (stepcache.pt):
#
#   stepcache_embed  sample, emb, cond -> (h0, indicator)  patch tokens; TeaCache's indicator, the
#                                                         first block's timestep-modulated input
#                                                         norm1(h0) * (1 + scale_msa) + shift_msa
#   stepcache_first  h0, emb, cond     -> h1               the first block (FBCache's indicator:
#                                                         its residual h1 - h0)
#   stepcache_rest   h1, emb, cond     -> hL               blocks 1..L-1
#   stepcache_head   hL, emb, cond     -> model output     final adaLN layer + unpatchify
#
# Tokens travel as [B, D, H/p, W/p] grids, as the encoder's output does.
# ---------------------------------------------------------------------------------------------
STEPCACHE_FILE = "stepcache.pt"
STEPCACHE_GRAPHS = ("stepcache_embed", "stepcache_first", "stepcache_rest", "stepcache_head")


class DiTStepCache(nn.Module):
    def __init__(self, parts: DiTParts, which: str):
        super().__init__()
        self.parts, self.which = parts, which

    def forward(self, x, emb, cond):
        p = self.parts
        labels = _labels(cond)
        blocks = p.m.transformer_blocks
        grid = lambda h: _grid(h, p.d, p.gh, p.gw)  # noqa: E731
        if self.which == "stepcache_embed":
            h0 = p.m.pos_embed(x)
            modulated = blocks[0].norm1(h0, emb, labels, hidden_dtype=h0.dtype)[0]
            return grid(h0), grid(modulated)
        if self.which == "stepcache_first":
            return grid(p.blocks(_tokens(x), emb, labels, blocks[:1]))
        if self.which == "stepcache_rest":
            return grid(p.blocks(_tokens(x), emb, labels, blocks[1:]))
        return p.head(_tokens(x), emb, labels)


def dit_stepcache_graphs(parts: DiTParts, sample, emb, cond) -> dict:
    """The four step-cache graphs with example inputs, for trace_methods."""
    mods = {k: DiTStepCache(parts, k) for k in STEPCACHE_GRAPHS}
    with torch.no_grad():
        h0, _ = mods["stepcache_embed"](sample, emb, cond)
        h1 = mods["stepcache_first"](h0, emb, cond)
        hl = mods["stepcache_rest"](h1, emb, cond)
    inputs = dict(stepcache_embed=[sample, emb, cond], stepcache_first=[h0, emb, cond],
                  stepcache_rest=[h1, emb, cond], stepcache_head=[hl, emb, cond])
    return {k: (mods[k], inputs[k]) for k in STEPCACHE_GRAPHS}


def dit_teacache_fit(model, scheduler_config: dict, num_classes: int, guidance_channels: int | None = None,
                     **kw) -> dict:
    """TeaCache's rescaling polynomial for a class-conditional DiT (export.teacache_fit's protocol:
    DDIM-50 CFG-3 baseline trajectories of 20 samples; indicator = the first block's modulated
    input, output = the model's noise prediction)."""
    from .methods.teacache import teacache_fit

    parts = DiTParts(model, 1)
    embed = DiTStepCache(parts, "stepcache_embed").eval()
    te = DiTTimeEmbed(model)
    cin = int(model.config.in_channels)

    def probe(x2, tt, labels2):
        return embed(x2, te(tt), labels2.float().view(-1, 1, 1))[1]  # [B, D, h, w]: rel-L1 is order-free

    def forward(x2, tt, labels2):  # the noise prediction (a learned sigma's channels left out)
        return model(x2, timestep=tt, class_labels=labels2).sample[:, :cin]

    def guide(out, guidance):
        u, c = out.chunk(2)
        g = min(guidance_channels or cin, cin)
        eps = torch.cat([u[:, :g] + guidance * (c[:, :g] - u[:, :g]), c[:, g:cin]], 1)
        return eps

    size = int(model.config.sample_size)
    device = next(model.parameters()).device
    return teacache_fit(probe, forward, guide, (cin, size, size), lambda ids: torch.tensor(ids, device=device),
                        num_classes, scheduler_config, device=device, **kw)


class DiTTimeEmbed(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.proj = TimestepProj(model.transformer_blocks[0].norm1.emb.time_proj)

    def forward(self, timesteps):
        return self.proj(timesteps)


class DiTFull(nn.Module):
    """diffusers' DiTTransformer2DModel.forward, unchanged (the parity reference)."""

    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, sample, timesteps, cond):
        return self.m(sample, timestep=timesteps, class_labels=_labels(cond)).sample


class ClassIds(nn.Module):
    """Class ids [B] -> [B, 1, 1] float: what the DiT graphs read their labels from."""

    def forward(self, ids):
        return ids.to(torch.float32).view(-1, 1, 1)


# the UNet-file graphs `aoti=True` compiles (what every plan's loop calls, and drift's analysis
# graphs), besides the class-id graph, the VAE decoder and the step-cache graphs
AOTI_GRAPHS = ("time_embed", "encoder", "decoder", "decoder_analysis", "encoder_analysis")


def dit_graphs(model, split: int, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """The split model (`DiTParts`) and {graph name: (module, batch-1 example inputs)} of the
    graphs unet.pt holds: the loop's (time_embed, encoder, decoder) and drift's analysis graphs.
    What `export_dit` traces and what `fd_export.aoti` compiles for an existing DiT export."""
    cfg = model.config
    parts = DiTParts(model, split)
    te, enc, dec = DiTTimeEmbed(model).to(device), DiTEncoder(parts), DiTDecoder(parts)
    size = int(cfg.sample_size)
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(1, cfg.in_channels, size, size, generator=g).to(device, dtype)
    timesteps = torch.tensor([500.0], device=device)
    cond = torch.tensor([[[1.0]]], device=device, dtype=dtype)
    with torch.no_grad():
        emb = te(timesteps).to(dtype)
        (tokens,) = enc(sample, emb, cond)
    return parts, {
        "time_embed": (te, [timesteps]),
        "encoder": (enc, [sample, emb, cond]),
        "decoder": (dec, [tokens, emb, cond]),
        "decoder_analysis": (DiTDecoder(parts, analysis=True), [tokens, emb, cond]),
        "encoder_analysis": (DiTEncoder(parts, analysis=True), [sample, emb, cond]),
    }


def export_dit(
    out_dir: str,
    name: str,
    model,
    scheduler_config: dict,
    split: int | None = None,
    class_names: list[str] | None = None,
    guidance_channels: int | None = None,
    vae=None,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    with_full: bool = True,
    family: str = "dit",
    extra_manifest: dict | None = None,
    with_stepcache: bool = True,
    aoti: bool = False,
) -> dict:
    """Export a DiTTransformer2DModel (+ optional VAE) into `out_dir`. `aoti`: also compile
    AOTInductor packages of the loop's graphs ([`AOTI_GRAPHS`]), the class-id graph, the VAE
    decoder and the step-cache graphs (fd_export.aoti). `split`: number of blocks in
    the encoder (default: the authors' 18/28 ratio). `with_stepcache`: also the TeaCache / FBCache
    / MagCache / TaylorSeer graphs (stepcache.pt), PAB's (pab.pt), TeaCache's polynomial fitted on
    the model (manifest `teacache`) and MagCache's magnitude ratios calibrated on them (manifest
    `magcache`).
    Everything is checked before a file is written."""
    split = default_split(len(model.transformer_blocks)) if split is None else int(split)
    check_dit(model, split)
    cfg = model.config
    num_classes = int(cfg.num_embeds_ada_norm)
    table = model.transformer_blocks[0].norm1.emb.class_embedder.embedding_table.num_embeddings
    if table != num_classes + 1:
        raise ValueError(f"label table has {table} rows for {num_classes} classes: no null class for classifier-free "
                         "guidance (diffusers builds it when class_dropout_prob > 0)")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
    if guidance_channels is not None and not 1 <= guidance_channels <= cfg.in_channels:
        raise ValueError(f"guidance_channels {guidance_channels} outside 1..{cfg.in_channels}")
    if cfg.sample_size % cfg.patch_size:
        raise ValueError(f"DiT config `sample_size` {cfg.sample_size} is not a multiple of `patch_size` {cfg.patch_size}")
    os.makedirs(out_dir, exist_ok=True)
    model = model.to(device=device, dtype=dtype).eval()
    parts, parts_map = dit_graphs(model, split, device, dtype)
    size = int(cfg.sample_size)
    sample, emb, cond = parts_map["encoder"][1]
    timesteps, tokens = parts_map["time_embed"][1][0], parts_map["decoder"][1][0]
    if with_full:
        parts_map["full"] = (DiTFull(model), [sample, timesteps, cond])
    # TeaCache / FBCache graphs and TeaCache's polynomial, fitted on the model in float32
    stepcache = dit_stepcache_graphs(parts, sample, emb, cond) if with_stepcache else None
    teacache = (dit_teacache_fit(copy.deepcopy(model).float().eval(), scheduler_config, num_classes, guidance_channels)
                if with_stepcache else None)
    path = os.path.join(out_dir, "unet.pt")
    trace_methods(parts_map, path)
    h = sha256(path)
    graphs = {k: dict(file="unet.pt", method=k, sha256=h, flops=count_flops(m, inp)) for k, (m, inp) in parts_map.items()}

    compiled = [(k, *parts_map[k]) for k in AOTI_GRAPHS]  # for `aoti`

    def add(key, module, inputs):
        p = os.path.join(out_dir, f"{key}.pt")
        trace_and_save(module, inputs, p)
        graphs[key] = dict(file=f"{key}.pt", method="forward", sha256=sha256(p), flops=count_flops(module, inputs))
        compiled.append((key, module, inputs))

    add("cond_encoder", ClassIds(), [torch.tensor([1], device=device)])
    if stepcache is not None:
        sc_path = os.path.join(out_dir, STEPCACHE_FILE)
        trace_methods(stepcache, sc_path)
        sc_hash = sha256(sc_path)
        for key, (module, inp) in stepcache.items():
            graphs[key] = dict(file=STEPCACHE_FILE, method=key, sha256=sc_hash, flops=count_flops(module, inp))
        # PAB's graphs (attention outputs captured / given), on their own copy of the blocks
        from .methods.pab import PAB_FILE, dit_pab_graphs

        pab = dit_pab_graphs(model, split, *stepcache["stepcache_first"][1])
        pab_path = os.path.join(out_dir, PAB_FILE)
        trace_methods(pab, pab_path)
        pab_hash = sha256(pab_path)
        for key, (module, inp) in pab.items():
            graphs[key] = dict(file=PAB_FILE, method=key, sha256=pab_hash, flops=count_flops(module, inp))
        stepcache.update(pab)
    blocks = model.transformer_blocks
    params = dict(time_embed=0, encoder=n_params(model.pos_embed, *blocks[:split]),
                  decoder=n_params(*blocks[split:], model.proj_out_1, model.proj_out_2, model.norm_out))
    vae_entry = None
    if vae is not None:
        vae_dtype = torch.float32 if getattr(vae.config, "force_upcast", False) else dtype
        vae = vae.to(device=device, dtype=vae_dtype).eval()
        vd = VaeDecode(vae)
        add("vae_decoder", vd, [sample[:, : vae.config.latent_channels].to(vae_dtype)])
        params["vae_decoder"] = n_params(vd)
        vae_entry = dict(scaling_factor=float(vae.config.scaling_factor), out_channels=int(vae.config.out_channels),
                         upscale=2 ** (len(vae.config.block_out_channels) - 1), dtype=str(vae_dtype).replace("torch.", ""))
    if aoti:  # compiled and checked against the TorchScript just written
        from .aoti import add_packages

        compiled += [(k, *v) for k, v in stepcache.items()] if stepcache is not None else []
        add_packages(out_dir, graphs, compiled, device)
    import diffusers

    manifest = dict(
        schema_version=SCHEMA_VERSION,
        name=name,
        family=family,
        kind="dit",
        split=dict(encoder_blocks=split, blocks=len(blocks), reference="sen-mao/FasterDiffusion-DiT: blocks[:18] of 28"),
        guidance_channels=guidance_channels,
        in_channels=int(cfg.in_channels),
        out_channels=int(cfg.out_channels),
        sample_size=[size, size],
        time_embed_dim=int(emb.shape[1]),
        mid_shape=list(tokens.shape[1:]),
        skip_shapes=[],
        cond=dict(kind="class", seq_len=1, dim=1, num_classes=num_classes, null_id=num_classes,
                  class_names=class_names),
        prediction_type=scheduler_config.get("prediction_type", "epsilon"),
        scheduler=scheduler_config,
        dtype=str(dtype).replace("torch.", ""),
        export_device=device,
        graphs=graphs,
        vae=vae_entry,
        params=params,
        teacache=teacache,
        magcache=None,
        unet_config={k: v for k, v in dict(cfg).items() if not k.startswith("_")},
        exporter=dict(torch=torch.__version__, diffusers=diffusers.__version__, script="experiments/export/export_dit.py",
                      frozen=True),
    )
    manifest.update(extra_manifest or {})
    if with_stepcache:  # MagCache's magnitude ratios, from the step-cache graphs just written
        from .methods.magcache import export_calibration

        manifest["magcache"] = export_calibration(out_dir, manifest)
    else:
        del manifest["magcache"]
    write_manifest(out_dir, manifest)
    return manifest


def export_dit_folder(checkpoint: str, out_dir: str, device: str, dtype: str, name: str | None = None,
                      split: int | None = None, guidance_channels: int | None = None,
                      with_stepcache: bool = True, aoti: bool = False) -> dict:
    """A local diffusers DiTPipeline folder (transformer/, vae/, scheduler/; nothing is downloaded)."""
    from diffusers import AutoencoderKL, DiTTransformer2DModel

    from .flops import DTYPES

    for sub in ("transformer", "scheduler"):
        if not os.path.isdir(os.path.join(checkpoint, sub)):
            raise FileNotFoundError(f"{checkpoint}: no `{sub}/` folder (expected a diffusers DiTPipeline folder)")
    model = DiTTransformer2DModel.from_pretrained(checkpoint, subfolder="transformer")
    vae = AutoencoderKL.from_pretrained(checkpoint, subfolder="vae") if os.path.isdir(
        os.path.join(checkpoint, "vae")) else None
    with open(os.path.join(checkpoint, "scheduler", "scheduler_config.json")) as f:
        sched = {k: v for k, v in json.load(f).items() if not k.startswith("_") or k == "_class_name"}
    names = None
    index = os.path.join(checkpoint, "model_index.json")
    if os.path.exists(index):
        with open(index) as f:
            id2label = json.load(f).get("id2label")
        if id2label:
            names = [id2label[str(i)] for i in range(model.config.num_embeds_ada_norm)]
    return export_dit(out_dir, name or os.path.basename(os.path.normpath(checkpoint)), model, sched, split=split,
                      class_names=names, guidance_channels=guidance_channels, vae=vae, dtype=DTYPES[dtype], device=device,
                      with_stepcache=with_stepcache, aoti=aoti)
