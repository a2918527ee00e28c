"""Split export: a diffusers UNet2DConditionModel traced as TorchScript graphs (see
fd_export.graphs) plus manifest.json (shapes, conditioning, scheduler config, per-graph FLOPs at batch
1, SHA-256 of every file). Every file is written to a temp name and renamed."""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from typing import Sequence

import torch
from torch import nn

from .flops import DTYPES, count_flops, n_params
from .forms import unet_form
from .graphs import (AnalysisDecoder, CondPrepare, ControlNetResiduals, CutDeepDecoder, CutShallowDecoder, Decoder,
                     Encoder, Full, ShallowEncoder, TeaCacheProbe, TGateUNet, TimeEmbed, TimeEmbedExtra, VaeDecode, block_branch_id,
                     official_cut, TGATE_MODES)
from .schema import SCHEMA_VERSION, deepcache_prefix
from .video import VIDEO_FORM, VideoDecoder, VideoEncoder, VideoFull, VideoTimeEmbed, check_video, is_video_unet

def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()



def freeze_and_save(traced, methods: Sequence[str], path: str) -> None:
    """Freeze a traced module (weights become constants of each method's graph, module attribute
    lookups disappear; `methods` stay callable) and save it via a temp file + rename.

    Freezing changes no output bit (checked by tests/test_export.py); on the default model its
    speed gain is within noise on a CPU (experiments/bench_graph_variants.py) and the file is
    smaller (weights shared by several methods are stored once).
    A frozen module has no state_dict: exports that Python must rebuild as an eager diffusers model
    keep the weights beside it (`save_weights`)."""
    frozen = torch.jit.freeze(traced.eval(), preserved_attrs=list(methods))
    tmp = path + ".tmp"
    frozen.save(tmp)
    os.replace(tmp, path)


def trace_and_save(module, inputs, path):
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # shape asserts inside diffusers blocks become constants; batch size stays dynamic
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(module, tuple(inputs), check_trace=False, strict=False)
    freeze_and_save(traced, ["forward"], path)


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
    freeze_and_save(traced, list(parts), path)


WEIGHTS_FILE = "unet_weights.safetensors"


def save_unet_weights(unet, path: str) -> dict:
    """The UNet's diffusers state dict (float32, CPU) as safetensors; returns its manifest entry."""
    from safetensors.torch import save_file

    sd = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in unet.state_dict().items()}
    tmp = path + ".tmp"
    save_file(sd, tmp)
    os.replace(tmp, path)
    return dict(file=os.path.basename(path), sha256=sha256(path), tensors=len(sd))


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
    e.g. experiments/bench_harness.py).
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
        raise ValueError(f"UNet expects pooled text embeds of width {form.pooled_dim} (addition_embed_type "
                         f"text_time), the cond encoder gives {cond_spec.get('pooled_dim')}")
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
        exporter=dict(torch=torch.__version__, diffusers=diffusers.__version__, script="experiments/export_unet.py",
                      frozen=True, **({"weights": weights} if weights else {})),
    )
    manifest.update(extra_manifest or {})
    write_manifest(out_dir, manifest)
    return manifest


def deepcache_parts(unet, ids: Sequence[int], supported: bool = True) -> dict:
    """DeepCache graphs to export for DeepCache's own cache_branch_ids `ids`: {graph prefix
    (`deepcache_id{N}`): (manifest key `id{N}`, shallow encoder, deep decoder, shallow decoder, N)}.
    An id outside the UNet is refused before anything is written. A UNet whose blocks DeepCache's
    shallow path does not cover (`supported` False: IF, UNet3D) gets none. (Exports before
    2026-12-02 have block-level entries `b` instead; fd-model still reads them.)"""
    if not supported:
        return {}
    out = {}
    for i in ids:
        _, _, count = official_cut(unet, i)  # refuses an id outside the UNet
        key = f"id{i}"
        out[deepcache_prefix(key)] = (key, ShallowEncoder(unet, count=count), CutDeepDecoder(unet, i),
                                      CutShallowDecoder(unet, i), int(i))
    return out


def deepcache_graph_inputs(parts: dict, sample, emb, cond, feats) -> tuple[dict, dict]:
    """The DeepCache graphs of `parts` (deepcache_parts) with their example inputs, ready for
    trace_methods, and their manifest entries."""
    traced, specs = {}, {}
    for part, (key, se, dd, sd, cid) in parts.items():
        with torch.no_grad():
            cached = dd(feats[0], emb, cond, *feats[1:])
            shallow = se(sample, emb, cond)
        traced[f"{part}_shallow_encoder"] = (se, [sample, emb, cond])
        traced[f"{part}_deep_decoder"] = (dd, [feats[0], emb, cond, *feats[1:]])
        traced[f"{part}_shallow_decoder"] = (sd, [cached, emb, cond, *shallow])
        specs[key] = dict(shallow_skips=se.count, cache_shape=list(cached.shape[1:]), cache_branch_id=cid)
    return traced, specs


def write_manifest(out_dir: str, manifest: dict) -> None:
    """Write manifest.json (temp file + rename) after removing the graph files of an earlier export
    that it no longer lists (and a weights file it does not name)."""
    listed = {g["file"] for g in manifest["graphs"].values()}
    weights = manifest.get("exporter", {}).get("weights")
    for f in os.listdir(out_dir):
        if (f.endswith(".pt") and f not in listed and f != "classifier.pt") or (f == WEIGHTS_FILE and not weights):
            os.remove(os.path.join(out_dir, f))
    tmp = os.path.join(out_dir, "manifest.json.tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=2, default=lambda o: list(o) if isinstance(o, tuple) else str(o))
        f.write("\n")
    os.replace(tmp, os.path.join(out_dir, "manifest.json"))


def freeze_export(model_dir: str, save_weights: bool = False) -> list[str]:
    """Freeze the graph files of an existing export in place (exports before 2026-12-01 were
    saved unfrozen): outputs stay bit-identical, the files get new SHA-256s in manifest.json (so
    runs made with the old files do not resume). With `save_weights`, the UNet's diffusers state
    dict is first written to unet_weights.safetensors from unet.pt's parameters. Files that are
    already frozen are left alone. Returns the files frozen."""
    path = os.path.join(model_dir, "manifest.json")
    with open(path) as f:
        m = json.load(f)
    by_file: dict[str, list[str]] = {}
    for g in m["graphs"].values():
        by_file.setdefault(g["file"], []).append(g.get("method", "forward"))
    frozen = []
    for fname, methods in by_file.items():
        p = os.path.join(model_dir, fname)
        mod = torch.jit.load(p, map_location="cpu")
        sd = mod.state_dict()
        if not sd:
            continue  # frozen already
        if save_weights and fname == "unet.pt":
            import diffusers
            from safetensors.torch import save_file

            want = diffusers.UNet2DConditionModel.from_config(m["unet_config"]).state_dict().keys()
            w: dict[str, torch.Tensor] = {}
            for k, v in sd.items():  # parts.<graph>.<diffusers name>; graphs share the unet's modules
                parts = k.split(".", 2)
                if len(parts) == 3 and parts[0] == "parts":
                    name = parts[2].removeprefix("unet.")  # wrappers that hold the whole unet
                    if name in want:  # (not fd's own buffers, e.g. time_proj.freqs)
                        w.setdefault(name, v.to(torch.float32).clone().contiguous())
            missing = [k for k in want if k not in w]
            if missing:
                raise ValueError(f"{p}: no parameters for {missing[:3]} ... ({len(missing)} missing)")
            wpath = os.path.join(model_dir, WEIGHTS_FILE)
            save_file(w, wpath + ".tmp")
            os.replace(wpath + ".tmp", wpath)
            m["exporter"]["weights"] = dict(file=WEIGHTS_FILE, sha256=sha256(wpath), tensors=len(w))
        freeze_and_save(mod, methods, p)
        h = sha256(p)
        for g in m["graphs"].values():
            if g["file"] == fname:
                g["sha256"] = h
        frozen.append(fname)
    m["exporter"]["frozen"] = True
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(m, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return frozen


DEEPCACHE_FILE = "deepcache.pt"


def add_deepcache_graphs(model_dir: str, ids: Sequence[int]) -> dict:
    """Add DeepCache graphs for DeepCache's own `cache_branch_id`s to an existing export that keeps
    its UNet weights (the committed default model), in their own file (deepcache.pt), leaving every
    other graph file unchanged; older block-level entries get the id they equal recorded. The
    eager UNet is rebuilt from unet_weights.safetensors (hash checked)."""
    from .tome import load_unet

    unet, m = load_unet(model_dir)
    if m.get("tome"):
        raise ValueError(f"{model_dir}: a ToMe export; re-export it from its source with experiments/export_tome.py")
    dtype = DTYPES[m["dtype"]]
    unet = unet.to(dtype)
    parts = deepcache_parts(unet, ids)
    te, enc = TimeEmbed(unet), Encoder(unet)
    h, w = m["sample_size"]
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(1, m["in_channels"], h, w, generator=g).to(dtype)
    cond = torch.randn(1, m["cond"]["seq_len"], m["cond"]["dim"], generator=g).to(dtype)
    with torch.no_grad():
        emb = te(torch.tensor([500.0]))
        feats = enc(sample, emb, cond)
    traced, specs = deepcache_graph_inputs(parts, sample, emb, cond, feats)
    old_files = {k: g["file"] for k, g in m["graphs"].items()}
    if any(f == DEEPCACHE_FILE for f in old_files.values()):
        m["graphs"] = {k: v for k, v in m["graphs"].items() if v["file"] != DEEPCACHE_FILE}
        m["deepcache"] = {k: v for k, v in m["deepcache"].items() if not k.startswith("id")}
    path = os.path.join(model_dir, DEEPCACHE_FILE)
    trace_methods(traced, path)
    digest = sha256(path)
    for key, (module, inputs) in traced.items():
        m["graphs"][key] = dict(file=DEEPCACHE_FILE, method=key, sha256=digest, flops=count_flops(module, inputs))
    for key, spec in m.get("deepcache", {}).items():
        if key.isdigit() and "cache_branch_id" not in spec:
            spec["cache_branch_id"] = block_branch_id(unet, int(key))
    m.setdefault("deepcache", {}).update(specs)
    write_manifest(model_dir, m)
    return m


TEACACHE_FILE = "teacache.pt"


def teacache_fit(probe, forward, guide, shape: Sequence[int], cond_of, null_id: int, scheduler_config: dict,
                 steps: int = 50, guidance: float = 3.0, classes: Sequence[int] = tuple(range(10)) * 2,
                 seed: int = 1000, degree: int = 4, device: str = "cpu") -> dict:
    """TeaCache's rescaling polynomial for a model (the TeaCache paper fits, per model, the model
    output's relative L1 change between consecutive steps against the indicator's): DDIM baseline
    trajectories of `classes` with CFG, per sample and step i >= 1 the pair (rel-L1 of the
    indicator, rel-L1 of the model output) over the sample's two CFG rows, fitted by numpy.polyfit
    (coefficients highest power first, as TeaCache's np.poly1d). The model enters through
    `probe(x2, t2, c2)` (the indicator), `forward(x2, t2, c2)` (the output) and
    `guide(out, guidance)` (the guided noise prediction), on [uncond; cond] batches whose
    conditioning `cond_of(ids)` builds; `shape` is one sample's (C, H, W); the trajectories run on
    `device` (the noise is drawn on the CPU)."""
    import numpy as np
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config({k: v for k, v in scheduler_config.items() if not k.startswith("_")})
    sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    rel = lambda a, b: ((a - b).abs().flatten(1).mean(1) / b.abs().flatten(1).mean(1)).cpu().numpy()  # noqa: E731
    xs, ys = [], []
    with torch.no_grad():
        n = len(classes)
        x = torch.randn((n, *shape), generator=g).to(device)
        c2 = torch.cat([cond_of([null_id] * n), cond_of(list(classes))])
        prev_p = prev_o = None
        for t in sched.timesteps:
            x2 = torch.cat([x, x])
            tt = t.expand(2 * n).float().to(device)
            p = probe(x2, tt, c2)
            out = forward(x2, tt, c2)
            # per sample over its two rows: [uncond r; cond r] -> [n, 2, ...]
            pp = torch.stack(p.chunk(2), 1)
            oo = torch.stack(out.chunk(2), 1)
            if prev_p is not None:
                xs.append(rel(pp, prev_p))
                ys.append(rel(oo, prev_o))
            prev_p, prev_o = pp, oo
            x = sched.step(guide(out, guidance), t, x).prev_sample
    xs, ys = np.concatenate(xs), np.concatenate(ys)
    coef = np.polyfit(xs, ys, degree)
    fitted = np.poly1d(coef)(xs)
    r2 = 1.0 - float(((ys - fitted) ** 2).sum() / ((ys - ys.mean()) ** 2).sum())
    return dict(coefficients=[float(c) for c in coef],
                fit=dict(sampler="ddim", steps=steps, guidance=guidance, samples=len(classes), seed=seed,
                         points=int(len(xs)), r2=round(r2, 4), indicator_range=[float(xs.min()), float(xs.max())]))


def unet_teacache_fit(unet, cond_encoder, null_id: int, scheduler_config: dict, **kw) -> dict:
    """teacache_fit on a class-conditioned 2-D UNet: indicator = graphs.TeaCacheProbe."""
    probe = TeaCacheProbe(unet).eval()

    def indicator(x2, tt, c2):
        return probe(x2, unet.time_embedding(unet.time_proj(tt).to(x2.dtype)))

    def guide(out, guidance):
        u, c = out.chunk(2)
        return u + guidance * (c - u)

    size = unet.config.sample_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    return teacache_fit(indicator, lambda x2, tt, c2: unet(x2, tt, encoder_hidden_states=c2).sample, guide,
                        (unet.config.in_channels, *size), lambda ids: cond_encoder(torch.tensor(ids)), null_id,
                        scheduler_config, **kw)


def add_teacache_graph(model_dir: str, coefficients: Sequence[float] | None = None, device: str = "cpu") -> dict:
    """Add TeaCache's indicator graph (`teacache_probe`, graphs.TeaCacheProbe) to an existing
    export that keeps its UNet weights, in its own file (teacache.pt), and its rescaling
    polynomial under manifest `teacache`: `coefficients` as given, else fitted on the model
    (teacache_fit; class-conditioned exports with a cond_encoder graph)."""
    from .tome import load_unet

    with open(os.path.join(model_dir, "manifest.json")) as f:
        if json.load(f).get("tome"):
            raise ValueError(f"{model_dir}: a ToMe export keeps no UNet weights to trace from; add the graphs to the "
                             "model it was exported from")
    unet, m = load_unet(model_dir)
    if m.get("kind", "unet2d") != "unet2d":
        raise ValueError(f"{model_dir}: TeaCache's UNet probe needs a 2-D UNet (kind {m.get('kind')}; a DiT gets its "
                         "TeaCache / FBCache graphs from export_dit.py)")
    dtype = DTYPES[m["dtype"]]
    if coefficients is None:
        if m["cond"].get("kind") != "class" or "cond_encoder" not in m["graphs"]:
            raise ValueError(f"{model_dir}: fitting TeaCache's polynomial needs a class-conditioned export; "
                             "pass --coefficients C4,C3,C2,C1,C0 (e.g. 0,0,0,1,0 for no rescaling)")
        cond_encoder = torch.jit.load(os.path.join(model_dir, m["graphs"]["cond_encoder"]["file"]), map_location="cpu")
        spec = unet_teacache_fit(unet.float(), cond_encoder, m["cond"]["null_id"], m["scheduler"])
    else:
        spec = dict(coefficients=[float(c) for c in coefficients], fit=None)
    unet = unet.to(device=device, dtype=dtype)
    probe = TeaCacheProbe(unet)
    h, w = m["sample_size"]
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(1, m["in_channels"], h, w, generator=g).to(device, dtype)
    with torch.no_grad():
        emb = TimeEmbed(unet)(torch.tensor([500.0], device=device))
    path = os.path.join(model_dir, TEACACHE_FILE)
    trace_methods({"teacache_probe": (probe, [sample, emb])}, path)
    m["graphs"]["teacache_probe"] = dict(file=TEACACHE_FILE, method="teacache_probe", sha256=sha256(path),
                                         flops=count_flops(probe, [sample, emb]))
    m["teacache"] = spec
    write_manifest(model_dir, m)
    return m


TGATE_FILE = "tgate.pt"


def add_tgate_graphs(model_dir: str, device: str = "cpu") -> dict:
    """Add T-GATE's four graphs (graphs.TGateUNet: capture, sa_reuse, ca_reuse, both_reuse) to an
    existing 2-D UNet export that keeps its UNet weights, in their own file (tgate.pt), and the
    attention layers they cache under manifest `tgate` (names and per-sample output shapes)."""
    from .tome import load_unet

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
