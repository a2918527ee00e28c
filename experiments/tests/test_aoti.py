"""fd_export.aoti: a graph that branches on its batch size compiles into one package per side of
the branch, the packages together cover 1..max rows (1 by padding, in fd) and give the eager
module's outputs; non-tensor outputs are refused."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fd_export import ExportError
from fd_export.aoti import compile_packages


class Branchy(nn.Module):
    """A conv + a tuple output, with a batch-size branch like diffusers' Upsample2D's."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)

    def forward(self, x, scale):
        if x.shape[0] >= 4:
            x = x.contiguous()
        y = self.conv(x) * scale
        return y, y.sum(dim=(1, 2, 3))


def test_a_batch_branch_gives_one_package_per_side(tmp_path):
    torch.manual_seed(0)
    m = Branchy().eval()
    x, scale = torch.randn(1, 2, 5, 5), torch.ones(1, 1, 1, 1)
    entries = compile_packages(m, [x, scale], str(tmp_path / "g.pt2"), max_batch=16)
    assert [e["batch"] for e in entries] == [[2, 3], [4, 16]]
    assert [e["file"] for e in entries] == ["g.pt2", "g.b4.pt2"]
    assert all(e["tuple"] and e["device"] == "cpu" and e["cpu_capability"] for e in entries)
    for e, rows in zip(entries, (3, 9)):
        pk = torch._inductor.aoti_load_package(str(tmp_path / e["file"]))
        xs, ss = torch.randn(rows, 2, 5, 5), torch.rand(rows, 1, 1, 1)
        with torch.no_grad():
            want, got = m(xs, ss), pk(xs, ss)
        for a, b in zip(want, got):
            assert (a - b).abs().max().item() <= 1e-5


def test_non_tensor_outputs_are_refused(tmp_path):
    class Dicty(nn.Module):
        def forward(self, x):
            return {"y": x * 2}

    with pytest.raises(ExportError, match="non-tensors"):
        compile_packages(Dicty(), [torch.randn(1, 3)], str(tmp_path / "d.pt2"))
    assert not (tmp_path / "d.pt2").exists()


def test_export_refuses_unknown_aoti_graphs_before_any_file(tmp_path):
    """`aoti=[names]` naming a graph the export does not write is refused, naming the graphs it
    does write, before anything is written."""
    import make_families as mf

    from fd_export.sd import export_sd

    ckpt = tmp_path / "ckpt"
    mf.build_sd2(str(ckpt))
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"aoti graphs cond_prepare, vae: not graphs of this export \(cond_encoder, "
                                         r"decoder, .*vae_decoder\)"):
        export_sd(str(ckpt), str(out), aoti=["encoder", "vae", "cond_prepare"])
    assert not out.exists(), "nothing written"


def test_the_default_models_packages_run_here_and_convert_keeps_them(tmp_path):
    """The committed packages are portable x86-64-v3 code that `convert` keeps where they run (the
    check fd makes before loading); an altered file or another torch release is compiled again."""
    import json
    import shutil
    from pathlib import Path

    from fd_export.aoti import packages_run_here

    models = Path(__file__).resolve().parents[2] / "models"
    for name, want in (("fmnist", ["decoder", "encoder", "time_embed"]), ("fmnist-dit", ["decoder", "encoder"])):
        graphs = json.loads((models / name / "manifest.json").read_text())["graphs"]
        packaged = sorted(k for k, g in graphs.items() if g.get("packages"))
        assert packaged == want, name
        for g in packaged:
            for p in graphs[g]["packages"]:
                assert (p["march"], p["cpu_capability"], p["device"]) == ("x86-64-v3", "AVX2", "cpu")
    src = models / "fmnist"
    graphs = json.loads((src / "manifest.json").read_text())["graphs"]
    packaged = ["decoder", "encoder", "time_embed"]
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        pytest.skip("this CPU does not run AVX2 packages")
    assert all(packages_run_here(src, graphs[g]["packages"], "cpu", 4096) for g in packaged)
    assert not packages_run_here(src, graphs["decoder"]["packages"], "cuda", 4096)
    assert not packages_run_here(src, graphs["decoder"]["packages"], "cpu", 8192), "max batch not covered"
    other = [dict(p, torch="2.99.0") for p in graphs["encoder"]["packages"]]
    assert not packages_run_here(src, other, "cpu", 4096)
    shutil.copy(src / "encoder.pt2", tmp_path / "encoder.pt2")
    with open(tmp_path / "encoder.pt2", "ab") as f:
        f.write(b"x")
    assert not packages_run_here(tmp_path, graphs["encoder"]["packages"], "cpu", 4096)


def test_a_frozen_dit_exports_weights_are_recovered_and_checked():
    """The default DiT's export is frozen TorchScript without its weights: fd_export.recover
    rebuilds them from the graphs' constants and proves them on the export's outputs; an export
    whose graphs a fresh trace does not reproduce (here: the manifest's split moved) is refused."""
    import json
    from pathlib import Path

    from fd_export.recover import frozen_dit

    d = Path(__file__).resolve().parents[2] / "models" / "fmnist-dit"
    manifest = json.loads((d / "manifest.json").read_text())
    model = frozen_dit(d, manifest)
    assert sum(p.numel() for p in model.parameters()) == 1233700
    moved = dict(manifest, split=dict(manifest["split"], encoder_blocks=manifest["split"]["encoder_blocks"] - 1))
    with pytest.raises(ExportError, match="code differs from a fresh trace"):
        frozen_dit(d, moved)
