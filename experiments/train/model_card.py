"""Write a default model's card (models/fmnist/README.md, models/fmnist-dit/README.md) from what the runs produced:
the training log (loss curve PNG), the manifest, the judge's report, and the sample / metric
folders written by `fd sample`, `fd eval consistency` and `fd eval fid` (see `just model-card`).

  python experiments/train/model_card.py --model models/fmnist --run-dir ~/.cache/fd/train/fmnist --samples out/card
"""
import argparse
import csv
import json
import os
import shutil

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fd_export import cli


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/fmnist")
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--samples", required=True, help="fd sample output folder (DDIM-50, CFG, 10 classes)")
    args = ap.parse_args()
    m = json.load(open(os.path.join(args.model, "manifest.json")))
    rows = list(csv.DictReader(open(os.path.join(args.run_dir, "loss.csv"))))
    steps = [int(r["step"]) for r in rows]
    loss = [float(r["loss"]) for r in rows]
    k = 50
    smooth = [sum(loss[max(0, i - k):i + 1]) / len(loss[max(0, i - k):i + 1]) for i in range(len(loss))]
    plt.figure(figsize=(6, 3.2))
    plt.plot(steps, loss, lw=0.4, alpha=0.4, label="loss")
    plt.plot(steps, smooth, lw=1.5, label=f"mean of last {k}")
    plt.yscale("log")
    plt.xlabel("step (batch 64)")
    plt.ylabel("eps MSE")
    plt.legend()
    plt.tight_layout()
    plt.savefig(os.path.join(args.model, "loss.png"), dpi=120)
    shutil.copy(os.path.join(args.samples, "grid.png"), os.path.join(args.model, "samples_ddim50_cfg.png"))
    run = json.load(open(os.path.join(args.samples, "run.json")))
    cons = json.load(open(os.path.join(args.samples, "consistency.json")))
    fid_path = os.path.join(args.samples, "fid.json")
    fid = json.load(open(fid_path)) if os.path.exists(fid_path) else None
    judge = json.load(open(os.path.join(args.model, "classifier.json")))
    train = json.load(open(os.path.join(args.run_dir, "train_config.json")))
    t = m.get("training", {})
    if m.get("kind", "unet2d") == "dit":
        head = [
            "# Second default model: class-conditional DiT on Fashion-MNIST",
            "",
            f"`diffusers.DiTTransformer2DModel` (adaLN-zero), {train['params'] / 1e6:.2f}M parameters,"
            f" config `{json.dumps(train['dit'])}`; conditioning: the class label through adaLN-zero, class id"
            f" {train['null_class']} = the null class (10% label dropout). fd's split: patch embedding + the first"
            f" {m['split']['encoder_blocks']} of {m['split']['blocks']} blocks = encoder (the authors' 18/28 ratio), the"
            " other blocks + final layer = decoder.",
        ]
        trainer = "`just train-dit` (experiments/train/train_dit.py"
    else:
        head = [
            "# Default model: class-conditional UNet on Fashion-MNIST",
            "",
            f"`diffusers.UNet2DConditionModel`, {sum(v for k, v in m['params'].items() if k != 'cond_encoder') / 1e6:.2f}M parameters,"
            f" config `{json.dumps(train['unet'])}`; conditioning: a learned [{m['cond']['seq_len']}, {m['cond']['dim']}] token sequence per"
            " class plus a learned null sequence (10% label dropout), fed through cross-attention.",
        ]
        trainer = "`just train-default` (experiments/train/train_fmnist.py"
    lines = head + [
        f"Noise schedule / sampler config: `{json.dumps(m['scheduler'])}`.",
        "",
        f"Trained by {trainer}, seed {train['args']['seed']}, batch {train['args']['batch']},"
        f" lr {train['args']['lr']} with a cosine decay to 0 over the last {train['args'].get('decay_frac', 0):.0%} of the steps,"
        f" EMA {train['args']['ema']}): exported EMA weights at step {t.get('checkpoint_step')},"
        f" {t.get('wall_s', 0) / 3600:.2f} h of training wall time on {run['machine']['cpu']} ({run['machine']['cores']} cores).",
        "",
        "![loss](loss.png)",
        "",
        f"Samples: DDIM-{run['sampler']['steps']}, CFG {run.get('guidance', run.get('exec', {}).get('guidance'))}, seeds {run['seed']}+i (`{' '.join(run['command'][1:])}`):",
        "",
        "![samples](samples_ddim50_cfg.png)",
        "",
        "## Measured quality",
        "",
        f"- Class consistency (judge top-1 = requested class): **{cons['consistency']:.3f}** over N={cons['n']} balanced samples"
        f" (per class: {', '.join(format(c['consistency'], '.2f') for c in cons['per_class'])}).",
    ]
    if fid:
        kid = fid.get("kid") or {}
        lines.append(f"- FID vs Fashion-MNIST test (N_ref={fid['n_ref']}): **{fid['fid']:.2f}** with N={fid['n']} samples"
                     f" (N < 2048: biased upward); KID {kid.get('mean', float('nan')):.4f} ± {kid.get('std', float('nan')):.4f}."
                     f" Preprocessing: {fid['preprocessing']}.")
    lines += [
        f"- Judge: `classifier.pt` (experiments/train/train_classifier.py; the same file in every Fashion-MNIST model folder),"
        f" test accuracy {judge['test_accuracy']:.4f}.",
        "",
        f"Regenerate this card: `MODEL={args.model} just model-card`.",
        "",
    ]
    open(os.path.join(args.model, "README.md"), "w").write("\n".join(lines))
    print("wrote", os.path.join(args.model, "README.md"))


if __name__ == "__main__":
    cli.run(main)
