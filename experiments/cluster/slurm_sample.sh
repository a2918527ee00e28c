#!/bin/bash
# Sharded sampling + FID on a Slurm cluster: one array task per GPU, each generating a disjoint
# block of the samples, then one dependent job merging the shards and computing FID.
#
#   sbatch --array=0-7 experiments/cluster/slurm_sample.sh            # 8 shards
#   sbatch --dependency=afterok:<array job id> --export=ALL,MERGE=1 experiments/cluster/slurm_sample.sh
#
# Edit the variables below (or pass them with --export). A task that dies can simply be
# resubmitted: `--resume` keeps every finished batch, byte-identical.
#SBATCH --job-name=fd-sample
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --output=slurm-%A_%a.out
set -euo pipefail

MODEL=${MODEL:-models/sd15}
PROMPTS=${PROMPTS:-coco2017_val_10k_captions.txt}
REF=${REF:-coco2017_val_inception.npz}
N=${N:-10000}
KEYS=${KEYS:-50ls}
OUT=${OUT:-out/slurm/ddim50-$KEYS}
SHARDS=${SLURM_ARRAY_TASK_COUNT:-8}

source scripts/env.sh
if [[ -n "${MERGE:-}" ]]; then
    shards=()
    for ((i = 0; i < SHARDS; i++)); do shards+=("$OUT/shard$i"); done
    ./target/release/fd merge --out "$OUT/all" "${shards[@]}"
    ./target/release/fd eval fid --samples "$OUT/all" --ref "$REF" --device cuda
    exit 0
fi

i=${SLURM_ARRAY_TASK_ID:?run as an array job (sbatch --array=0-N)}
# Slurm sets CUDA_VISIBLE_DEVICES to the task's GPU, which fd sees as cuda:0.
./target/release/fd sample --model "$MODEL" --prompts "$PROMPTS" --scheduler ddim --steps 50 \
    --keys "$KEYS" --parallel --inject 0.003@0.5 --cfg 7.5 --n "$N" --batch 16 --device cuda \
    --shard "$i/$SHARDS" --resume --out "$OUT/shard$i"
# cache this shard's Inception features next to its batches (fd merge carries them over)
./target/release/fd eval fid --samples "$OUT/shard$i" --ref "$REF" --device cuda
