"""Which forms of diffusers' `UNet2DConditionModel` fd exports, decided from the config alone,
before anything is traced: one place that says what is supported and refuses the rest with the
config field that is the reason.

Supported: the plain form (SD 1.x / 2.x, fd's trained models), `addition_embed_type="text_time"`
(SDXL: pooled text embeds + 6 time ids), `addition_embed_type="text"` with
`encoder_hid_dim_type="text_proj"` (DeepFloyd-IF stage I: T5 states projected for attention and
pooled by attention into the time embedding), any `time_embedding_act_fn`, mid blocks with or without
cross-attention, linear or conv transformer projections, `upcast_attention`, learned variance
(`out_channels = 2 * in_channels`: [noise, variance values] stacked on channels, DeepFloyd-IF).
Not yet: class embeddings (IF stage II's noise-level embedding).

The conditioning that is constant over a sample's steps (the added embedding and the projected text
states) is computed once per sample by the `cond_prepare` graph; the per-step `time_embed` graph
adds it before the time-embedding activation, exactly where diffusers adds it, so the encoder and
decoder graphs keep one signature for every form.
"""
from __future__ import annotations

from dataclasses import dataclass, field


class UnsupportedConfig(ValueError):
    """A config field fd cannot export (the message names the field, its value and why)."""


@dataclass
class UnetForm:
    """What the export of one UNet config needs."""

    # inputs of cond_prepare beyond the raw text states, in call order ("pooled", "time_ids")
    added_inputs: list[str] = field(default_factory=list)
    # the model has a cond_prepare graph (added embedding and/or encoder_hid_proj)
    prepare: bool = False
    # addition_embed_type, recorded in the manifest
    added_kind: str | None = None
    # dimension of the pooled text embedding (text_time), and what it was derived from:
    # projection_class_embeddings_input_dim = pooled_dim + 6 time ids x addition_time_embed_dim
    pooled_dim: int | None = None
    proj_in: int | None = None
    time_embed_dim: int | None = None
    # raw text-state dimension fed to cond_prepare (encoder_hid_dim, or cross_attention_dim)
    raw_dim: int | None = None
    # learned variance: the UNet predicts [eps, variance values] stacked on channels
    learned_variance: bool = False
    # DeepCache's shallow graphs are written for CrossAttnDownBlock2D / DownBlock2D down paths
    deepcache: bool = True


# (field, value that is fine, why anything else is refused)
_MUST_EQUAL = [
    ("time_cond_proj_dim", None, "guidance-embedding UNets (LCM) take a per-step condition fd does not pass"),
    ("class_embed_type", None, "class embeddings (e.g. DeepFloyd-IF stage II's noise-level embedding) are not exported yet"),
    ("num_class_embeds", None, "class-label embeddings are not exported yet"),
    ("class_embeddings_concat", False, "a concatenated class embedding changes the time-embedding width"),
    ("center_input_sample", False, "input centring is not part of the split encoder"),
    ("time_embedding_type", "positional", "only diffusers' positional (`Timesteps`) time projection is exported"),
    ("attention_type", "default", "gated (GLIGEN) attention needs per-step grounding inputs"),
    ("dual_cross_attention", False, "dual cross-attention (Versatile Diffusion) takes two condition streams"),
]


def unet_form(config) -> UnetForm:
    """The export form of a UNet2DConditionModel config (a diffusers FrozenDict or a dict);
    raises UnsupportedConfig naming the field for anything fd does not export correctly."""
    cfg = dict(config)
    for key, ok, why in _MUST_EQUAL:
        value = cfg.get(key, ok)
        if value != ok and not (ok is None and value in (None, "null")):
            raise UnsupportedConfig(f"UNet config `{key}` = {value!r} is not supported: {why} (expected {ok!r})")
    if cfg.get("mid_block_type", "UNetMidBlock2DCrossAttn") is None:
        raise UnsupportedConfig("UNet config `mid_block_type` = None is not supported: the encoder ends at a mid block")
    form = UnetForm()
    hid_type = cfg.get("encoder_hid_dim_type")
    hid_dim = cfg.get("encoder_hid_dim")
    if hid_dim is not None and hid_type is None:
        hid_type = "text_proj"  # diffusers' default when only encoder_hid_dim is given
    if hid_type not in (None, "text_proj"):
        raise UnsupportedConfig(f"UNet config `encoder_hid_dim_type` = {hid_type!r} is not supported: image-conditioned "
                                "projections (Kandinsky, IP-Adapter) need image embeds fd does not produce "
                                "(expected None or 'text_proj')")
    cross = cfg.get("cross_attention_dim")
    if isinstance(cross, (list, tuple)):
        raise UnsupportedConfig(f"UNet config `cross_attention_dim` = {cross!r}: per-block widths are not supported")
    add = cfg.get("addition_embed_type")
    if add == "text_time":
        t_dim = int(cfg["addition_time_embed_dim"])
        proj_in = int(cfg["projection_class_embeddings_input_dim"])
        form.added_inputs = ["pooled", "time_ids"]
        form.pooled_dim, form.proj_in, form.time_embed_dim = proj_in - 6 * t_dim, proj_in, t_dim
        if form.pooled_dim <= 0:
            raise UnsupportedConfig(f"UNet config `projection_class_embeddings_input_dim` = {proj_in} leaves no room for "
                                    f"a pooled text embed next to 6 time ids x {t_dim} (an SDXL refiner's 5 time ids "
                                    "with an aesthetic score are not supported)")
    elif add == "text":
        pass
    elif add is not None:
        raise UnsupportedConfig(f"UNet config `addition_embed_type` = {add!r} is not supported: image embeds / hints "
                                "(Kandinsky) are not produced by fd (expected None, 'text' or 'text_time')")
    form.added_kind = add
    form.deepcache = all(t in ("CrossAttnDownBlock2D", "DownBlock2D") for t in cfg["down_block_types"])
    form.prepare = add is not None or hid_type is not None
    form.raw_dim = int(hid_dim) if hid_type == "text_proj" else int(cross)
    form.learned_variance = int(cfg["out_channels"]) == 2 * int(cfg["in_channels"])
    if int(cfg["out_channels"]) != int(cfg["in_channels"]) and not form.learned_variance:
        raise UnsupportedConfig(f"UNet config `out_channels` = {cfg['out_channels']} differs from `in_channels` = "
                                f"{cfg['in_channels']}: the samplers need a prediction shaped like the sample (or twice its channels: a learned variance)")
    return form
