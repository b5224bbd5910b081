"""Executes a notebook headless, top to bottom (as tests/test_notebooks.py does), e.g. the full-budget run of
``notebooks/03_finetune_vla.ipynb`` behind ``reports/vla_finetune/``::

    LSTACK_NB_BUDGET=full LSTACK_NB_OUT=reports/vla_finetune python scripts/run_notebook.py notebooks/03_finetune_vla.ipynb
"""
import argparse
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebook", type=Path)
    ap.add_argument("--timeout", type=int, default=7200, help="per-cell timeout in seconds")
    ap.add_argument("--save", type=Path, default=None, help="write the executed notebook here")
    a = ap.parse_args()
    nb = nbformat.read(a.notebook, as_version=4)
    NotebookClient(nb, timeout=a.timeout, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    if a.save is not None:
        nbformat.write(nb, a.save)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
