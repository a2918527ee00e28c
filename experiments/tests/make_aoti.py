"""A model folder with AOTInductor packages for its UNet graphs, for the format-parity tests:

  python experiments/tests/make_aoti.py crates/fd-model/tests/fixtures/tiny target/fixtures/tiny-aoti --max-batch 64
  python experiments/tests/make_aoti.py models/fmnist target/fixtures/fmnist-aoti --graphs all
  python experiments/tests/make_aoti.py target/fixtures/families/dit/checkpoint target/fixtures/dit-aoti --dit

(crates/fd-run/tests/aoti.rs; crates/fd-sched/tests/default_model.rs). The default model's
committed packages (its loop graphs) are kept as they are when they run here, so the fixture
tests them; the other graphs are compiled. With `--dit`, MODEL is a
diffusers DiTPipeline folder exported with `export_dit_folder(..., aoti=True)` (packages compiled
at export from the eager modules). Rebuilt only when this
script, the source folder or an fd_export module changed (stamp file); compiling takes about a
minute per graph on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import os
import shutil

from fd_export.aoti import MAX_BATCH, convert
from fd_export.testing import fixture_stamp, write_stamp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--max-batch", type=int, default=MAX_BATCH)
    ap.add_argument("--dit", action="store_true", help="MODEL is a diffusers DiTPipeline folder")
    ap.add_argument("--graphs", help="as convert_aoti.py --graphs (e.g. `all`)")
    a = ap.parse_args()
    sources = [os.path.abspath(__file__)] + sorted(
        os.path.join(d, f) for d, _, files in os.walk(a.model) for f in files
    )
    stamp = fixture_stamp(a.out, sources)
    if stamp is None:
        return
    shutil.rmtree(a.out, ignore_errors=True)
    if a.dit:
        from fd_export.dit import export_dit_folder

        export_dit_folder(a.model, a.out, "cpu", "float32", name="dit-aoti-tiny", aoti=True)
    else:
        convert(a.model, a.out, a.graphs.split(",") if a.graphs else None, max_batch=a.max_batch)
    write_stamp(a.out, stamp)


if __name__ == "__main__":
    main()
