#!/usr/bin/env bash
# The paper's speed question at Stable Diffusion 1.5 scale on a GPU, without a checkpoint: export a
# random-init model of SD-1.5's exact architecture (experiments/gpu/make_sd15_random.py, float16 on
# CUDA: same shapes and FLOPs as SD-1.5, so the same timings) and time the plans side by side with
# `fd bench` (interleaved repeats, median): DDIM-50 and DPM-Solver++-20, CFG 7.5, 512 px, batch 1
# and 8, encoder propagation with the paper's injection vs the baseline and DeepCache.
#
#   experiments/gpu/gpu_sd15_bench.sh [FD_BINARY] [WORK_DIR]
#
# Needs diffusers + transformers in python3 and the CLIPTokenizer folder TOK (default
# out/sd15-tokenizer; make_sd15_random.py builds it where open_clip_torch is installed). FD_BINARY
# must be built against the machine's libtorch (docs/gpus.md). Writes the report (info.txt and
# each bench's .md/.json as soon as it finishes) to REPORT (default WORK_DIR/report).
set -uo pipefail
FD=${1:-target/release/fd}
WORK=${2:-out/gpu-sd15}
TOK=${TOK:-out/sd15-tokenizer}
REPEATS=${REPEATS:-3}
R=${REPORT:-$WORK/report}
mkdir -p "$R"
source "$(dirname "$0")/gpu_common.sh"
M="$WORK/model"
step python3 experiments/gpu/make_sd15_random.py --out "$M" --device cuda --dtype float16 --tokenizer "$TOK" --keep-weights || exit 1
step "$FD" info "$M" --device cuda || exit 1
B=("$FD" --log-level warn bench --model "$M" --device cuda --cfg 7.5 --prompts experiments/configs/bench_prompts.txt
   --inject 0.003@0.5 --repeats "$REPEATS")
bench() {  # NAME ARGS...: one fd bench run, its table copied into the report at once
  local name=$1; shift
  step "${B[@]}" "$@" --out "$WORK/$name" && cp "$WORK/$name/bench.md" "$R/$name.md" && cp "$WORK/$name/bench.json" "$R/$name.json"
}
if [ "${BENCH:-1}" = 1 ]; then
  bench ddim_b1 --plans none,50ls,50ls@seq,uniform:4,deepcache:3 --n 1
  bench ddim_b8 --plans none,50ls,50ls@seq,uniform:4,deepcache:3 --n 8
  bench dpmpp_b1 --scheduler dpm++ --steps 20 --plans none,50ls,50ls@seq --n 1
fi
# The graph formats (issue 33): the loop's graphs compiled to AOTInductor packages for this GPU
# (fp16; inductor writes Triton kernels), then TorchScript and AOTInductor side by side in one fd
# process, at batch 1 and 8. The packages stay in the model folder; the other rows keep TorchScript.
if [ "${AOTI:-1}" = 1 ] && step python3 experiments/export/convert_aoti.py --model "$M" --device cuda; then
  bench aoti_b1 --plans "none,none#aoti,50ls,50ls#aoti" --n 1
  bench aoti_b8 --plans "none,none#aoti,50ls,50ls#aoti" --n 8
fi
# The peer caching methods (issue 20 item 6) beside ours on the same model: T-GATE's graphs and TeaCache's probe
# added (the polynomial set to identity: random weights have nothing to fit; TeaCache / FBCache / AdaptiveDiffusion
# skip counts on random weights say nothing about a real model, so their rows time the machinery, the s/image
# printed with the UNet steps actually run).
if [ "${PEERS:-1}" = 1 ] && step python3 experiments/add/add_tgate.py --model "$M" --device cuda \
    && step python3 experiments/add/add_teacache.py --model "$M" --device cuda --coefficients 0,0,0,1,0; then
  bench peers_b1 --plans none,50ls,deepcache:3,tgate:20,teacache:0.1,fbcache:0.1,adaptive:0.01 --n 1
  bench peers_b8 --plans none,50ls,deepcache:3,tgate:20,teacache:0.1,fbcache:0.1,adaptive:0.01 --n 8
fi
# Table 1's ToMe rows at SD-1.5 scale: the same architecture exported with token merging (ratio
# 0.5, tomesd's defaults otherwise: max downsample 1, stride 2x2, attention only, fixed partition).
if [ "${TOME:-1}" = 1 ] && step python3 experiments/gpu/make_sd15_random.py --out "$WORK/model-tome" --device cuda \
    --dtype float16 --tokenizer "$TOK" --tome 0.5; then
  B2=("${B[@]}"); B2[5]="$WORK/model-tome"
  step "${B2[@]}" --plans none,50ls --n 1 --out "$WORK/tome_b1" && cp "$WORK/tome_b1/bench.md" "$R/tome_b1.md" \
    && cp "$WORK/tome_b1/bench.json" "$R/tome_b1.json"
fi
# End to end as a user's SD run: `fd sample` with prompts, VAE decode to 512 px PNGs, run.json with
# UNet and total (incl. text encoder + VAE) seconds per image; baseline and 50ls.
S=("$FD" --log-level warn sample --model "$M" --device cuda --cfg 7.5 --prompts experiments/configs/bench_prompts.txt
   --n 8 --batch 8 --overwrite)
step "${S[@]}" --out "$WORK/sample_none" && step "${S[@]}" --keys 50ls --inject 0.003@0.5 --out "$WORK/sample_50ls"
for k in none 50ls; do
  python3 - "$WORK/sample_$k" <<'EOF' 2>&1 | tee -a "$R/info.txt"
import glob, json, sys
d = sys.argv[1]
r = json.load(open(d + "/run.json"))
pngs = sorted(glob.glob(d + "/*.png"))
from PIL import Image
print(d, "pngs:", len(pngs), "size:", Image.open(pngs[0]).size if pngs else None,
      {k: r[k] for k in ("n", "s_per_image", "timings_s")})
EOF
done
echo "done: $R"
