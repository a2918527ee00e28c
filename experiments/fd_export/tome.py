"""Token merging (ToMe for Stable Diffusion, Bolya & Hoffman 2023) applied to a diffusers UNet before
it is traced, with the reference implementation (PyPI `tomesd` 0.1.3), so every graph of the export
(encoder, decoder, DeepCache parts) carries the merging and the manifest's FLOPs count it.

The partition is tomesd's fixed one (`use_rand=False`: the destination token of each sx x sy cell
is its top-left): a traced graph cannot replay tomesd's random partition per call from a run's
seed, and a random draw frozen into the graph would be the same for every sample anyway, so the
export says `partition: fixed` rather than pretend. tomesd reads the latent size from a forward
pre-hook on the UNet; the split graphs never call that forward, so the size is set here from the
config's sample size (the graphs are traced at that size only).
"""
from __future__ import annotations

from .errors import ExportError

TOMESD_VERSION = "0.1.3"


def tome_settings(ratio: float, max_downsample: int = 1, sx: int = 2, sy: int = 2, merge_attn: bool = True,
                  merge_crossattn: bool = False, merge_mlp: bool = False) -> dict:
    """Checked settings (tomesd's knobs and defaults); raises ValueError naming the bad one."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"--tome: ratio {ratio} outside [0, 1)")
    if ratio > 1 - 1 / (sx * sy):
        raise ValueError(f"--tome: ratio {ratio} above tomesd's maximum 1 - 1/(sx*sy) = {1 - 1 / (sx * sy):.3f}")
    if max_downsample not in (1, 2, 4, 8):
        raise ValueError(f"--tome-max-downsample: {max_downsample} not one of 1, 2, 4, 8")
    if sx < 1 or sy < 1:
        raise ValueError(f"--tome-stride: {sx}x{sy} must be >= 1")
    if not (merge_attn or merge_crossattn or merge_mlp):
        raise ValueError("--tome-merge: nothing to merge (attn, crossattn and mlp all off)")
    return dict(ratio=float(ratio), max_downsample=int(max_downsample), sx=int(sx), sy=int(sy),
                merge_attn=bool(merge_attn), merge_crossattn=bool(merge_crossattn), merge_mlp=bool(merge_mlp))


def apply_tome(unet, settings: dict) -> dict:
    """Patch `unet` in place with tomesd (fixed partition) and return the manifest entry."""
    import tomesd

    blocks = [m for m in unet.modules() if type(m).__name__ == "BasicTransformerBlock"]
    if not blocks:
        raise ValueError("--tome: the UNet has no transformer blocks (BasicTransformerBlock) to merge tokens in")
    tomesd.apply_patch(unet, use_rand=False, **settings)
    cfg = unet.config
    h, w = (cfg.sample_size, cfg.sample_size) if isinstance(cfg.sample_size, int) else tuple(cfg.sample_size)
    unet._tome_info["size"] = (int(h), int(w))
    return dict(settings, partition="fixed", blocks=len(blocks), reference=f"tomesd {TOMESD_VERSION}")


def tome_args(ap, flag: str = "--ratio", prefix: str = "") -> None:
    """argparse flags for the ToMe settings (`flag` takes the ratio; `prefix` names the others)."""
    ap.add_argument(flag, type=float, required=flag == "--ratio", help="ToMe: fraction of tokens merged")
    ap.add_argument(f"--{prefix}max-downsample", type=int, default=1,
                    help="ToMe: merge in layers at most this many times downsampled (1, 2, 4, 8)")
    ap.add_argument(f"--{prefix}stride", default="2x2", help="ToMe: destination stride SXxSY")
    ap.add_argument(f"--{prefix}merge", default="attn", help="ToMe: comma list of attn, crossattn, mlp")


def settings_from(ratio: float, args, prefix: str = "") -> dict:
    """Checked settings from tome_args' flags (SystemExit naming the bad one)."""
    p = prefix.replace("-", "_")
    stride, merge, max_downsample = getattr(args, p + "stride"), getattr(args, p + "merge"), getattr(args, p + "max_downsample")
    try:
        sx, sy = (int(v) for v in stride.lower().split("x"))
    except ValueError:
        raise ExportError(f"--stride {stride!r}: expected SXxSY, e.g. 2x2") from None
    parts = {p.strip() for p in merge.split(",") if p.strip()}
    if parts - {"attn", "crossattn", "mlp"}:
        raise ExportError(f"--merge {merge!r}: expected a comma list of attn, crossattn, mlp")
    try:
        return tome_settings(ratio, max_downsample, sx, sy, "attn" in parts, "crossattn" in parts, "mlp" in parts)
    except ValueError as e:
        raise ExportError(str(e)) from e
