"""The code blocks the documentation marks for the tests to run (``<!-- name -->`` before a ```python block)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def page_snippet(page: str, marker: str) -> str:
    """The first Python block after ``<!-- marker -->`` on ``docs/<page>``."""
    text = (REPO / "docs" / page).read_text()
    start = text.index("```python\n", text.index(f"<!-- {marker} -->")) + len("```python\n")
    return text[start : text.index("```", start)]
