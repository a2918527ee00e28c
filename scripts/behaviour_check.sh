#!/usr/bin/env bash
# Behaviour check for refactors: run one fixed set of commands covering every caching method (UNet
# and DiT, every plan modifier, auto:K, a plan file, drift, an experiment whose second config adopts
# a row of the first, bench) with two fd binaries, then compare their outputs: samples and PNGs
# byte for byte, JSON records and CSV tables with timing fields left out
# (scripts/behaviour_compare.py). Exit 0 only if everything matches.
#
#   bash scripts/behaviour_check.sh OLD_FD NEW_FD [WORKDIR]
#
# e.g. build the pre-change tree in a git worktree, copy its target/release/fd to /tmp/fd-old, then
# `bash scripts/behaviour_check.sh /tmp/fd-old target/release/fd`. About 10 minutes on 2 cores.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
source "$here/env.sh"
old="$(realpath "$1")"; new="$(realpath "$2")"
work="${3:-$(mktemp -d /tmp/fd-behaviour.XXXXXX)}"
mkdir -p "$work"
unet="$root/models/fmnist"; dit="$root/models/fmnist-dit"
ref="$work/ref.npz"
python - "$ref" <<'PY'
import sys, numpy as np
rng = np.random.default_rng(7)
f = rng.random((16, 2048))
np.savez(sys.argv[1], mu=f.mean(0), sigma=np.cov(f, rowvar=False), n=np.array([16]))
PY

# the commands, each run as `fd ARGS` inside <work>/<which>/ (so every recorded path is the same)
cmds=()
s() { cmds+=("sample $*"); }
u="--model $unet --steps 10 --cfg 3 --n 4 --batch 2"
d="--model $dit --steps 10 --cfg 3 --n 2 --batch 2"
s $u --out u/none --keys none
s $u --out u/50ls --keys 50ls --inject 0.003@0.5 --decode parallel
s $u --out u/uniform3-seq --keys uniform:3 --decode sequential
s $u --out u/list-cap --keys 0,1,5 --decode parallel --max-decoder-batch 8
s $u --out u/forecast1 --keys uniform:3+forecast:1 --decode parallel
s $u --out u/forecast2 --keys uniform:2+forecast:2 --decode sequential
s $u --out u/partial0 --keys 50ls+partial:0
s $u --out u/runtime --keys runtime:4 --decode parallel
s $u --out u/runtime-forecast --keys runtime:4+forecast:1 --decode parallel
s $u --out u/auto --keys auto:3 --calibration-n 2 --decode parallel
s $u --out u/auto-forecast --keys auto:3+forecast:1 --calibration-n 2 --decode parallel
s $u --out u/auto-partial --keys auto:3+partial:0 --calibration-n 2
s $u --out u/decoder-prop --keys decoder-prop:uniform:3
s $u --out u/deepcache --keys deepcache:2
s $u --out u/deepcache-id --keys deepcache:3:0
s $u --out u/deepcache-block --keys deepcache-block:2:1
s $u --out u/adaptive --keys adaptive:0.05
s $u --out u/adaptive-m --keys adaptive:0.05:2
s $u --out u/teacache --keys teacache:0.1
s $u --out u/teacache-res --keys teacache:0.1:residual
s $u --out u/fbcache --keys fbcache:0.1
s $u --out u/fbcache-res --keys fbcache:0.1:residual
s $u --out u/tgate --keys tgate:5
s $u --out u/tgate-full --keys tgate:5:2:1:1
s --model $unet --steps 10 --scheduler ddpm --n 2 --batch 2 --out u/ddpm --keys uniform:2 --inject 0.003@0.3:after
cmds+=("drift --model $unet --steps 10 --n 2 --save-plan auto:4 --out u/drift")
s $u --out u/planfile --keys u/drift/plan.json --decode parallel
s $d --out t/none --keys none
s $d --out t/50ls --keys 50ls --decode parallel
s $d --out t/forecast --keys uniform:2+forecast:1 --decode parallel
s $d --out t/runtime --keys runtime:4 --decode sequential
s $d --out t/decoder-prop --keys decoder-prop:uniform:2
s $d --out t/adaptive --keys adaptive:0.05
s $d --out t/teacache --keys teacache:0.1
s $d --out t/fbcache --keys fbcache:0.1
cat > "$work/exp_a.json" <<JSON
{ "name": "a", "model": "$unet", "n": 4, "batch": 2, "guidance": 3.0, "reference": "$ref", "calibration_n": 2,
  "rows": [ { "label": "DDIM-6", "steps": 6 }, { "label": "tgate", "steps": 6, "keys": "tgate:3", "baseline": "DDIM-6" } ] }
JSON
cat > "$work/exp_b.json" <<JSON
{ "name": "b", "model": "$unet", "n": 4, "batch": 2, "guidance": 3.0, "reference": "$ref", "calibration_n": 2, "pareto": true,
  "rows": [
    { "label": "baseline", "steps": 6 },
    { "label": "ours", "steps": 6, "keys": "uniform:2", "inject": "0.003@0.5", "baseline": "baseline" },
    { "label": "auto", "steps": 6, "keys": "auto:2+forecast:1", "baseline": "baseline" },
    { "label": "dc", "steps": 6, "keys": "deepcache:2", "baseline": "baseline" },
    { "label": "tc", "steps": 6, "keys": "teacache:0.1", "baseline": "baseline" },
    { "label": "dp", "steps": 6, "keys": "decoder-prop:uniform:2", "baseline": "baseline", "family": "decoder-only" }
  ] }
JSON
cmds+=("experiment $work/exp_a.json --out e/res/a --work e/work/a")
cmds+=("experiment $work/exp_b.json --out e/res/b --work e/work/b --reuse-from e/work")
cmds+=("bench --model $unet --steps 10 --cfg 3 --n 2 --repeats 1 --plans none,50ls@seq,50ls@cap8,deepcache:2,teacache:0.1,tgate:5,adaptive:0.05 --out bench")

for which in old new; do
  bin="$old"; [ "$which" = new ] && bin="$new"
  mkdir -p "$work/$which"
  for c in "${cmds[@]}"; do
    # shellcheck disable=SC2086
    if ! (cd "$work/$which" && "$bin" $c > /dev/null 2> "$work/$which.last.err"); then
      echo "[$which] failed: fd $c"; cat "$work/$which.last.err"; exit 1
    fi
  done
  (cd "$work/$which" && "$bin" info "$unet" > info-unet.txt && "$bin" info "$dit" > info-dit.txt)
  echo "[$which] ${#cmds[@]} commands done"
done
python "$here/behaviour_compare.py" "$work/old" "$work/new"
