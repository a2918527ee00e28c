# fd task runner. Every recipe sources scripts/env.sh (venv with torch 2.13.0, LIBTORCH_USE_PYTORCH=1).
set shell := ["bash", "-euo", "pipefail", "-c"]

env := "source scripts/env.sh &&"
model := env_var_or_default("MODEL", "models/fmnist")

# The main job (README quick start): baseline DDIM-50 vs encoder propagation on the default model.
[group("main")]
[doc("The main job: baseline vs encoder propagation on the default model (just demo).")]
default: demo

# Install what fd needs (idempotent): just, Fashion-MNIST, the venv with torch 2.13.0 and friends.
[group("setup")]
[doc("Install what fd needs (idempotent): just, Fashion-MNIST, the venv with torch 2.13.0.")]
setup:
    bash scripts/setup.sh

# The main job (README quick start) on the default model, DDIM-50 with CFG 3, N samples: the
# baseline, the paper's 50ls with prior noise injection, uniform:2 (encoder propagation that keeps
# more quality on this model) and DeepCache for contrast, each with the decoding that is fastest here
# (--decode auto); then the four plans timed side by side in one process (fd bench, 16 samples, repeated
# until the repeats agree; flagged when something disturbed them) and one table (speed from that bench,
# GFLOPs, class consistency) and out/demo/compare.png.
[group("main")]
[doc("Baseline DDIM-50 vs 50ls, uniform:2 and DeepCache on the default model: one table and figure.")]
demo N="80": setup build
    {{env}} ./target/release/fd info {{model}}
    {{env}} ./target/release/fd sample --model {{model}} --steps 50 --cfg 3 --n {{N}} --batch 40 --overwrite --out out/demo/baseline --keys none
    {{env}} ./target/release/fd sample --model {{model}} --steps 50 --cfg 3 --n {{N}} --batch 40 --overwrite --out out/demo/50ls --keys 50ls --inject 0.003@0.5
    {{env}} ./target/release/fd sample --model {{model}} --steps 50 --cfg 3 --n {{N}} --batch 40 --overwrite --out out/demo/uniform2 --keys uniform:2 --inject 0.003@0.5
    {{env}} ./target/release/fd sample --model {{model}} --steps 50 --cfg 3 --n {{N}} --batch 40 --overwrite --out out/demo/deepcache --keys deepcache:2:1
    {{env}} ./target/release/fd bench --model {{model}} --steps 50 --cfg 3 --n 16 --repeats 3 --inject 0.003@0.5 --plans none,50ls,uniform:2,deepcache:2:1 --out out/demo/bench > /dev/null
    {{env}} ./target/release/fd compare --out out/demo --timings out/demo/bench/bench.json --labels "DDIM-50 (baseline),50ls + injection (paper),uniform:2 + injection,DeepCache N=2 (peer)" \
        out/demo/baseline out/demo/50ls out/demo/uniform2 out/demo/deepcache
    @echo "next: just reproduce-table1   (the paper's Table 1 on this model: FID, KID, consistency, GFLOPs, s/image)"
    @echo "      just drift              (the paper's Fig. 3: how fast encoder and decoder features change over the steps)"

[group("setup")]
[doc("Build the fd binary (release).")]
build: setup
    {{env}} cargo build --release -p fd-cli

# The test suite (what CI runs).
[group("setup")]
[doc("Run the whole test suite, fixtures first (what CI runs).")]
test: setup
    {{env}} python experiments/tests/make_sd_tiny.py target/fixtures/sd-tiny
    {{env}} python experiments/tests/make_clip_tiny.py target/fixtures/clip-tiny
    {{env}} python experiments/tests/make_families.py target/fixtures/families
    {{env}} python experiments/tests/make_aoti.py crates/fd-model/tests/fixtures/tiny target/fixtures/tiny-aoti --max-batch 64
    {{env}} python experiments/tests/make_aoti.py models/fmnist target/fixtures/fmnist-aoti --graphs all
    {{env}} python experiments/tests/make_aoti.py target/fixtures/families/dit/checkpoint target/fixtures/dit-aoti --dit
    {{env}} cargo test --workspace
    {{env}} python -m pytest -q experiments/tests
    just docs

# Each experiment's book page (docs/results/generated/) rendered from its newest committed results folder.
[group("setup")]
[doc("Render each experiment's book page from its newest results folder (just docs checks they are current).")]
results-pages:
    {{env}} python scripts/render_results.py

# The book (docs/, mdBook 0.4, installed from crates.io the first time): built into target/book/docs/,
# with the repository folders its pages link to linked beside it; every link checked first.
[group("setup")]
[doc("Build the book (docs/) into target/book/docs/ after checking every link of it and of README.md.")]
docs:
    {{env}} python scripts/render_results.py --check
    {{env}} python scripts/check_docs.py
    command -v mdbook >/dev/null 2>&1 || cargo install --locked mdbook --version 0.4.52 --no-default-features --features search
    mdbook build docs
    for p in results crates models experiments notebooks scripts justfile README.md; do ln -sfn "../../$p" "target/book/$p"; done
    @echo "book: target/book/docs/index.html"

# Generated bad input thrown at the CLI (crates/fd-cli/tests/fuzz.rs; `just test` runs 40 cases).
[group("setup")]
[doc("Throw N generated bad inputs at the CLI (the test suite runs 40).")]
fuzz-cli N="400" SEED="2026": setup
    {{env}} FD_FUZZ_N={{N}} FD_FUZZ_SEED={{SEED}} cargo test --workspace --test fuzz -- --nocapture

# Formatting and lints, as CI expects them clean.
[group("setup")]
[doc("Check formatting and lints: rustfmt, clippy -D warnings, ruff.")]
lint: setup
    {{env}} ruff check experiments
    {{env}} cargo fmt --all --check
    {{env}} cargo clippy --workspace --all-targets -- -D warnings

# Compare two fd binaries on a fixed set of commands covering every caching method (samples byte for
# byte, records without timings), e.g. before and after a refactor: scripts/behaviour_check.sh.
[group("setup")]
[doc("Compare two fd binaries on every method: samples byte for byte, records without timings.")]
behaviour-check OLD NEW="target/release/fd":
    {{env}} bash scripts/behaviour_check.sh {{OLD}} {{NEW}}

# Regenerate the committed test fixtures (tiny random-init models + diffusers reference outputs).
[group("setup")]
[doc("Regenerate the committed test fixtures and their diffusers references.")]
fixtures: setup
    {{env}} python crates/fd-model/tests/fixtures/gen_fixtures.py
    {{env}} python crates/fd-sched/tests/fixtures/gen_golden.py

# Train the default model (resumable; checkpoints under $FD_CACHE/train/fmnist), then export it.
[group("models")]
[doc("Train the default UNet on Fashion-MNIST (resumable), then export it.")]
train-default STEPS="8000": setup
    {{env}} python experiments/train/train_fmnist.py --run-dir "$FD_CACHE/train/fmnist" --steps {{STEPS}}
    just export-default

# Train the second default model (issue 19): a small class-conditional DiT on Fashion-MNIST
# (resumable; checkpoints under $FD_CACHE/train/fmnist-dit; about 1.4 s/step on 2 cores).
[group("models")]
[doc("Train the default DiT on Fashion-MNIST (resumable).")]
train-dit STEPS="4000": setup
    {{env}} python experiments/train/train_dit.py --run-dir "$FD_CACHE/train/fmnist-dit" --steps {{STEPS}}

# Export the default model's EMA weights from the training checkpoint into models/fmnist.
[group("models")]
[doc("Export the default UNet's EMA weights into models/fmnist.")]
export-default: setup
    {{env}} python experiments/export/export_unet.py --checkpoint "$FD_CACHE/train/fmnist/checkpoint.pt" --out models/fmnist

# Export the default DiT's EMA weights from its training checkpoint into models/fmnist-dit (split at
# the authors' 18/28 ratio: 4 of its 6 blocks in the encoder).
[group("models")]
[doc("Export the default DiT's EMA weights into models/fmnist-dit.")]
export-default-dit: setup
    {{env}} python experiments/export/export_dit.py --train-checkpoint "$FD_CACHE/train/fmnist-dit/checkpoint.pt" --out models/fmnist-dit

# PAB's graphs (pab.pt) for the committed default DiT, from the training checkpoint it was exported from (`just train-dit`):
# checked against the export's own encoder graph before anything is written.
[group("models")]
[doc("Add PAB's graphs to models/fmnist-dit from its training checkpoint.")]
add-dit-pab: setup
    {{env}} python experiments/add/add_dit_pab.py --model models/fmnist-dit --train-checkpoint "$FD_CACHE/train/fmnist-dit/checkpoint.pt"

# Experiment overrides from the environment: N, MODEL, PROMPTS, REF (named set or .npz), CFG, DEVICE.
exp_flags := '${N:+--n $N} ${MODEL:+--model $MODEL} ${PROMPTS:+--prompts $PROMPTS} ${REF:+--ref $REF} ${CFG:+--cfg $CFG} ${DEVICE:+--device $DEVICE}'

# The paper's Table 1 on the default model (rows resume if interrupted). SD-1.5 protocol on a GPU:
# N=10000 MODEL=models/sd15 PROMPTS=coco10k.txt REF=coco_val2017.npz CFG=7.5 DEVICE=cuda just reproduce-table1
[group("experiments")]
[doc("The paper's Table 1 on the default model (rows resume if interrupted).")]
reproduce-table1 *ARGS: build default-tome
    {{env}} ./target/release/fd experiment experiments/configs/table1.json {{exp_flags}} {{ARGS}}

# The default model re-exported with token merging (ToMe ratio 0.5 at its 14x14 and 7x7 attention;
# tomesd 0.1.3, fixed partition) into models/fmnist-tome, for Table 1's ToMe rows (built once, ~1 min).
[group("models")]
[doc("Re-export the default model with token merging into models/fmnist-tome.")]
default-tome: setup
    {{env}} if [ ! -f models/fmnist-tome/manifest.json ] || ! grep -q "$(sha256sum models/fmnist/unet_weights.safetensors | cut -c1-64)" models/fmnist-tome/manifest.json; then \
        rm -rf models/fmnist-tome && python experiments/export/export_tome.py --model models/fmnist --out models/fmnist-tome --ratio 0.5 --max-downsample 4; \
    else echo "models/fmnist-tome: up to date"; fi

# The paper's DeepFloyd-IF row, stage I, on a user's export (experiments/export/export_if.py), e.g.
# MODEL=models/if-i-xl PROMPTS=coco10k.txt REF=coco2017_val_64px.npz DEVICE=cuda just reproduce-table1-if
[group("experiments")]
[doc("The paper's DeepFloyd-IF row (stage I) on a user's export.")]
reproduce-table1-if *ARGS: build
    {{env}} ./target/release/fd experiment experiments/configs/table1_if.json {{exp_flags}} {{ARGS}}

# Table 1's DiT rows on the default DiT (models/fmnist-dit): DDIM-50 and DDPM-250 with and without
# encoder propagation (the authors' 166-of-250 DiT key steps, injection after the step while t < 300).
[group("experiments")]
[doc("Table 1's DiT rows on the default DiT.")]
reproduce-table1-dit *ARGS: build
    {{env}} ./target/release/fd experiment experiments/configs/table1_dit.json {{exp_flags}} {{ARGS}}

# The paper's Table 5 (uniform, 50ls-family and drift-calibrated auto:K plans, DeepCache) + Pareto plots.
[group("experiments")]
[doc("The paper's Table 5: key-step sets, auto:K and DeepCache, with Pareto plots.")]
ablate-keysteps *ARGS: build
    {{env}} ./target/release/fd experiment experiments/configs/ablate_keysteps.json {{exp_flags}} {{ARGS}}

# Prior noise injection off / paper default / sweep of c, and parallel vs sequential decoding.
[group("experiments")]
[doc("Prior noise injection off, the paper's c and a sweep; parallel vs sequential.")]
ablate-injection *ARGS: build
    {{env}} ./target/release/fd experiment experiments/configs/ablate_injection.json {{exp_flags}} {{ARGS}}

# The same ablation on the default DiT (models/fmnist-dit; DeepCache does not apply to a DiT).
[group("experiments")]
[doc("The key-step ablation on the default DiT.")]
ablate-keysteps-dit *ARGS: build
    {{env}} ./target/release/fd experiment experiments/configs/ablate_keysteps_dit.json {{exp_flags}} {{ARGS}}

# DeepCache vs encoder propagation at comparable GFLOPs (the paper's Table 2 question).
[group("experiments")]
[doc("DeepCache vs encoder propagation at comparable GFLOPs (Table 2's question).")]
deepcache-vs-ours *ARGS: build
    {{env}} ./target/release/fd experiment experiments/configs/deepcache_vs_ours.json {{exp_flags}} {{ARGS}}

# Beyond the paper (issue 21): forecast, partial propagation and runtime key steps at two or three budgets against
# 50ls, auto:9 and DeepCache N=3 on the default model, N = 1000, Pareto plots.
[group("experiments")]
[doc("Forecast, partial propagation and run-time key steps on the default model.")]
ablate-beyond *ARGS: build
    {{env}} ./target/release/fd experiment experiments/configs/ablate_beyond.json {{exp_flags}} {{ARGS}}

# Issue 21's winners on the default DiT (forecast and runtime key steps; partial propagation is UNet-only) beside
# 50ls, uniform:2 and auto:9, N = 1000; rows equal to compare-caches-dit's are adopted from it.
[group("experiments")]
[doc("The extensions that apply to a DiT, on the default DiT.")]
ablate-beyond-dit *ARGS: build
    {{env}} ./target/release/fd experiment experiments/configs/ablate_beyond_dit.json {{exp_flags}} {{ARGS}}

# Every training-free caching method fd runs (encoder propagation, DeepCache, AdaptiveDiffusion, TeaCache,
# FBCache, T-GATE) at about three budgets on the default model, N = 1000, with Pareto plots (issue 20).
[group("experiments")]
[doc("Every caching method fd runs at about three budgets on the default model.")]
compare-caches *ARGS: build
    {{env}} ./target/release/fd experiment experiments/configs/compare_caches.json {{exp_flags}} {{ARGS}}

# The caching methods that apply to a DiT (encoder propagation, AdaptiveDiffusion, TeaCache / FBCache in their DiT form,
# diffusers' MagCache, TaylorSeer, PAB and FasterCache) on the default DiT (models/fmnist-dit, `just export-default-dit`;
# PAB / FasterCache need its PAB graphs: `just add-dit-pab`).
[group("experiments")]
[doc("The caching methods that apply to a DiT, on the default DiT.")]
compare-caches-dit *ARGS: build
    {{env}} ./target/release/fd experiment experiments/configs/compare_caches_dit.json {{exp_flags}} {{ARGS}}

# Baseline vs encoder propagation (auto = the default, uncapped parallel, sequential, capped) vs DeepCache, side by side in one
# process on the default model; writes results/bench-sampling/<date>-<machine>/bench.{md,json}.
[group("bench")]
[doc("Plans timed side by side in one process on the default model.")]
bench-sampling N="16" REPEATS="3": build
    {{env}} ./target/release/fd bench --model {{model}} --steps 50 --cfg 3 --n {{N}} --repeats {{REPEATS}} \
        --plans none,50ls,50ls@par,50ls@seq,50ls@cap96,uniform:3,deepcache:3:1 --inject 0.003@0.5 \
        --out "results/bench-sampling/$(date +%F)-${FD_MACHINE:-$(nproc)core-$(uname -m)}"

# Per-row cost of one decoder / encoder call vs rows per call (why uncapped parallel decoding is
# slow on a CPU); writes results/bench-decoder-rows/<date>-<machine>/rows.{md,json}.
[group("bench")]
[doc("Per-row cost of one decoder / encoder call against rows per call.")]
bench-decoder-rows: setup
    {{env}} python experiments/bench/bench_decoder_rows.py --model {{model}}

# Every prepared GPU check in one command, within a 10-minute budget (experiments/gpu/gpu_session.py): the
# environment, the default model CPU vs GPU, random-init SD-1.5 / SDXL / ControlNet / DiT-XL/2 / text-to-video at
# their real sizes timed side by side with `fd bench`, AOTInductor vs TorchScript, the peer methods, ToMe,
# determinism. One report folder (out/gpu/<date>-<host>/summary.md); sections the budget cannot hold are skipped
# and named. `just gpu --only sd15,sdxl`, `--budget 1200`, `--smoke` (CPU, tiny widths: what CI runs).
[group("gpu")]
[doc("Every prepared GPU check within 10 minutes, into one report folder (out/gpu/<date>-<host>/).")]
gpu *ARGS: build
    {{env}} python experiments/gpu/gpu_session.py {{ARGS}}

# What a GPU machine without network needs from this one: the release binary and the CLIP tokenizer folders
# (out/sd15-tokenizer*). Carry them with the tree and run `python3 experiments/gpu/gpu_session.py` there.
[group("gpu")]
[doc("Build what an offline GPU machine needs for `just gpu` (binary, tokenizer folders).")]
gpu-prepare: build
    {{env}} python experiments/gpu/gpu_session.py --prepare

# AOTInductor packages for a 2-D UNet export: a converted copy of the default model in OUT with
# packages of all its graphs compiled for this machine (-march=native; the loop graphs' committed
# x86-64-v3 packages are kept when they run here; about four minutes on 2 cores; needs g++).
# `--format auto` (the default) runs them when they run here.
[group("models")]
[doc("Compile AOTInductor packages of every graph of the default model into out/models/fmnist-aoti.")]
convert-aoti OUT="out/models/fmnist-aoti": setup
    rm -rf {{OUT}}
    {{env}} python experiments/export/convert_aoti.py --model {{model}} --out {{OUT}} --graphs all

# Rust harness vs the Python diffusers loop (eager UNet2DConditionModel + DDIMScheduler, and the
# same UNet under torch.compile) on the same exported model, fd with TorchScript and with the
# AOTInductor packages the default model ships, interleaved repeats; writes
# results/bench-harness/<date>-<machine>/.
[group("bench")]
[doc("The Rust harness (TorchScript, AOTInductor) vs the Python loop (eager, torch.compile).")]
bench-harness N="16" REPEATS="3": build
    {{env}} python experiments/bench/bench_harness.py --model {{model}} --n {{N}} --repeats {{REPEATS}} \
        --out "results/bench-harness/$(date +%F)-${FD_MACHINE:-$(nproc)core-$(uname -m)}"

# The graph formats side by side in one fd process: the baseline and the paper's 50ls, each on
# TorchScript and on AOTInductor; writes results/bench-aoti/<date>-<machine>/.
[group("bench")]
[doc("TorchScript vs AOTInductor graphs, baseline and 50ls, in one fd process.")]
bench-aoti N="16" REPEATS="3": build
    {{env}} target/release/fd bench --model {{model}} --steps 50 --cfg 3 --n {{N}} --repeats {{REPEATS}} \
        --plans "none#torchscript,none#aoti,50ls#torchscript,50ls#aoti" \
        --out "results/bench-aoti/$(date +%F)-${FD_MACHINE:-$(nproc)core-$(uname -m)}"

# All benchmarks: criterion micro-benches (scheduler step, Frechet distance 2048-d, plan
# construction), Rust vs Python harness, and the plan speedups vs their FLOPs bound.
[group("bench")]
[doc("All benchmarks: micro-benches, harness vs Python, plan speedups.")]
bench: build
    just bench-micro
    just bench-harness
    just bench-sampling

# Criterion micro-benches (scheduler step, plan construction, 2048-d Frechet distance); the report
# is kept in results/criterion/<date>-<machine>/criterion.txt (HTML under target/criterion).
[group("bench")]
[doc("Criterion micro-benches (scheduler step, plan parsing, Frechet distance).")]
bench-micro: build
    mkdir -p "results/criterion/$(date +%F)-${FD_MACHINE:-$(nproc)core-$(uname -m)}"
    {{env}} cargo bench -p fd-sched -p fd-eval 2>&1 \
        | grep -v -E '^\s*(Compiling|Running|Finished|Benchmarking .*: (Warming|Collecting|Analyzing))' \
        | tee "results/criterion/$(date +%F)-${FD_MACHINE:-$(nproc)core-$(uname -m)}/criterion.txt"

# Where `just model-card` puts its samples.
card := "out/card/" + file_name(model)

# Measure a default model (MODEL=models/fmnist or models/fmnist-dit) and write its card (README.md, loss.png, sample grid):
# DDIM-50 + CFG, N samples balanced over the 10 classes, class consistency and FID/KID.
[group("models")]
[doc("Measure a default model (MODEL=...) and write its card.")]
model-card N="1000": build
    {{env}} ./target/release/fd sample --model {{model}} --steps 50 --cfg 3 --n {{N}} --batch 100 --resume --out {{card}}
    {{env}} ./target/release/fd eval consistency --samples {{card}}
    {{env}} ./target/release/fd eval fid --samples {{card}} --ref fmnist-test
    {{env}} python experiments/train/model_card.py --model {{model}} --run-dir "$FD_CACHE/train/{{file_name(model)}}" --samples {{card}}

# Feature drift of every encoder / decoder layer on the default model (the paper's Fig. 3 numbers)
# and a drift-calibrated 9-key-step plan (another MODEL writes under results/drift-<model folder name>/);
# writes results/drift/<date>-<machine>/.
[group("experiments")]
[doc("Feature drift of every layer (the paper's Fig. 3) and an auto:9 plan.")]
drift N="8": build
    {{env}} ./target/release/fd drift --model {{model}} --steps 50 --cfg 3 --n {{N}} --save-plan auto:9 \
        --out "results/drift{{ if model == "models/fmnist" { "" } else { "-" + file_name(model) } }}/$(date +%F)-${FD_MACHINE:-$(nproc)core-$(uname -m)}"
