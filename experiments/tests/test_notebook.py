"""notebooks/results.ipynb runs top to bottom on the committed results (headless matplotlib)."""

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[2]


def test_results_notebook_executes():
    nb = json.loads((ROOT / "notebooks" / "results.ipynb").read_text())
    code = [("".join(c["source"])) for c in nb["cells"] if c["cell_type"] == "code"]
    assert len(code) >= 4
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        ns: dict = {}
        for src in code:
            exec(compile(src, "results.ipynb", "exec"), ns)
    finally:
        os.chdir(cwd)
    # the drift cell found the committed drift CSV and drew both panels
    assert ns["run"] is not None and len(ns["d"]) > 0
