"""Graph wrappers: each holds only the submodules its graph needs, so a graph file embeds only its
part. They mirror UNet2DConditionModel.forward stage by stage (no class/aug embeddings, no ControlNet).

  time_embed   timesteps [B] float32 [, extra [B, E]]   -> emb [B, E]  (extra: cond_prepare's, when the
                                                            model has added conditioning)
  cond_prepare states [B,L,Dr] [, pooled [B,P], time_ids [B,6]] -> (cond [B,L,D], extra [B,E])
                                                            once per sample (SDXL text_time, IF text)
  encoder      sample [B,C,H,W], emb [B,E], cond [B,L,D] -> (mid, skip_0, ..., skip_{S-1})
  decoder      mid, emb, cond, skip_0..skip_{S-1}        -> model output [B,C_out,H,W]
  full         sample, timesteps [B], states [, pooled, time_ids] -> model output (reference, = diffusers
                                                            forward with added_cond_kwargs)
  cond_encoder class ids [B] int64 | token ids [B,77]    -> cond [B,L,D]          (optional)
  vae_decoder  latents [B,4,h,w] (already / scaling)     -> images [B,3,H,W] in [-1,1] (optional)

The encoder is the paper's E (conv_in, down blocks, mid block; the time embedding is its own graph so
that a non-key step can run D with its own embedding); the decoder is D (up blocks, norm, conv_out).
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

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
    """timesteps -> emb: diffusers' time projection and embedding, then (models with added
    conditioning) + the per-sample `extra` from cond_prepare, then `time_embed_act` — the order of
    UNet2DConditionModel.forward."""

    def __init__(self, unet):
        super().__init__()
        self.time_proj = TimestepProj(unet.time_proj, unet.device)
        self.time_embedding = unet.time_embedding
        self.act = unet.time_embed_act if unet.time_embed_act is not None else nn.Identity()

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        return self.act(self.embed(timesteps))

    def embed(self, timesteps: torch.Tensor) -> torch.Tensor:
        # diffusers get_time_embed: time_proj in float32, cast to the model dtype
        t_emb = self.time_proj(timesteps.float()).to(self.time_embedding.linear_1.weight.dtype)
        return self.time_embedding(t_emb)


class TimeEmbedExtra(TimeEmbed):
    def forward(self, timesteps: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        return self.act(self.embed(timesteps) + extra)


class CondPrepare(nn.Module):
    """The per-sample conditioning of a UNet with added embeddings: diffusers' get_aug_embed
    (SDXL `text_time`: pooled text embeds + projected time ids; IF `text`: attention-pooled text
    states) and process_encoder_hidden_states (`encoder_hid_proj`). Returns (cond, extra): the
    states the cross-attention reads and what the time embedding adds."""

    def __init__(self, unet, form):
        super().__init__()
        self.kind = form.added_kind
        self.add_embedding = unet.add_embedding
        self.add_time_proj = TimestepProj(unet.add_time_proj, unet.device) if self.kind == "text_time" else None
        self.encoder_hid_proj = unet.encoder_hid_proj
        self.time_embed_dim = unet.time_embedding.linear_2.out_features

    def forward(self, states, *added):
        if self.kind == "text_time":
            text_embeds, time_ids = added
            time_embeds = self.add_time_proj(time_ids.flatten()).reshape((text_embeds.shape[0], -1))
            add = torch.cat([text_embeds, time_embeds], dim=-1).to(self.add_embedding.linear_1.weight.dtype)
            extra = self.add_embedding(add)
        elif self.kind == "text":
            extra = self.add_embedding(states)
        else:
            extra = states.new_zeros(states.shape[0], self.time_embed_dim)
        if self.encoder_hid_proj is not None:
            states = self.encoder_hid_proj(states)
        return states, extra


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
        if getattr(self.mid_block, "has_cross_attention", False):
            sample = self.mid_block(sample, emb, encoder_hidden_states=cond)
        else:
            sample = self.mid_block(sample, emb)
        return (sample,) + skips


class Decoder(nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.up_blocks = unet.up_blocks
        self.conv_norm_out = unet.conv_norm_out
        self.conv_act = unet.conv_act
        self.conv_out = unet.conv_out
        self.up_factor = 2 ** unet.num_upsamplers

    def run_up(self, sample, emb, cond, skips, out_size, final_index: int, outputs: list | None = None,
               blocks=None):
        """Up blocks (`blocks`, default self.up_blocks) on `sample`; `final_index` is the index
        (among them) of the UNet's last up block, or -1 when it is not among them. Each block's
        output is appended to `outputs`."""
        # diffusers forwards explicit upsample sizes when the output size is not a multiple of the
        # overall up factor.
        forward_upsample_size = any(s % self.up_factor != 0 for s in out_size)
        for i, block in enumerate(self.up_blocks if blocks is None else blocks):
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

    def __init__(self, unet, branch: int | None = None, count: int | None = None):
        super().__init__()
        self.conv_in = unet.conv_in
        self.count = shallow_skip_count(unet, branch) if count is None else count
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


# ---------------------------------------------------------------------------------------------
# DeepCache as its authors define it (horseee/DeepCache, DeepCacheSDHelper): `cache_branch_id` =
# 3 * block + layer. At a cached step every module "after" the cut returns its output of the last
# full step: down block `block`'s layers >= `layer` and every deeper down block, the mid block,
# every up block with (reversed) index > `block`, and in up block `block` its layers with reversed
# index > `layer`. What still runs: conv_in, the down path before the cut, and up block `block`'s
# last `layer` + 1 layers with the up blocks after it. The cached tensor is the input of the first
# of those up layers. Block-level branch b of fd's earlier graphs is the id whose layer is the down
# block's layer count (the whole up block runs).
# ---------------------------------------------------------------------------------------------
def official_cut(unet, cache_branch_id: int) -> tuple[int, int, int]:
    """DeepCache's cache_branch_id -> (index of the cut up block in unet.up_blocks, its first
    shallow layer, number of skips the shallow path produces); refuses ids outside the UNet."""
    block, layer = divmod(int(cache_branch_id), 3)
    n = len(unet.up_blocks)
    if cache_branch_id < 0 or block >= n:
        raise ValueError(f"DeepCache cache_branch_id {cache_branch_id}: block {block} outside 0..{n - 1} "
                         f"(ids 0..{3 * n - 1}: block = id // 3, layer = id % 3)")
    down, up = unet.down_blocks[block], unet.up_blocks[n - 1 - block]
    nl = len(down.resnets)
    if len(up.resnets) != nl + 1:
        raise ValueError(f"DeepCache ids need up block {n - 1 - block} to have one layer more than down block {block} "
                         f"({len(up.resnets)} vs {nl})")
    if layer > nl:
        raise ValueError(f"DeepCache cache_branch_id {cache_branch_id}: layer {layer} outside 0..{nl} "
                         f"(down block {block} has {nl} layers)")
    count = 1 + sum(len(b.resnets) + (b.downsamplers is not None) for b in unet.down_blocks[:block]) + layer
    return n - 1 - block, nl - layer, count


def block_branch_id(unet, branch: int) -> int:
    """The cache_branch_id equal to fd's earlier block-level branch `branch` (the whole up block
    U[n-1-branch] in the shallow path)."""
    return 3 * branch + len(unet.down_blocks[branch].resnets)


def _up_layers(block, h, emb, cond, res, start: int, stop: int):
    """Layers start..stop-1 of an up block (CrossAttnUpBlock2D / UpBlock2D.forward's loop), each
    taking the last remaining skip of `res`; returns (h, res left)."""
    attns = block.attentions if getattr(block, "has_cross_attention", False) else [None] * len(block.resnets)
    for resnet, attn in list(zip(block.resnets, attns))[start:stop]:
        h = torch.cat([h, res[-1]], dim=1)
        res = res[:-1]
        h = resnet(h, emb)
        if attn is not None:
            h = attn(h, encoder_hidden_states=cond, return_dict=False)[0]
    return h, res


class CutDeepDecoder(Decoder):
    """Full step of DeepCache `cache_branch_id`: up blocks before the cut and the cut block's
    layers before it, on the encoder features -> the cached tensor."""

    def __init__(self, unet, cache_branch_id: int):
        super().__init__(unet)
        cut, self.start, _ = official_cut(unet, cache_branch_id)
        self.up_blocks = nn.ModuleList(list(unet.up_blocks)[:cut])
        self.block = unet.up_blocks[cut]
        self.conv_norm_out = self.conv_act = self.conv_out = None

    def forward(self, mid, emb, cond, *skips):
        skips = tuple(skips)
        h = self.run_up(mid, emb, cond, skips, skips[0].shape[-2:], final_index=-1)
        left = skips[: len(skips) - sum(len(b.resnets) for b in self.up_blocks)]
        h, _ = _up_layers(self.block, h, emb, cond, left[-len(self.block.resnets):], 0, self.start)
        return h


class CutShallowDecoder(Decoder):
    """Cached step of DeepCache `cache_branch_id`: the cut block's remaining layers (+ its
    upsampler) on the cached tensor and the fresh shallow skips, the up blocks after it, output."""

    def __init__(self, unet, cache_branch_id: int):
        super().__init__(unet)
        cut, self.start, self.count = official_cut(unet, cache_branch_id)
        self.block = unet.up_blocks[cut]
        self.up_blocks = nn.ModuleList(list(unet.up_blocks)[cut + 1:])
        self.last = cut == len(unet.up_blocks) - 1

    def forward(self, h, emb, cond, *skips):
        block, skips = self.block, tuple(skips)
        h, skips = _up_layers(block, h, emb, cond, skips, self.start, len(block.resnets))
        if block.upsamplers is not None:
            size = skips[-1].shape[2:] if (not self.last and any(s % self.up_factor != 0 for s in skips[0].shape[-2:])) else None
            for up in block.upsamplers:
                h = up(h, size)
        if len(self.up_blocks):
            h = self.run_up(h, emb, cond, skips, skips[0].shape[-2:], final_index=len(self.up_blocks) - 1)
        if self.conv_norm_out is not None:
            h = self.conv_act(self.conv_norm_out(h))
        return self.conv_out(h)


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
    """diffusers' own forward on the raw inputs (text states, and the added inputs the model has)."""

    def __init__(self, unet, form=None):
        super().__init__()
        # diffusers' own forward, with the device-portable time projection (on a copy whose
        # submodule table is its own, so the caller's UNet is left as it was).
        unet = copy.copy(unet)
        unet._modules = dict(unet._modules)
        unet.time_proj = TimestepProj(unet.time_proj, unet.device)
        if getattr(unet, "add_time_proj", None) is not None:
            unet.add_time_proj = TimestepProj(unet.add_time_proj, unet.device)
        self.unet = unet
        self.text_time = form is not None and form.added_kind == "text_time"

    def forward(self, sample, timesteps, cond, *added):
        kw = {}
        if self.text_time:
            kw = dict(text_embeds=added[0], time_ids=added[1])
        return self.unet(sample, timesteps, encoder_hidden_states=cond, added_cond_kwargs=kw, return_dict=False)[0]


class ControlNetResiduals(nn.Module):
    """diffusers ControlNetModel: (scaled model input, timesteps, text states, condition image in
    [0, 1]) -> (mid residual, skip residuals...) at conditioning scale 1, in the order of the
    encoder's outputs (the caller scales them and adds them to the encoder features)."""

    def __init__(self, controlnet):
        super().__init__()
        cn = copy.copy(controlnet)
        cn._modules = dict(cn._modules)
        cn.time_proj = TimestepProj(cn.time_proj, cn.device)
        self.cn = cn

    def forward(self, sample, timesteps, cond, image):
        down, mid = self.cn(sample, timesteps, encoder_hidden_states=cond, controlnet_cond=image,
                            conditioning_scale=1.0, return_dict=False)
        return (mid,) + tuple(down)


class VaeDecode(nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.post_quant_conv = vae.post_quant_conv
        self.decoder = vae.decoder

    def forward(self, latents):
        if self.post_quant_conv is not None:
            latents = self.post_quant_conv(latents)
        return self.decoder(latents)


class T5Encode(nn.Module):
    """T5 encoder as DeepFloyd-IF's encode_prompt calls it: token ids with the tokenizer's
    attention mask (ids != pad id) -> last hidden state."""

    def __init__(self, encoder, pad_id: int):
        super().__init__()
        self.encoder, self.pad_id = encoder, pad_id

    def forward(self, ids):
        mask = (ids != self.pad_id).long()
        return self.encoder(ids, attention_mask=mask, return_dict=False)[0]


class TextEncode(nn.Module):
    def __init__(self, text_model):
        super().__init__()
        self.text_model = text_model

    def forward(self, input_ids):
        return self.text_model(input_ids, return_dict=False)[0]


# ---------------------------------------------------------------------------------------------
# TeaCache's indicator on a UNet (ali-vilab/TeaCache measures the first transformer block's
# timestep-modulated input, norm1(x) * (1 + scale(t)) + shift(t)). A UNet's first block is
# down_blocks[0].resnets[0], where the time embedding enters: with diffusers' default
# `time_embedding_norm` it is added after conv1 (the probe is conv1(silu(norm1(h))) + proj(emb),
# the tensor norm2 receives); with `scale_shift` it is norm2(h) * (1 + scale) + shift, as TeaCache's.
#   teacache_probe  sample [B,C,H,W], emb [B,E] -> modulated input [B,C0,H,W]
# ---------------------------------------------------------------------------------------------
class TeaCacheProbe(nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.conv_in = unet.conv_in
        r = unet.down_blocks[0].resnets[0]
        if r.upsample is not None or r.downsample is not None or r.time_emb_proj is None:
            raise ValueError("TeaCache probe: the first resnet resamples or takes no time embedding")
        if r.time_embedding_norm not in ("default", "scale_shift"):
            raise ValueError(f"TeaCache probe: time_embedding_norm `{r.time_embedding_norm}` is not modulated by t")
        self.resnet = r

    def forward(self, sample, emb):
        r = self.resnet
        h = r.conv1(r.nonlinearity(r.norm1(self.conv_in(sample))))
        temb = emb if r.skip_time_act else r.nonlinearity(emb)
        temb = r.time_emb_proj(temb)[:, :, None, None]
        if r.time_embedding_norm == "scale_shift":
            scale, shift = torch.chunk(temb, 2, dim=1)
            return r.norm2(h) * (1 + scale) + shift
        return h + temb


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
