"""notebooks/01_quickstart.ipynb runs top to bottom (in its two-batch smoke mode) and prints its result table."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "01_quickstart.ipynb"


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("TLKIT_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel shares the two cores with the other test worker
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    last_output = "".join(o.get("text", "") for o in notebook.cells[-1].outputs)
    assert "| ImageNet-pretrained  |" in last_output and "| random init          |" in last_output
    assert (tmp_path / "logs" / "quickstart-pretrained").is_dir()
