#!/usr/bin/env bash
# CUDA checks of the fd binary on a GPU machine (issues 2 and 8): libtorch's CUDA backend loads and
# `fd info` says so; the default model samples on CUDA; what is bit-identical on the GPU (repeats,
# batch sizes, --deterministic, parallel vs sequential decoders) and how far CUDA is from CPU; and
# `fd bench` timings of the caching plans on the GPU.
#
#   experiments/gpu/gpu_check.sh [FD_BINARY] [WORK_DIR]
#
# Uses the libtorch of the machine's PyTorch (python3 -c 'import torch'), put on LD_LIBRARY_PATH, so
# FD_BINARY must be built against that libtorch version (see docs/gpus.md). Writes WORK_DIR/report/:
# info.txt, compare.jsonl (one row per comparison, from experiments/gpu/gpu_check.py), bench*.md/json.
set -uo pipefail
FD=${1:-target/release/fd}
WORK=${2:-out/gpu-check}
M=models/fmnist
mkdir -p "$WORK/report"
R="$WORK/report"

source "$(dirname "$0")/gpu_common.sh"
step "$FD" info "$M" --device cuda || { echo "fd info --device cuda FAILED"; exit 1; }
# The same flag on a CPU-only view of the machine must be a clear error, not a fallback.
CUDA_VISIBLE_DEVICES= step "$FD" info "$M" --device cuda && echo "UNEXPECTED: no error without a visible GPU"

# --deterministic calls every graph one row at a time (~1.5 s/image on an H100 for this model),
# so those runs use fewer samples (N_DET, default 8).
N_DET=${N_DET:-8}
S=("$FD" --log-level warn sample --model "$M" --steps 50 --cfg 3 --n 64 --overwrite)
D=("$FD" --log-level warn sample --model "$M" --steps 50 --cfg 3 --n "$N_DET" --overwrite --deterministic)
step "${S[@]}" --device cpu --batch 32 --out "$WORK/cpu" || exit 1
step "${S[@]}" --device cuda --batch 32 --out "$WORK/cuda" || exit 1
step "${S[@]}" --device cuda --batch 32 --out "$WORK/cuda_repeat"
step "${S[@]}" --device cuda --batch 16 --out "$WORK/cuda_b16"
step "${D[@]}" --device cuda --batch 8 --out "$WORK/det_b8"
step "${D[@]}" --device cuda --batch 8 --out "$WORK/det_b8_repeat"
step "${D[@]}" --device cuda --batch 2 --out "$WORK/det_b2"
step "${D[@]}" --device cuda --batch 8 --keys 50ls --out "$WORK/det_50ls_par"
step "${D[@]}" --device cuda --batch 8 --keys 50ls --sequential --out "$WORK/det_50ls_seq"
step "${S[@]}" --device cpu --batch 32 --keys 50ls --out "$WORK/cpu_50ls"
step "${S[@]}" --device cuda --batch 32 --keys 50ls --out "$WORK/cuda_50ls"

C=(python3 experiments/gpu/gpu_check.py --json "$R/compare.jsonl")
"${C[@]}" "$WORK/cuda" "$WORK/cuda_repeat" "$WORK/cuda_b16"
"${C[@]}" "$WORK/det_b8" "$WORK/det_b8_repeat" "$WORK/det_b2"
"${C[@]}" "$WORK/det_50ls_par" "$WORK/det_50ls_seq"
"${C[@]}" "$WORK/cpu" "$WORK/cuda"
"${C[@]}" "$WORK/cpu_50ls" "$WORK/cuda_50ls"

P=none,50ls,50ls@seq,uniform:3,deepcache:3
step "$FD" bench --model "$M" --device cuda --plans "$P" --n 16 --repeats 3 --out "$WORK/bench16"
step "$FD" bench --model "$M" --device cuda --plans "$P" --n 256 --repeats 3 --out "$WORK/bench256"
for n in 16 256; do
  cp "$WORK/bench$n/bench.md" "$R/bench$n.md"; cp "$WORK/bench$n/bench.json" "$R/bench$n.json"
done
echo "done: $R"
