"""AOTInductor packages of an fd export's graphs: each graph module `torch.export`ed with a dynamic
batch dimension and compiled by `torch._inductor.aoti_compile_and_package` into `<graph>.pt2`
beside the TorchScript files; the manifest's graph entry gets a `package` entry (file, SHA-256,
whether the graph returns a tuple, the device and torch release it was compiled for, the batch
range). fd runs the packages with `--format aoti` (crates/fd-model/src/aoti.rs).

Compiling needs a C++ compiler (g++) and takes tens of seconds per graph on a 2-core CPU; a package
runs only on the device and torch release that compiled it (fd refuses others before sampling).
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from .errors import ExportError
from .folder import sha256, write_manifest

# the batch range every package accepts (rows per graph call: CFG doubles a batch, parallel
# decoding stacks several steps' rows)
MAX_BATCH = 4096

# graphs `convert` compiles by default: what every plan's loop calls, and drift's analysis graph
UNET_GRAPHS = ("time_embed", "encoder", "decoder", "decoder_analysis")


def method_graph_names(manifest: dict) -> list[str]:
    """The per-method graphs of a 2-D UNet export `convert` can also compile (`--graphs all`):
    DeepCache's own cache_branch_id graphs, TeaCache's probe, T-GATE's four graphs."""
    from .schema import deepcache_prefix

    out = []
    for key in sorted(manifest.get("deepcache", {})):
        if key.startswith("id"):
            out += [f"{deepcache_prefix(key)}_{p}" for p in ("shallow_encoder", "deep_decoder", "shallow_decoder")]
    out += [g for g in ("teacache_probe", "tgate_capture", "tgate_sa_reuse", "tgate_ca_reuse", "tgate_both_reuse")
            if g in manifest["graphs"]]
    return out


def _positional(module: nn.Module, n: int) -> nn.Module:
    """`module` behind a forward of exactly n positional tensors (torch.export's dynamic shapes
    are matched to named arguments; graph modules take `*skips`)."""
    names = ", ".join(f"x{i}" for i in range(n))
    ns: dict = {}
    exec(f"def forward(self, {names}):\n    return self.inner({names})", ns)  # noqa: S102 (names are ours)
    wrapper = type("Positional", (nn.Module,), {"forward": ns["forward"]})()
    wrapper.inner = module
    return wrapper.eval()


def compile_packages(module: nn.Module, inputs: list[torch.Tensor], path: str, device: str = "cpu",
                     max_batch: int = MAX_BATCH, march: str | None = None) -> list[dict]:
    """Compile `module` (called on batch-1 example `inputs`) into packages `path` (`x.pt2`,
    `x.b64.pt2`, ...) that together accept 1..max_batch rows; returns their manifest entries, ranges
    in order. Every input whose first dimension is 1 is batched, with one dynamic batch size.
    torch.export derives the rows a program supports from the code: a graph that branches on the
    batch size (diffusers' `Upsample2D` makes its input contiguous from 64 rows on) exports one
    program per side of the branch, each compiled into its own package.

    `march`: the C++ compiler's -march for a CPU package (default inductor's, `native`: code for
    the compiling CPU's model). `x86-64-v3` (AVX2 + FMA, what every AVX2 x86-64 CPU runs) makes
    packages that run on any AVX2 machine, as the default models' committed ones are."""
    batched = [t.dim() > 0 and t.shape[0] == 1 for t in inputs]
    wrapper = _positional(module.eval(), len(inputs))
    entries, rows = [], 2  # an example batch of 1 would be specialised away
    while True:
        ex = tuple((t.repeat(rows, *[1] * (t.dim() - 1)) if b else t).to(device) for t, b in zip(inputs, batched))
        # Dim.DYNAMIC, not a named range: torch.export derives the range the graph supports (an
        # explicit max can make it emit spurious guards); a dynamic dimension starts at 2
        dyn = tuple({0: torch.export.Dim.DYNAMIC} if b else None for b in batched)
        with torch.no_grad():
            out = wrapper(*ex)
            outs = list(out) if isinstance(out, (tuple, list)) else [out]
            if not all(isinstance(o, torch.Tensor) for o in outs):
                raise ExportError(f"{path}: the graph returns {type(out).__name__} of non-tensors; packages return tensors")
            ep = torch.export.export(wrapper, ex, dynamic_shapes=dyn, strict=False)
        lo, hi = _batch_range(ep, max_batch)
        if entries and lo != entries[-1]["batch"][1] + 1:
            raise ExportError(f"{path}: the program exported at {rows} rows covers {lo}..{hi}, leaving a gap after "
                              f"{entries[-1]['batch'][1]}")
        file = path if not entries else path.replace(".pt2", f".b{lo}.pt2")
        tmp = file + ".tmp.pt2"
        cuda = str(device).startswith("cuda")
        with torch._inductor.config.patch({"cpp.march": march} if march and not cuda else {}):
            torch._inductor.aoti_compile_and_package(ep, package_path=tmp)
        os.replace(tmp, file)
        entries.append(dict(file=os.path.basename(file), sha256=sha256(file), tuple=isinstance(out, (tuple, list)),
                            device="cuda" if cuda else "cpu", torch=torch.__version__, batch=[lo, hi],
                            **({} if cuda else dict(cpu_capability=torch.backends.cpu.get_cpu_capability(),
                                                    march=march or "native"))))
        if hi >= max_batch:
            return entries
        rows = hi + 1


def _batch_range(ep, max_batch: int) -> tuple[int, int]:
    """The batch rows every input's dynamic dimension accepts in `ep` ([lo, hi], hi capped at
    `max_batch`): fd pads calls with fewer rows than lo (a 1-row call) and refuses more than hi."""
    lo, hi = 1, int(max_batch)
    for vr in ep.range_constraints.values():
        lo = max(lo, int(vr.lower))
        if bool(vr.upper < 10**12):  # unbounded is torch's int_oo
            hi = min(hi, int(vr.upper))
    if hi < lo:
        raise ExportError(f"the graph exports for batch rows {lo}..{hi} only")
    return lo, hi


def _unet_graphs(model_dir: Path, manifest: dict, names, device: str):
    """(graph name, module, batch-1 example inputs) of a 2-D UNet export, rebuilt from its weights
    (unet_weights.safetensors, or an unfrozen unet.pt's parameters)."""
    from .folder import eager_unet
    from .forms import unet_form
    from .graphs import AnalysisDecoder, Decoder, Encoder, TimeEmbed, TimeEmbedExtra

    unet, _, _ = eager_unet(model_dir)
    unet = unet.to(device=device, dtype={"float32": torch.float32, "float16": torch.float16}[manifest["dtype"]])
    dtype = unet.dtype
    form = unet_form(unet.config)
    g = torch.Generator().manual_seed(0)
    h, w = manifest["sample_size"]
    sample = torch.randn(1, manifest["in_channels"], h, w, generator=g).to(device, dtype)
    timesteps = torch.tensor([500.0], device=device)
    cond = torch.randn(1, manifest["cond"]["seq_len"], manifest["cond"]["dim"], generator=g).to(device, dtype)
    if form.prepare:
        extra = torch.randn(1, manifest["prepare"]["extra_dim"], generator=g).to(device, dtype)
        te, te_in = TimeEmbedExtra(unet), [timesteps, extra]
    else:
        te, te_in = TimeEmbed(unet), [timesteps]
    enc = Encoder(unet)
    with torch.no_grad():
        emb = te(*te_in)
        feats = enc(sample, emb, cond)
    dec_in = [feats[0], emb, cond, *feats[1:]]
    table = {"time_embed": (te, te_in), "encoder": (enc, [sample, emb, cond]), "decoder": (Decoder(unet), dec_in),
             "decoder_analysis": (AnalysisDecoder(unet), dec_in)}
    wanted = set(names)
    ids = sorted({int(n[len("deepcache_id"):].split("_")[0]) for n in wanted if n.startswith("deepcache_id")})
    if ids:
        from .methods.deepcache import deepcache_graph_inputs, deepcache_parts

        table.update(deepcache_graph_inputs(deepcache_parts(unet, ids), sample, emb, cond, feats)[0])
    if "teacache_probe" in wanted:
        from .methods.teacache import TeaCacheProbe

        table["teacache_probe"] = (TeaCacheProbe(unet), [sample, emb])
    tgate = [n for n in names if n.startswith("tgate_")]
    if tgate:
        from .methods.tgate import TGATE_MODES, TGateUNet

        # T-GATE installs wrapping processors on the UNet's attention layers: on a copy, so the
        # other graphs keep the plain ones
        tunet = copy.deepcopy(unet)
        cap = TGateUNet(tunet, "tgate_capture")
        with torch.no_grad():
            outs = cap(sample, emb, cond)
        nc = len(cap.cross)
        ca, sa = list(outs[1:1 + nc]), list(outs[1 + nc:])
        extra = {"tgate_capture": [], "tgate_sa_reuse": sa, "tgate_ca_reuse": ca, "tgate_both_reuse": [*ca, *sa]}
        for mode in TGATE_MODES:
            table[mode] = (TGateUNet(tunet, mode), [sample, emb, cond, *extra[mode]])
    return [(n, *table[n]) for n in names]


def _dit_graphs(model_dir: Path, manifest: dict, names, device: str):
    """(graph name, module, batch-1 example inputs) of a DiT export's unet.pt graphs, rebuilt from
    the weights recovered from its frozen graphs (fd_export.recover)."""
    from .dit import dit_graphs
    from .recover import frozen_dit

    if not names:
        return []
    dtype = {"float32": torch.float32, "float16": torch.float16}[manifest["dtype"]]
    model = frozen_dit(model_dir, manifest).to(device=device, dtype=dtype)
    _, table = dit_graphs(model, int(manifest["split"]["encoder_blocks"]), device, dtype)
    return [(n, *table[n]) for n in names]


def _check_parity(model_dir: Path, entry: dict, graph: str, package: str, inputs: list[torch.Tensor], tol: float,
                  n: int):
    """The package against the export's own TorchScript graph on `inputs` at `n` rows: every
    output within `tol` x (1 + the output's largest magnitude). Returns the largest difference."""
    ts = torch.jit.load(str(model_dir / entry["file"]), map_location=inputs[0].device)
    fn = ts.forward if entry.get("method", "forward") == "forward" else getattr(ts, entry["method"])
    rows = [t.repeat(n, *[1] * (t.dim() - 1)) if t.dim() > 0 and t.shape[0] == 1 else t for t in inputs]
    rows = [t + 0.1 * torch.randn_like(t) if t.is_floating_point() and t.dim() > 1 else t for t in rows]
    loaded = torch._inductor.aoti_load_package(package)
    with torch.no_grad():
        want, got = fn(*rows), loaded(*rows)
    want = list(want) if isinstance(want, (tuple, list)) else [want]
    got = list(got) if isinstance(got, (tuple, list)) else [got]
    if len(want) != len(got):
        raise ExportError(f"{graph}: the package returns {len(got)} tensors, the TorchScript graph {len(want)}")
    worst = 0.0
    for i, (a, b) in enumerate(zip(want, got)):
        err = (a.float() - b.float()).abs().max().item()
        if not err <= tol * (1 + a.float().abs().max().item()):
            raise ExportError(f"{graph}: output {i} of the package differs from the TorchScript graph by {err:.3g}")
        worst = max(worst, err)
    return worst


def add_packages(model_dir, graphs: dict, parts, device: str = "cpu", max_batch: int = MAX_BATCH, tol: float = 1e-5,
                 log=print, march: str | None = None) -> None:
    """Compile packages for `parts` [(graph name, module, batch-1 inputs)] into `model_dir`, each
    checked against the folder's TorchScript graph of that name (`graphs[name]`, already written)
    before it is moved into place; sets `graphs[name]["packages"]` (the caller writes the manifest)."""
    model_dir = Path(model_dir)
    with tempfile.TemporaryDirectory(dir=model_dir) as tmp:
        entries = {}
        for name, module, inputs in parts:
            log(f"compiling {name} ...")
            packages = compile_packages(module, inputs, os.path.join(tmp, f"{name}.pt2"), device, max_batch, march)
            for p in packages:  # each package at a row count inside its range (3 rows: the first)
                n = max(3, p["batch"][0]) if p["batch"][1] >= 3 else p["batch"][0]
                err = _check_parity(model_dir, graphs[name], name, os.path.join(tmp, p["file"]), inputs, tol, n)
                log(f"  {p['file']} (rows {p['batch'][0]}..{p['batch'][1]}): max |package - TorchScript| {err:.2g} at {n} rows")
            entries[name] = packages
        for name, packages in entries.items():
            for p in packages:
                os.replace(os.path.join(tmp, p["file"]), model_dir / p["file"])
            graphs[name].pop("package", None)
            graphs[name]["packages"] = packages


_X86_ISA = ("DEFAULT", "AVX2", "AVX512")


def packages_run_here(model_dir: Path, packages: list[dict], device: str, max_batch: int) -> bool:
    """Whether a graph's listed packages run on `device` with this torch (what fd checks before
    loading: device, torch release, a CPU vector ISA the same or wider, the file's hash) and
    cover `max_batch` rows."""
    cuda = str(device).startswith("cuda")
    here = torch.backends.cpu.get_cpu_capability()

    def ok(p: dict) -> bool:
        isa = p.get("cpu_capability")
        isa_ok = cuda or isa is None or isa == here or (
            isa in _X86_ISA and here in _X86_ISA and _X86_ISA.index(isa) <= _X86_ISA.index(here))
        f = model_dir / p["file"]
        return ((p["device"] == "cuda") == cuda and p["torch"].split("+")[0] == torch.__version__.split("+")[0]
                and isa_ok and f.is_file() and sha256(str(f)) == p["sha256"])

    return bool(packages) and all(ok(p) for p in packages) and packages[-1]["batch"][1] >= max_batch


def convert(model_dir: str, out: str | None = None, graphs=None, device: str = "cpu", max_batch: int = MAX_BATCH,
            tol: float = 1e-5, log=print, march: str | None = None, recompile: bool = False) -> dict:
    """Compile AOTInductor packages for `graphs` (default: the loop's and drift's graphs; `["all"]`:
    every graph this converter rebuilds) of the 2-D UNet or DiT export `model_dir`, into `out` (a copy of the folder; default: the folder itself). Each
    package is checked against the export's TorchScript graph (within `tol`) before the manifest
    lists it; the manifest is rewritten last (temp + rename). A graph whose listed packages already
    run here (the default model ships some) is kept unless `recompile`. Returns the new manifest."""
    src = Path(model_dir)
    if not (src / "manifest.json").is_file():
        raise ExportError(f"{model_dir}: no manifest.json (expected an fd model folder)")
    manifest = json.loads((src / "manifest.json").read_text())
    kind = manifest.get("kind", "unet2d")
    if kind == "dit":
        from .recover import DIT_RECOVERED

        supported = [n for n in DIT_RECOVERED if manifest["graphs"].get(n, {}).get("file") == "unet.pt"]
        default = [n for n in ("encoder", "decoder", "decoder_analysis") if n in supported]
    elif kind == "unet2d":
        supported = [n for n in UNET_GRAPHS if n in manifest["graphs"]] + method_graph_names(manifest)
        default = list(UNET_GRAPHS)
    else:
        raise ExportError(f"{model_dir}: a {kind} export; convert_aoti.py compiles 2-D UNet and DiT exports "
                          "(export_sd.py --format aoti compiles every graph at export)")
    names = supported if list(graphs or []) == ["all"] else list(graphs or default)
    unknown = [n for n in names if n not in supported]
    if unknown:
        raise ExportError(f"--graphs {','.join(unknown)}: not a graph this converter compiles for this export "
                          f"(it compiles {', '.join(supported)}, or `all`)")
    dst = Path(out) if out else src
    if dst != src:
        if dst.exists() and any(dst.iterdir()):
            raise ExportError(f"--out {dst}: not empty")
        shutil.copytree(src, dst, dirs_exist_ok=True)
    if not recompile:
        kept = [n for n in names if packages_run_here(src, manifest["graphs"][n].get("packages", []), device, max_batch)]
        for n in kept:
            log(f"keeping {n}: its packages run here (--recompile compiles them again)")
        names = [n for n in names if n not in kept]
    parts = _dit_graphs(src, manifest, names, device) if kind == "dit" else _unet_graphs(src, manifest, names, device)
    add_packages(dst, manifest["graphs"], parts, device, max_batch, tol, log, march)
    write_manifest(str(dst), manifest)
    return manifest
