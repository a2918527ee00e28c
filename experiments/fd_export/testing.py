"""Tiny random-init models for test fixtures (deterministic: every fixture script rebuilds them
from here), and the substituted diffusers forward that encoder-propagation references use."""
from __future__ import annotations

import hashlib
import os

import torch

from .fmnist import ClassCondEncoder

TINY_UNET = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
    block_out_channels=(16, 32), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
    attention_head_dim=4, norm_num_groups=8,
)
SCHED = dict(_class_name="DDIMScheduler", num_train_timesteps=1000, beta_schedule="scaled_linear",
             beta_start=0.00085, beta_end=0.012, prediction_type="epsilon", clip_sample=False,
             set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading")


def substituted_forward(unet, sample, t_dec, cond, t_enc):
    """diffusers forward at t_dec, with every encoder-side output replaced by its value at t_enc."""
    captured = {}
    mods = [("conv_in", unet.conv_in), ("mid", unet.mid_block)] + [
        (f"down{i}", b) for i, b in enumerate(unet.down_blocks)]
    hooks = [m.register_forward_hook(lambda m, i, o, k=k: captured.__setitem__(k, o)) for k, m in mods]
    unet(sample, t_enc, encoder_hidden_states=cond)
    for h in hooks:
        h.remove()
    hooks = [m.register_forward_hook(lambda m, i, o, k=k: captured[k]) for k, m in mods]
    out = unet(sample, t_dec, encoder_hidden_states=cond).sample
    for h in hooks:
        h.remove()
    return out


def build_tiny():
    """The tiny fixture model (deterministic: other fixture scripts rebuild it from here)."""
    torch.manual_seed(1234)
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(**TINY_UNET).eval()
    # random init leaves conv_out at zero in some versions; perturb all params so outputs are rich
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    cond_enc = ClassCondEncoder(num_classes=3, seq_len=3, dim=16).eval()
    return unet, cond_enc


def fixture_stamp(out: str, sources: list[str]) -> str | None:
    """The stamp a generated fixture folder `out` must carry: SHA-256 of its generator `sources`
    and of every fd_export module. None (and a message) when `out` already carries it; otherwise
    the caller rebuilds `out` and then writes the stamp with `write_stamp`."""
    pkg = os.path.dirname(os.path.abspath(__file__))
    files = list(sources) + [os.path.join(pkg, f) for f in sorted(os.listdir(pkg)) if f.endswith(".py")]
    stamp = hashlib.sha256(b"".join(open(f, "rb").read() for f in files)).hexdigest()
    path = os.path.join(out, "stamp")
    if os.path.exists(path) and open(path).read() == stamp:
        print(f"{out}: up to date")
        return None
    return stamp


def write_stamp(out: str, stamp: str) -> None:
    with open(os.path.join(out, "stamp"), "w") as f:
        f.write(stamp)
    print(f"wrote {out}")


