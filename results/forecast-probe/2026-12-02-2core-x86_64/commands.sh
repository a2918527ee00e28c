#!/usr/bin/env bash
# Indicative probe of forecast plans on the default model (N = 80, issue 21): made 2026-12-02 on the
# project's 2-core x86-64 VM with a niced DiT training running in the background (timings are
# separate processes: read the consistency column, not the speedups).
set -euo pipefail
S=(./target/release/fd --log-level warn sample --model models/fmnist --steps 50 --cfg 3 --n 80 --batch 40 --overwrite)
"${S[@]}" --out out/probe/base --keys none
"${S[@]}" --out out/probe/ls --keys 50ls --inject 0.003@0.5
"${S[@]}" --out out/probe/f1 --keys "50ls+forecast:1" --inject 0.003@0.5
"${S[@]}" --out out/probe/f2 --keys "50ls+forecast:2" --inject 0.003@0.5
./target/release/fd compare --out out/probe \
  --labels "DDIM-50 (baseline),50ls + injection,50ls+forecast:1 + injection,50ls+forecast:2 + injection" \
  out/probe/base out/probe/ls out/probe/f1 out/probe/f2
