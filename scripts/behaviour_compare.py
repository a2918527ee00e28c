"""Compare two trees of fd outputs (scripts/behaviour_check.sh): every file must exist in both;
samples (.safetensors), PNGs, .npz and other binary files byte for byte; JSON with timing and
machine fields removed; CSV with timing columns removed; text files (fd info) are reported, not
failed (their wording may change). Prints every difference; exit 1 if any file differs."""
import csv
import json
import sys
from pathlib import Path

# fields that measure time (or are computed from a time) or name the process, not what was computed
SKIP = {"timings", "machine", "versions", "command", "speedup", "ftc", "calibration", "reason", "date"}


def timed(key: str) -> bool:
    return key in SKIP or key.endswith("_s") or "s_per_image" in key or key.startswith("time_")


def strip(v):
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items() if not timed(k)}
    if isinstance(v, list):
        return [strip(x) for x in v]
    return v


def table(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return rows
    keep = [i for i, h in enumerate(rows[0]) if not timed(h)]
    return [[r[i] for i in keep if i < len(r)] for r in rows]


def main(a: Path, b: Path) -> int:
    fa = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    fb = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    bad = 0
    for p in sorted(fa ^ fb):
        print(f"only in {'old' if p in fa else 'new'}: {p}")
        bad += 1
    checked = 0
    for p in sorted(fa & fb):
        x, y = a / p, b / p
        if p.name.endswith(".err") or p.name == ".fd-lock":
            continue
        if p.suffix == ".json":
            same = strip(json.loads(x.read_text())) == strip(json.loads(y.read_text()))
        elif p.suffix == ".csv":
            same = table(x) == table(y)
        elif p.suffix in (".txt", ".md", ".svg"):
            if x.read_bytes() != y.read_bytes():
                print(f"note: {p} differs (text; not compared)")
            continue
        elif p.suffix == ".png" and p.name.startswith("pareto_"):
            continue  # plots of timings
        else:
            same = x.read_bytes() == y.read_bytes()
        checked += 1
        if not same:
            print(f"DIFFERS: {p}")
            bad += 1
    print(f"{checked} files compared, {bad} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
