"""The weights of a frozen DiT export, recovered from its TorchScript graphs, for compiling its
AOTInductor packages (`fd_export.aoti.convert`).

`torch.jit.freeze` turns a module's parameters into nameless constants of each method's graph
(`CONSTANTS.c0`, `c1`, ...), so a frozen export keeps no state dict. Exports since the default
model keep `unet_weights.safetensors` beside the graphs; a DiT exported before (the committed
`models/fmnist-dit`) does not. Its weights are recovered here, and proven, as follows:

1. the same graphs are traced and frozen again (`fd_export.dit.dit_graphs`, the code that wrote
   the export) from a DiT built from the manifest's `unet_config` whose every parameter holds
   distinct random values;
2. each method's code must be the export's, character for character (the same diffusers and
   fd_export produced both), so constant `c<i>` of the probe and of the export stand at the same
   place in the same computation;
3. each parameter of the probe is found among the probe's constants by value (they are distinct)
   and takes the export's constant at that place; a parameter found nowhere, or a constant that
   is no parameter yet differs between the two beyond float rounding (a folded weight), is
   refused;
4. the rebuilt model must give the export's outputs on every method with weights (within 1e-5)
   before it is returned; `convert` then checks every package against the export's TorchScript
   graph too.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from .errors import ExportError

# the unet.pt methods a DiT export holds (encoder_analysis may sit in analysis.pt instead)
DIT_METHODS = ("time_embed", "encoder", "decoder", "decoder_analysis", "encoder_analysis")
# the ones the recovered model reproduces (and `convert` compiles): `time_embed` holds no weight,
# only the sinusoid frequencies the exporting CPU computed, which this CPU's exp rounds otherwise
# in the last bit (3e-5 apart at t = 500 on the default DiT): it stays TorchScript, a negligible
# call per step
DIT_RECOVERED = DIT_METHODS[1:]


def _constants(module, method: str) -> tuple[str, dict]:
    code, consts = getattr(module, method).code_with_constants
    return code, dict(consts.items())


def frozen_dit(model_dir: Path, manifest: dict):
    """A diffusers DiTTransformer2DModel with the weights of the frozen DiT export `model_dir`
    (see the module doc), in float32 on the CPU, checked against the export's graphs."""
    import diffusers

    from .dit import dit_graphs
    from .tracing import trace_methods

    split = int(manifest["split"]["encoder_blocks"])
    methods = [m for m in DIT_METHODS if manifest["graphs"].get(m, {}).get("file") == "unet.pt"]
    exported = torch.jit.load(str(model_dir / "unet.pt"), map_location="cpu")
    probe = diffusers.DiTTransformer2DModel.from_config(manifest["unet_config"]).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in probe.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    _, parts = dit_graphs(probe, split)
    with tempfile.TemporaryDirectory() as tmp:
        trace_methods({m: parts[m] for m in methods}, str(Path(tmp) / "unet.pt"))
        traced = torch.jit.load(str(Path(tmp) / "unet.pt"), map_location="cpu")
    names = dict(probe.named_parameters())
    found: dict[str, torch.Tensor] = {}
    for method in methods:
        code_p, probe_c = _constants(traced, method)
        code_e, export_c = _constants(exported, method)
        if code_p != code_e:
            raise ExportError(f"{model_dir}/unet.pt: method `{method}` was not written by this fd_export and diffusers "
                              f"{diffusers.__version__} (its code differs from a fresh trace): its weights cannot be "
                              "recovered; export the checkpoint again")
        for key, pc in probe_c.items():
            ec = export_c[key]
            if not isinstance(pc, torch.Tensor):
                continue
            hit = [n for n, p in names.items() if p.shape == pc.shape and torch.equal(p.detach(), pc)]
            if hit:
                for n in hit:
                    found.setdefault(n, ec.detach().clone())
            # a structural constant (sinusoid frequencies, ...) is recomputed from the config: equal up
            # to the last bits of the exporting CPU's vectorised exp / log
            elif not (isinstance(ec, torch.Tensor) and ec.shape == pc.shape
                      and torch.allclose(ec.float(), pc.float(), rtol=1e-5, atol=1e-7)):
                raise ExportError(f"{model_dir}/unet.pt `{method}`: constant {key} {tuple(pc.shape)} is no parameter "
                                  "and differs from a fresh trace's (a folded weight): its weights cannot be recovered")
    missing = sorted(set(names) - set(found))
    if missing:
        raise ExportError(f"{model_dir}/unet.pt: no graph constant holds {missing[:4]} ...: weights not recoverable")
    model = diffusers.DiTTransformer2DModel.from_config(manifest["unet_config"]).eval()
    model.load_state_dict(found, strict=True)
    _check(model, split, exported, [m for m in methods if m in DIT_RECOVERED], model_dir)
    return model


def _check(model, split: int, exported, methods, model_dir: Path, tol: float = 1e-5) -> None:
    """Every method of the rebuilt model against the export's, at 3 rows of perturbed inputs."""
    from .dit import dit_graphs

    _, parts = dit_graphs(model, split)
    g = torch.Generator().manual_seed(1)
    for method in methods:
        module, inputs = parts[method]
        rows = [t.repeat(3, *[1] * (t.dim() - 1)) for t in inputs]
        rows = [t + 0.1 * torch.randn(t.shape, generator=g) if t.is_floating_point() and t.dim() > 2 else t
                for t in rows]
        with torch.no_grad():
            want, got = getattr(exported, method)(*rows), module(*rows)
        want = list(want) if isinstance(want, (tuple, list)) else [want]
        got = list(got) if isinstance(got, (tuple, list)) else [got]
        for a, b in zip(want, got):
            err = (a - b).abs().max().item()
            if not err <= tol * (1 + a.abs().max().item()):
                raise ExportError(f"{model_dir}: the recovered weights give `{method}` outputs {err:.3g} from the "
                                  "export's; not recovered")
