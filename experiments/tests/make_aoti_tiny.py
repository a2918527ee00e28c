"""The tiny fixture model (crates/fd-model/tests/fixtures/tiny) with AOTInductor packages for its
UNet graphs, for the format-parity tests (crates/fd-run/tests/aoti.rs):

  python experiments/tests/make_aoti_tiny.py target/fixtures/tiny-aoti

Rebuilt only when this script, the tiny fixture or an fd_export module changed (stamp file);
compiling takes a few minutes on a 2-core CPU.
"""
from __future__ import annotations

import os
import shutil
import sys

from fd_export.aoti import convert
from fd_export.testing import fixture_stamp, write_stamp

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.join(HERE, "..", "..", "crates", "fd-model", "tests", "fixtures", "tiny")


def main(out: str) -> None:
    sources = [os.path.abspath(__file__)] + [os.path.join(TINY, f) for f in sorted(os.listdir(TINY))]
    stamp = fixture_stamp(out, sources)
    if stamp is None:
        return
    shutil.rmtree(out, ignore_errors=True)
    convert(TINY, out, max_batch=64)
    write_stamp(out, stamp)


if __name__ == "__main__":
    main(sys.argv[1])
