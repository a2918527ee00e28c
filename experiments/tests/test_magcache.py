"""MagCache's calibration (fd_export.methods.magcache), from an export's TorchScript step-cache
graphs, equals diffusers' own `MagCacheConfig(calibrate=True)` run on the eager DiT for the same
sample; add_magcache.py refuses a UNet export and writes nothing."""
from __future__ import annotations

import ast
import contextlib
import copy
import io
import json
import shutil
from pathlib import Path

import make_families as mf
import pytest
import torch

from fd_export import ExportError
from fd_export.methods import magcache as mc


@pytest.fixture(scope="module")
def tiny_dit(tmp_path_factory):
    from fd_export.dit import export_dit_folder

    root = tmp_path_factory.mktemp("dit")
    ckpt, model = root / "ckpt", root / "model"
    mf.build_dit(str(ckpt), authors=False)
    export_dit_folder(str(ckpt), str(model), "cpu", "float32", name="dit-tiny")
    return ckpt, model


def test_calibration_equals_diffusers_calibrate(tiny_dit):
    from diffusers import DDIMScheduler, DiTTransformer2DModel
    from diffusers.hooks.mag_cache import MagCacheConfig, apply_mag_cache

    ckpt, model = tiny_dit
    m = json.loads((model / "manifest.json").read_text())
    assert len(m["magcache"]["mag_ratios"]) == 50 and m["magcache"]["fit"]["samples"] == 8, "calibrated at export"
    ours = mc.export_calibration(str(model), samples=1, steps=20, guidance=4.0)["mag_ratios"]
    tr = DiTTransformer2DModel.from_pretrained(str(ckpt), subfolder="transformer").eval()
    sched = DDIMScheduler.from_pretrained(str(ckpt), subfolder="scheduler")
    sched.set_timesteps(20)
    hooked = copy.deepcopy(tr)
    apply_mag_cache(hooked, MagCacheConfig(calibrate=True, num_inference_steps=20))
    x = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(1000))  # calibrate's first sample
    labels = torch.tensor([m["cond"]["null_id"], 0])
    out = io.StringIO()
    with torch.no_grad(), contextlib.redirect_stdout(out):
        for t in sched.timesteps:
            o = hooked(torch.cat([x, x]), timestep=t.expand(2), class_labels=labels).sample
            u, c = o[:, :4].chunk(2)
            x = sched.step(u + 4.0 * (c - u), t, x).prev_sample
    theirs = ast.literal_eval(out.getvalue().strip().splitlines()[-1])  # diffusers prints the list
    assert len(theirs) == len(ours) == 20
    assert max(abs(a - b) for a, b in zip(ours, theirs)) <= 1e-5


def test_schedule_interpolates_as_diffusers():
    from diffusers.hooks.mag_cache import nearest_interp

    r = torch.tensor([1.0, 1.1, 0.9, 1.05, 0.97])
    for n in (1, 3, 4, 7, 12):
        assert mc.nearest_interp(r.tolist(), n) == nearest_interp(r, n).tolist()
    assert mc.schedule([1.0] * 10, 10, 0.01, 2, 0.2) == [True, True, False, False, True, False, False, True, False,
                                                          False]


def test_add_magcache_refuses_a_unet_export(tmp_path):
    dst = tmp_path / "fmnist"
    dst.mkdir()
    shutil.copyfile(Path(__file__).resolve().parents[2] / "models" / "fmnist" / "manifest.json", dst / "manifest.json")
    before = (dst / "manifest.json").read_text()
    with pytest.raises(ExportError, match="unet2d export; MagCache"):
        mc.add_magcache(str(dst))
    assert (dst / "manifest.json").read_text() == before
