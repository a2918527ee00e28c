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


class AnalysisDecoder(Decoder):
    """The decoder that also returns every up block's output (feature-drift analysis)."""

    def forward(self, mid, emb, cond, *skips):
        ups = []
        sample = self.run_up(mid, emb, cond, tuple(skips), skips[0].shape[-2:], len(self.up_blocks) - 1, ups)
        if self.conv_norm_out is not None:
            sample = self.conv_act(self.conv_norm_out(sample))
        return (self.conv_out(sample),) + tuple(ups)


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


