#!/usr/bin/env bash
# Build the fd binary against another (older) libtorch than the supported 2.13.0, for a machine
# whose PyTorch cannot be changed (how the H100 check in results/gpu-check/ was run: that machine
# had torch 2.11.0 and no network).
#
#   scripts/build_for_libtorch.sh TORCH_DIR [TARGET_DIR]
#
# TORCH_DIR: a torch package folder holding include/ and lib/ (e.g. unzip a torch wheel of the
# machine's version: `pip download --no-deps torch==2.11.0 && unzip -q torch-*.whl 'torch/*'`).
# tch 0.26 wraps ops that older libtorch lacks; this copies torch-sys 0.26 to TARGET_DIR/torch-sys,
# removes each wrapper the compiler rejects (fd calls none of them), and builds with
# LIBTORCH_BYPASS_VERSION_CHECK=1 in a copy of the workspace (Cargo.lock stays untouched).
# Run the result with that libtorch on LD_LIBRARY_PATH (experiments/gpu/gpu_session.py does).
set -euo pipefail
TORCH_DIR=$(realpath "${1:?usage: $0 TORCH_DIR [TARGET_DIR]}")
OUT=$(realpath -m "${2:-/tmp/fd-libtorch-build}")
[ -d "$TORCH_DIR/include" ] && [ -d "$TORCH_DIR/lib" ] || { echo "$TORCH_DIR: expected include/ and lib/"; exit 1; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$HOME/.cargo/bin:$PATH"
unset LIBTORCH_USE_PYTORCH VIRTUAL_ENV
export LIBTORCH="$TORCH_DIR" LIBTORCH_BYPASS_VERSION_CHECK=1 CARGO_TARGET_DIR="$OUT/target"
export CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo

torch_sys_src() { find "$HOME/.cargo/registry/src" -maxdepth 2 -type d -name 'torch-sys-0.26.*' | head -1; }
[ -n "$(torch_sys_src)" ] || (cd "$ROOT" && cargo fetch)
SRC=$(torch_sys_src)
mkdir -p "$OUT" && rm -rf "$OUT/torch-sys" "$OUT/ws" && cp -r "$SRC" "$OUT/torch-sys"
mkdir "$OUT/ws" && (cd "$ROOT" && tar --exclude=./target --exclude=./out --exclude=./.git --exclude=./.gpu_in -cf - .) | tar -xf - -C "$OUT/ws"

build() { (cd "$OUT/ws" && cargo build --release -p fd-cli \
  --config "patch.crates-io.torch-sys.path=\"$OUT/torch-sys\"" 2>&1 | tee "$OUT/build.log" | grep -E '^(error|\s+Finished)' || true); }
for attempt in 1 2 3; do
  build
  [ -x "$OUT/target/release/fd" ] && grep -q Finished "$OUT/build.log" && break
  missing=$(grep -o "In function '[^(]*" "$OUT/build.log" | grep -o 'atg_[A-Za-z0-9_]*' | sort -u)
  [ -n "$missing" ] || { echo "build failed for another reason: $OUT/build.log"; exit 1; }
  echo "removing $(echo "$missing" | wc -l) op wrappers this libtorch lacks: $(echo $missing)"
  python3 - "$OUT/torch-sys/libtch/torch_api_generated.cpp" $missing <<'EOF'
import re, sys
path, names = sys.argv[1], set(sys.argv[2:])
lines, out, i = open(path).read().split("\n"), [], 0
while i < len(lines):
    m = re.match(r"^\S.*\b(atg_\w+)\(", lines[i])
    if m and m.group(1) in names and not lines[i].rstrip().endswith(";"):
        while lines[i] != "}":
            i += 1
        i += 1
        continue
    out.append(lines[i])
    i += 1
open(path, "w").write("\n".join(out))
EOF
done
[ -x "$OUT/target/release/fd" ] || { echo "no binary; see $OUT/build.log"; exit 1; }
echo "built $OUT/target/release/fd against $TORCH_DIR"
