"""Freeze the TorchScript graphs of an existing fd export in place.

  python experiments/export/freeze_graphs.py MODEL_DIR [--save-weights]

fd exports are saved frozen (torch.jit.freeze: weights become graph constants; bit-identical
outputs, speed within noise on a CPU, smaller files). Exports made before
2026-12-01 were not; this converts one (fd_export.folder.freeze_export) and updates manifest.json's
SHA-256s. --save-weights first writes the UNet's diffusers state dict to unet_weights.safetensors
(what experiments/bench/bench_harness.py rebuilds the eager model from; a frozen graph has no state dict).
"""
from __future__ import annotations

import argparse

from fd_export import cli
from fd_export.folder import freeze_export


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--save-weights", action="store_true", help="write unet_weights.safetensors first")
    a = ap.parse_args()
    done = freeze_export(a.model_dir, save_weights=a.save_weights)
    print(f"froze {', '.join(done)}" if done else "every graph file is frozen already")


if __name__ == "__main__":
    cli.run(main)
