#!/usr/bin/env bash
# Issue 17's GPU checks, without checkpoints: random-init models of SDXL base 1.0's exact
# architecture (1024 px) and of SD-1.5 + ControlNet (512 px), exported float16 on CUDA through the
# same code path as a user's folder (experiments/gpu/make_random_family.py), timed with `fd bench`
# (interleaved repeats, median):
#   - SDXL, Euler 50 steps, CFG 5, batch 1 and 4: baseline vs the paper's 50ls (+ injection) and
#     DeepCache N=3;
#   - SD-1.5 + ControlNet, DDIM 50 steps, CFG 7.5, batch 1, an edge-like 512 px condition image:
#     baseline (ControlNet every step) vs 50ls (ControlNet at key steps only). Paper: 3.20 -> 1.52 s.
#
#   experiments/gpu/gpu_families_bench.sh [FD_BINARY] [WORK_DIR]
#
# Needs diffusers + transformers in python3 and the CLIPTokenizer folder TOK (default
# out/sd15-tokenizer, as gpu_sd15_bench.sh). Writes the report (info.txt and each bench's .md/.json)
# to REPORT (default WORK_DIR/report).
set -uo pipefail
FD=${1:-target/release/fd}
WORK=${2:-out/gpu-families}
TOK=${TOK:-out/sd15-tokenizer}
REPEATS=${REPEATS:-3}
R=${REPORT:-$WORK/report}
mkdir -p "$R"
source "$(dirname "$0")/gpu_common.sh"
P=experiments/configs/bench_prompts.txt
bench() {  # NAME ARGS...: one fd bench run, its table copied into the report at once
  local name=$1; shift
  step "$FD" --log-level warn bench --device cuda --repeats "$REPEATS" --prompts "$P" "$@" --out "$WORK/$name" \
    && cp "$WORK/$name/bench.md" "$R/$name.md" && cp "$WORK/$name/bench.json" "$R/$name.json"
}
XL="$WORK/sdxl"
if step python3 experiments/gpu/make_random_family.py --family sdxl --out "$XL" --device cuda --dtype float16 --tokenizer "$TOK"; then
  step "$FD" info "$XL" --device cuda
  for b in 1 4; do
    bench "sdxl_b$b" --model "$XL" --scheduler euler --steps 50 --cfg 5 --inject 0.003@0.5 \
      --plans none,50ls,deepcache:3 --n "$b"
  done
fi
CN="$WORK/controlnet"
if step python3 experiments/gpu/make_random_family.py --family controlnet --out "$CN" --device cuda --dtype float16 --tokenizer "$TOK"; then
  step "$FD" info "$CN" --device cuda
  python3 - "$WORK/edges.png" <<'PY'
import sys
import numpy as np
from PIL import Image
y, x = np.mgrid[0:512, 0:512]
edges = np.where((x % 32 == 0) | (y % 32 == 0), 255, 0).astype(np.uint8)  # a grid of edges stands in for Canny
Image.fromarray(np.stack([edges] * 3, -1)).save(sys.argv[1])
PY
  bench controlnet_b1 --model "$CN" --scheduler ddim --steps 50 --cfg 7.5 --inject 0.003@0.5 \
    --control "$WORK/edges.png" --plans none,50ls --n 1
fi
# Issue 19: text-to-video-ms-1.7b (UNet3D, 16 frames, 256 px) and DiT-XL/2 256 (paper: 5.13 -> 3.26 s/image)
T2V="$WORK/t2v"
if step python3 experiments/gpu/make_random_family.py --family t2v --out "$T2V" --device cuda --dtype float16 --tokenizer "$TOK"; then
  step "$FD" info "$T2V" --device cuda
  bench t2v_b1 --model "$T2V" --frames 16 --scheduler ddim --steps 50 --cfg 9 --inject 0.003@0.5 --plans none,50ls --n 1
fi
DIT="$WORK/dit"
if step python3 experiments/gpu/make_random_family.py --family dit --out "$DIT" --device cuda --dtype float16 --tokenizer "$TOK"; then
  step "$FD" info "$DIT" --device cuda
  for b in 1 8; do
    bench "dit_b$b" --model "$DIT" --classes 207,360,387,974,88,979,417,279 --scheduler ddpm --steps 250 --cfg 4 \
      --inject 0.003@0.3:after --plans none,dit250 --n "$b"
  done
fi
echo "done: $R"
