"""MkDocs hook: give mkdocstrings a source tree where tlkit.strategies and tlkit.datamodules are where they install.

strategies/ and datamodules/ live at the top of the repository and install inside tlkit (setup.py's package_dir), so
reading tlkit/ alone cannot find them. At start, this builds build/api-source/tlkit/ out of symbolic links (tlkit/'s
own entries plus strategies/ and datamodules/), and mkdocs.yml points mkdocstrings there: the API reference is read
from the source, without importing torch.
"""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREE = ROOT / "build" / "api-source" / "tlkit"
INSTALLED_INSIDE = {"strategies": ROOT / "strategies", "datamodules": ROOT / "datamodules"}


def on_startup(**_: object) -> None:
    if TREE.exists():
        shutil.rmtree(TREE)
    TREE.mkdir(parents=True)
    entries = {path.name: path for path in (ROOT / "tlkit").iterdir() if path.name != "__pycache__"}
    for name, target in {**entries, **INSTALLED_INSIDE}.items():
        (TREE / name).symlink_to(target, target_is_directory=target.is_dir())
