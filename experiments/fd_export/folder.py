"""An fd model folder: file hashes, the manifest (written atomically), the UNet weights kept beside
the graphs, and the eager UNet rebuilt from them (hash checked)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from .errors import ExportError
from .tracing import freeze_and_save


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


WEIGHTS_FILE = "unet_weights.safetensors"


def save_unet_weights(unet, path: str) -> dict:
    """The UNet's diffusers state dict (float32, CPU) as safetensors; returns its manifest entry."""
    from safetensors.torch import save_file

    sd = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in unet.state_dict().items()}
    tmp = path + ".tmp"
    save_file(sd, tmp)
    os.replace(tmp, path)
    return dict(file=os.path.basename(path), sha256=sha256(path), tensors=len(sd))


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


def load_unet(model_dir: str):
    """The diffusers UNet of an fd export, rebuilt from unet_config + unet_weights.safetensors
    (hash checked); returns (unet, manifest)."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    with open(os.path.join(model_dir, "manifest.json")) as f:
        old = json.load(f)
    weights = (old.get("exporter") or {}).get("weights")
    if not weights:
        raise ExportError(f"{model_dir}: no unet_weights.safetensors listed (re-export it with the current exporter)")
    wpath = os.path.join(model_dir, weights["file"])

    if sha256(wpath) != weights["sha256"]:
        raise ExportError(f"{wpath}: SHA-256 differs from the manifest")
    unet = UNet2DConditionModel.from_config(old["unet_config"])
    unet.load_state_dict(load_file(wpath))
    return unet.eval(), old


def eager_unet(model_dir: Path):
    """diffusers UNet2DConditionModel with the exported weights (graph methods share them)."""
    import diffusers

    manifest = json.loads((model_dir / "manifest.json").read_text())
    unet = diffusers.UNet2DConditionModel.from_config(manifest["unet_config"])
    weights = manifest.get("exporter", {}).get("weights")
    if weights:  # frozen graphs hold no state dict: the export keeps the weights beside them
        from safetensors.torch import load_file

        sd = load_file(str(model_dir / weights["file"]))
    else:  # an unfrozen export: the graphs' parameters, parts.<graph>.<diffusers name>
        ts = torch.jit.load(str(model_dir / manifest["graphs"]["encoder"]["file"]), map_location="cpu")
        sd = {}
        for k, v in ts.state_dict().items():
            parts = k.split(".", 2)
            if len(parts) == 3 and parts[0] == "parts":
                sd.setdefault(parts[2], v)
    missing, unexpected = unet.load_state_dict(sd, strict=False)
    missing = [m for m in missing if not m.startswith(("time_proj",))]
    if missing:
        raise ExportError(f"{model_dir}: weights missing from unet.pt for {missing[:5]} ...")
    cond = torch.jit.load(str(model_dir / manifest["graphs"]["cond_encoder"]["file"]), map_location="cpu")
    return unet.eval(), cond.eval(), manifest
