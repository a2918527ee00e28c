"""Text-to-video UNets (diffusers `UNet3DConditionModel`, the text-to-video-ms architecture) as split
graphs, with the UNet's split: the encoder is conv_in + transformer_in + the down blocks + the mid
block, the decoder the up blocks and the output layers; frames are an extra axis.

The graphs take and give tensors laid out as the model's sample, [B, C, F, H, W] (features too:
[B, C, F, h, w]), so a batch row is one whole video: fd's key-step batching, CFG rows and drift
statistics (channel mean -> map over frames x h x w -> Frobenius norm) treat a video like an image.
Inside, as diffusers, frames are folded into the batch ([B*F, C, h, w]) and the time embedding and
text states are repeated per frame. The frame count is fixed at export (`manifest.frames`): the
temporal attention's shapes are traced for it.
"""
from __future__ import annotations

import types

import torch
from torch import nn

from .graphs import TimestepProj


def is_video_unet(unet) -> bool:
    return type(unet).__name__ == "UNet3DConditionModel"


# what fd_export.export reads from a UNet form (fd_export.forms) for a UNet3D: no added
# conditioning, no DeepCache graphs (its shallow path is written for 2-D block types)
VIDEO_FORM = types.SimpleNamespace(prepare=False, pooled_dim=None, added_kind=None, added_inputs=[], deepcache=False,
                                   raw_dim=None)


def check_video(unet, frames: int | None) -> None:
    cfg = unet.config
    if frames is None or not 1 <= int(frames) <= 1024:
        raise ValueError(f"frames {frames!r}: a UNet3DConditionModel is exported for a fixed frame count in 1..1024 "
                         "(export_sd.py --frames F)")
    size = cfg.sample_size
    if size is None:
        raise ValueError("UNet3D config `sample_size` is None: give the latent size (e.g. 32 for 256 px)")


def _fold(x: torch.Tensor) -> torch.Tensor:
    """[B, C, F, h, w] -> [B*F, C, h, w] (frames into the batch, as diffusers)."""
    return x.permute(0, 2, 1, 3, 4).reshape((-1,) + (x.shape[1],) + tuple(x.shape[3:]))


def _unfold(x: torch.Tensor, frames: int) -> torch.Tensor:
    """[B*F, C, h, w] -> [B, C, F, h, w]."""
    return x.reshape((-1, frames) + tuple(x.shape[1:])).permute(0, 2, 1, 3, 4)


class VideoTimeEmbed(nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.time_proj = TimestepProj(unet.time_proj, unet.device)
        self.time_embedding = unet.time_embedding

    def forward(self, timesteps):
        t_emb = self.time_proj(timesteps.float()).to(self.time_embedding.linear_1.weight.dtype)
        return self.time_embedding(t_emb)


class VideoEncoder(nn.Module):
    def __init__(self, unet, frames: int):
        super().__init__()
        self.conv_in, self.transformer_in = unet.conv_in, unet.transformer_in
        self.down_blocks, self.mid_block = unet.down_blocks, unet.mid_block
        self.frames = int(frames)

    def forward(self, sample, emb, cond):
        f = self.frames
        emb = emb.repeat_interleave(f, dim=0)
        cond = cond.repeat_interleave(f, dim=0)
        x = self.conv_in(_fold(sample))
        x = self.transformer_in(x, num_frames=f, return_dict=False)[0]
        skips = (x,)
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                x, res = block(hidden_states=x, temb=emb, encoder_hidden_states=cond, num_frames=f)
            else:
                x, res = block(hidden_states=x, temb=emb, num_frames=f)
            skips += res
        x = self.mid_block(x, emb, encoder_hidden_states=cond, num_frames=f)
        return tuple(_unfold(t, f) for t in (x,) + skips)


class VideoDecoder(nn.Module):
    def __init__(self, unet, frames: int, analysis: bool = False):
        super().__init__()
        self.up_blocks = unet.up_blocks
        self.conv_norm_out, self.conv_act, self.conv_out = unet.conv_norm_out, unet.conv_act, unet.conv_out
        self.frames, self.analysis = int(frames), analysis
        # diffusers passes upsample sizes when the input is not a multiple of the total upsampling
        ups = sum(1 for b in unet.up_blocks[:-1] if getattr(b, "upsamplers", None) is not None)
        size = unet.config.sample_size
        self.forward_upsample_size = any(s % (2 ** ups) != 0 for s in (size if isinstance(size, (list, tuple)) else [size] * 2))

    def forward(self, mid, emb, cond, *skips):
        f = self.frames
        emb = emb.repeat_interleave(f, dim=0)
        cond = cond.repeat_interleave(f, dim=0)
        x = _fold(mid)
        res_all = tuple(_fold(s) for s in skips)
        outputs = []
        for i, block in enumerate(self.up_blocks):
            res = res_all[-len(block.resnets):]
            res_all = res_all[: -len(block.resnets)]
            upsample_size = res_all[-1].shape[2:] if self.forward_upsample_size and i < len(self.up_blocks) - 1 else None
            if getattr(block, "has_cross_attention", False):
                x = block(hidden_states=x, temb=emb, res_hidden_states_tuple=res, encoder_hidden_states=cond,
                          upsample_size=upsample_size, num_frames=f)
            else:
                x = block(hidden_states=x, temb=emb, res_hidden_states_tuple=res, upsample_size=upsample_size,
                          num_frames=f)
            if self.analysis:
                outputs.append(_unfold(x, f))
        if self.conv_norm_out is not None:
            x = self.conv_act(self.conv_norm_out(x))
        out = _unfold(self.conv_out(x), f)
        return (out, *outputs) if self.analysis else out


class VideoFull(nn.Module):
    """diffusers' UNet3DConditionModel.forward, unchanged (the parity reference)."""

    def __init__(self, unet, form=None):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timesteps, cond):
        return self.unet(sample, timesteps, encoder_hidden_states=cond, return_dict=False)[0]
