"""Split export: a diffusers UNet2DConditionModel traced as TorchScript graphs (see
fd_export.graphs) plus manifest.json (shapes, conditioning, scheduler config, per-graph FLOPs at batch
1, SHA-256 of every file). Every file is written to a temp name and renamed."""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence

import torch
from torch import nn

from .errors import ExportError
from .flops import count_flops, n_params
from .folder import WEIGHTS_FILE, load_unet, save_unet_weights, sha256, write_manifest
from .forms import UnsupportedConfig, unet_form
from .graphs import (
    AnalysisDecoder,
    CondPrepare,
    ControlNetResiduals,
    Decoder,
    Encoder,
    Full,
    TimeEmbed,
    TimeEmbedExtra,
    VaeDecode,
)
from .methods.deepcache import deepcache_graph_inputs, deepcache_parts
from .schema import SCHEMA_VERSION, deepcache_prefix
from .tracing import trace_and_save, trace_methods
from .video import (
    VIDEO_FORM,
    VideoDecoder,
    VideoEncoder,
    VideoFull,
    VideoTimeEmbed,
    check_video,
    is_video_unet,
)


def export_model(
    out_dir: str,
    name: str,
    unet,
    scheduler_config: dict,
    cond_encoder: nn.Module | None,
    cond_spec: dict,
    cond_example: torch.Tensor | Sequence[torch.Tensor] | None = None,
    vae=None,
    vae_scaling_factor: float | None = None,
    extra_files: dict | None = None,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    extra_manifest: dict | None = None,
    with_full: bool = True,
    deepcache_ids: Sequence[int] = (0,),
    save_weights: bool = False,
    family: str | None = None,
    controlnet=None,
    tome: dict | None = None,
    frames: int | None = None,
    aoti: bool | Sequence[str] = False,
    aoti_tol: float = 1e-5,
    aoti_max_batch: int | None = None,
) -> dict:
    """Export `unet` (+ optional conditioning encoder and VAE decoder) into `out_dir`.

    cond_spec: manifest "cond" entry (kind: class|text|embedding, seq_len, dim = width of the raw
    states the cond encoder gives, pooled_dim, tokenizer(s), ...); `dim` is rewritten to the width
    the UNet's attention reads when the model projects its text states (encoder_hid_proj).
    cond_example: example input(s) of cond_encoder at batch 1 (class ids [1], token ids [1,77], or
    one token-id tensor per tokenizer).
    controlnet: a diffusers ControlNetModel for this UNet, exported as the `controlnet` graph
    (residuals added to the encoder features at key steps; the condition image is [B,3,H,W] in
    [0, 1] at the pixel size).
    tome: token-merging settings (fd_export.tome.tome_settings): the UNet is patched with tomesd
    before anything is traced, so every graph merges tokens and the FLOPs count it.
    family: what the manifest calls the model family (sd1, sd2, sdxl, ...; shown by `fd info`).
    The UNet config is checked first (fd_export.forms.unet_form): an unsupported form is refused
    with the config field named, before any file is written.
    save_weights: also write the UNet's diffusers state dict as unet_weights.safetensors (the
    graphs are frozen and hold no state dict; Python rebuilds the eager model from this file,
    e.g. experiments/bench/bench_harness.py).
    aoti: also compile AOTInductor packages (fd_export.aoti) of every graph written (True) or of
    the named ones, on `device`, each checked against its TorchScript graph within `aoti_tol`
    before the manifest lists it, accepting 1..`aoti_max_batch` rows (default fd_export.aoti's
    MAX_BATCH); fd runs them with `--format aoti`.
    """
    video = is_video_unet(unet)
    if video:  # text-to-video UNet3D: frames as an extra axis (fd_export.video)
        check_video(unet, frames)
        if controlnet is not None or tome is not None:
            raise ValueError("ControlNet / ToMe exports are for 2-D UNets (UNet2DConditionModel)")
        form = VIDEO_FORM
    else:
        if frames is not None:
            raise ValueError(f"frames {frames}: only a UNet3DConditionModel (text-to-video) takes a frame count")
        form = unet_form(unet.config)  # refuses what fd cannot export, before anything is written
        if form.deepcache:
            deepcache_parts(unet, deepcache_ids)  # refuses bad ids, writes nothing
    cond_spec = dict(cond_spec)
    if form.prepare and cond_spec["dim"] != form.raw_dim:
        raise ValueError(f"cond encoder gives states of width {cond_spec['dim']}, the UNet config expects "
                         f"{form.raw_dim} (encoder_hid_dim / cross_attention_dim)")
    if form.pooled_dim is not None and cond_spec.get("pooled_dim") != form.pooled_dim:
        got = cond_spec.get("pooled_dim")
        # an SDXL refiner's UNet takes 5 time ids (sizes, crop and an aesthetic score), not 6
        refiner = got is not None and form.proj_in - 5 * form.time_embed_dim == got
        raise UnsupportedConfig(
            f"UNet config `projection_class_embeddings_input_dim` = {form.proj_in} leaves {form.pooled_dim} for the "
            f"pooled text embed next to 6 time ids x `addition_time_embed_dim` {form.time_embed_dim}, but the "
            f"second text encoder gives {got} (its `projection_dim`)"
            + ("; with 5 time ids it fits exactly: this looks like an SDXL refiner (aesthetic-score time ids, "
               "`requires_aesthetics_score`), which fd does not export (export the SDXL base model)" if refiner else ""))
    if aoti and aoti is not True:  # the graphs this export will write, checked before anything is written
        known = {"time_embed", "encoder", "decoder", "decoder_analysis"}
        known |= {"cond_prepare"} if form.prepare else set()
        known |= {"full"} if with_full else set()
        known |= {"cond_encoder"} if cond_encoder is not None else set()
        known |= {"vae_decoder"} if vae is not None else set()
        known |= {"controlnet"} if controlnet is not None else set()
        if not video and form.deepcache:
            known |= {f"{deepcache_prefix(f'id{i}')}_{p}" for i in deepcache_ids
                      for p in ("shallow_encoder", "deep_decoder", "shallow_decoder")}
        unknown = sorted(set(aoti) - known)
        if unknown:
            raise ValueError(f"aoti graphs {', '.join(unknown)}: not graphs of this export ({', '.join(sorted(known))})")
    tome_entry = None
    if tome is not None:
        from .tome import apply_tome

        tome_entry = apply_tome(unet, tome)  # refuses a UNet without transformer blocks before writing
    os.makedirs(out_dir, exist_ok=True)
    unet = unet.to(device=device, dtype=dtype).eval()
    cfg = unet.config
    h, w = (cfg.sample_size, cfg.sample_size) if isinstance(cfg.sample_size, int) else tuple(cfg.sample_size)
    g = torch.Generator().manual_seed(0)
    shape = (1, cfg.in_channels, int(frames), h, w) if video else (1, cfg.in_channels, h, w)
    sample = torch.randn(*shape, generator=g).to(device, dtype)
    timesteps = torch.tensor([500.0], device=device)
    raw = torch.randn(1, cond_spec["seq_len"], cond_spec["dim"], generator=g).to(device, dtype)
    upscale = 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 1
    prepare_entry, added = None, []
    if form.prepare:
        prep = CondPrepare(unet, form)
        if form.added_kind == "text_time":
            # the pipeline's default micro-conditioning: original size = target size = the image
            # size, crop (0, 0) (StableDiffusionXLPipeline._get_add_time_ids)
            time_ids = [h * upscale, w * upscale, 0, 0, h * upscale, w * upscale]
            added = [torch.randn(1, form.pooled_dim, generator=g).to(device, dtype),
                     torch.tensor([time_ids], dtype=dtype, device=device)]
        with torch.no_grad():
            cond, extra = prep(raw, *added)
        cond_spec["dim"] = int(cond.shape[-1])
        prepare_entry = dict(inputs=["states"] + form.added_inputs, added=form.added_kind, raw_dim=form.raw_dim,
                             extra_dim=int(extra.shape[-1]), projects_states=unet.encoder_hid_proj is not None)
        if form.added_kind == "text_time":
            prepare_entry["time_ids"] = time_ids
        te = TimeEmbedExtra(unet)
        te_inputs = [timesteps, extra]
    else:
        cond = raw
        te = VideoTimeEmbed(unet) if video else TimeEmbed(unet)
        te_inputs = [timesteps]
    if video:
        enc, dec, full, analysis = (VideoEncoder(unet, frames), VideoDecoder(unet, frames), VideoFull(unet),
                                    VideoDecoder(unet, frames, analysis=True))
    else:
        enc, dec, full, analysis = Encoder(unet), Decoder(unet), Full(unet, form), AnalysisDecoder(unet)
    with torch.no_grad():
        emb = te(*te_inputs)
        feats = enc(sample, emb, cond)
    graphs = {}

    # The UNet graphs are traced as methods of ONE TorchScript module (unet.pt), so the weights
    # they share are stored once; each method is its own traced graph.
    unet_parts: dict[str, tuple[nn.Module, list]] = {
        "time_embed": (te, te_inputs),
        "encoder": (enc, [sample, emb, cond]),
        "decoder": (dec, [feats[0], emb, cond, *feats[1:]]),
        # same weights, also returns the up-block outputs (fd-analysis); costs no extra file size
        "decoder_analysis": (analysis, [feats[0], emb, cond, *feats[1:]]),
    }
    if form.prepare:
        unet_parts["cond_prepare"] = (prep, [raw, *added])
    if with_full:  # the unsplit reference graph (diffusers' forward on the raw inputs), for parity checks
        unet_parts["full"] = (full, [sample, timesteps, raw, *added])
    deepcache = {}
    # DeepCache's shallow path is written for SD's block types; other UNets (IF) export without it
    parts, deepcache = deepcache_graph_inputs(
        deepcache_parts(unet, deepcache_ids, form.deepcache), sample, emb, cond, feats)
    unet_parts.update(parts)
    unet_path = os.path.join(out_dir, "unet.pt")
    trace_methods(unet_parts, unet_path)
    unet_hash = sha256(unet_path)
    for key, (module, inputs) in unet_parts.items():
        graphs[key] = dict(file="unet.pt", method=key, sha256=unet_hash, flops=count_flops(module, inputs))

    compilable = dict(unet_parts)  # every graph written, for `aoti`

    def add(key, module, inputs):
        path = os.path.join(out_dir, f"{key}.pt")
        trace_and_save(module, inputs, path)
        graphs[key] = dict(file=f"{key}.pt", method="forward", sha256=sha256(path), flops=count_flops(module, inputs))
        compilable[key] = (module, inputs)

    params = dict(
        time_embed=n_params(te),
        encoder=n_params(enc),
        decoder=n_params(dec),
    )
    if cond_encoder is not None:
        cond_encoder = cond_encoder.to(device).eval()
        if dtype != torch.float32:
            cond_encoder = cond_encoder.to(dtype)
        examples = [cond_example] if isinstance(cond_example, torch.Tensor) else list(cond_example)
        add("cond_encoder", cond_encoder, [e.to(device) for e in examples])
        params["cond_encoder"] = n_params(cond_encoder)
    vae_entry = None
    if vae is not None:
        # a VAE whose config asks for it (SDXL's `force_upcast`) decodes in float32, as the pipelines do
        vae_dtype = torch.float32 if getattr(vae.config, "force_upcast", False) else dtype
        vae = vae.to(device=device, dtype=vae_dtype).eval()
        vd = VaeDecode(vae)
        add("vae_decoder", vd, [(sample[:, :, 0] if video else sample).to(vae_dtype)])  # a video decodes per frame
        params["vae_decoder"] = n_params(vd)
        vae_entry = dict(scaling_factor=float(vae_scaling_factor), out_channels=int(vae.config.out_channels),
                         upscale=upscale, dtype=str(vae_dtype).replace("torch.", ""))
    control_entry = None
    if controlnet is not None:
        ccfg = dict(controlnet.config)
        if ccfg.get("addition_embed_type") is not None or ccfg.get("class_embed_type") is not None:
            raise ValueError(f"ControlNet config `addition_embed_type` = {ccfg.get('addition_embed_type')!r} / "
                             f"`class_embed_type` = {ccfg.get('class_embed_type')!r}: only ControlNets without added "
                             "embeddings (the SD 1.x / 2.x form) are exported")
        if form.prepare:
            raise ValueError("ControlNet export is supported for UNets without added conditioning (SD 1.x / 2.x)")
        controlnet = controlnet.to(device=device, dtype=dtype).eval()
        cn = ControlNetResiduals(controlnet)
        channels = int(ccfg.get("conditioning_channels", 3))
        image = torch.rand(1, channels, h * upscale, w * upscale, generator=g).to(device, dtype)
        with torch.no_grad():
            res = cn(sample, timesteps, cond, image)
        if [list(r.shape[1:]) for r in res] != [list(f.shape[1:]) for f in feats]:
            raise ValueError("ControlNet residual shapes differ from the UNet's encoder features: "
                             f"{[tuple(r.shape[1:]) for r in res]} vs {[tuple(f.shape[1:]) for f in feats]}")
        add("controlnet", cn, [sample, timesteps, cond, image])
        params["controlnet"] = n_params(cn)
        control_entry = dict(channels=channels, size=[h * upscale, w * upscale],
                             channel_order=ccfg.get("controlnet_conditioning_channel_order", "rgb"))
    if aoti:
        from .aoti import MAX_BATCH, add_packages

        names = list(compilable) if aoti is True else list(aoti)
        add_packages(out_dir, graphs, [(n, *compilable[n]) for n in names], device, aoti_max_batch or MAX_BATCH, aoti_tol)
    weights = None
    if save_weights:
        weights = save_unet_weights(unet, os.path.join(out_dir, WEIGHTS_FILE))
    for fname, content in (extra_files or {}).items():
        with open(os.path.join(out_dir, fname), "w") as f:
            f.write(content)

    import diffusers

    manifest = dict(
        schema_version=SCHEMA_VERSION,
        name=name,
        family=family,
        **(dict(kind="unet3d", frames=int(frames)) if video else {}),
        in_channels=int(cfg.in_channels),
        out_channels=int(cfg.out_channels),
        sample_size=[int(h), int(w)],
        time_embed_dim=int(emb.shape[1]),
        mid_shape=list(feats[0].shape[1:]),
        skip_shapes=[list(s.shape[1:]) for s in feats[1:]],
        cond=cond_spec,
        prepare=prepare_entry,
        control=control_entry,
        tome=tome_entry,
        prediction_type=scheduler_config.get("prediction_type", "epsilon"),
        scheduler=scheduler_config,
        dtype=str(dtype).replace("torch.", ""),
        export_device=device,
        graphs=graphs,
        deepcache=deepcache,
        vae=vae_entry,
        params=params,
        unet_config={k: v for k, v in dict(cfg).items() if not k.startswith("_")},
        exporter=dict(torch=torch.__version__, diffusers=diffusers.__version__, script="experiments/export/export_unet.py",
                      frozen=True, **({"weights": weights} if weights else {})),
    )
    manifest.update(extra_manifest or {})
    write_manifest(out_dir, manifest)
    return manifest


def export_tome(model_dir: str, out: str, settings: dict):
    """Re-export `model_dir` with ToMe `settings` into `out`; returns (new manifest, old manifest)."""
    with open(os.path.join(model_dir, "manifest.json")) as f:
        if json.load(f).get("tome"):
            raise ExportError(f"{model_dir}: already exported with ToMe (export the folder it came from)")
    unet, old = load_unet(model_dir)
    weights = old["exporter"]["weights"]
    if os.path.abspath(out) == os.path.abspath(model_dir):
        raise ExportError("--out must differ from --model")
    os.makedirs(out, exist_ok=True)
    dtype = {"float32": torch.float32, "float16": torch.float16}[old["dtype"]]
    cond = dict(old["cond"])
    from .methods.deepcache import block_branch_id

    # DeepCache's own ids of the source's graphs (block-level keys of older exports converted)
    deepcache = sorted({spec["cache_branch_id"] if "cache_branch_id" in spec else block_branch_id(unet, int(k))
                        for k, spec in old.get("deepcache", {}).items()}) or [0]

    try:
        m = export_model(out, f"{old['name']}-tome{settings['ratio']:g}", unet, old["scheduler"], None,
                         dict(cond, kind="embedding"), dtype=dtype, device="cpu", with_full="full" in old["graphs"],
                         deepcache_ids=deepcache, save_weights=False, family=old.get("family"), tome=settings)
    except ValueError as e:
        raise ExportError(f"{model_dir}: {e}") from e
    # the other graphs and files, unchanged
    m["cond"] = cond
    for key, g in old["graphs"].items():
        if key in ("cond_encoder", "vae_decoder", "controlnet"):
            m["graphs"][key] = g
            shutil.copyfile(os.path.join(model_dir, g["file"]), os.path.join(out, g["file"]))
            m["params"][key] = old["params"].get(key, 0)
    for key in ("vae", "prepare", "control", "training"):
        if old.get(key) is not None:
            m[key] = old[key]
    for f in os.listdir(model_dir):
        if f.startswith("tokenizer") or f.startswith("classifier"):
            shutil.copyfile(os.path.join(model_dir, f), os.path.join(out, f))
    m["exporter"]["tome_from"] = dict(model=old["name"], weights_sha256=weights["sha256"])
    tmp = os.path.join(out, "manifest.json.tmp")
    with open(tmp, "w") as f:
        json.dump(m, f, indent=2)
        f.write("\n")
    os.replace(tmp, os.path.join(out, "manifest.json"))
    return m, old
