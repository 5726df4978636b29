"""The documentation cannot rot: every example of docs/ marked runnable runs, and the README stays a front page whose
links all lead somewhere. (`make test` also builds the site with `mkdocs build --strict`: a broken link or an API
reference to something that no longer exists fails it.)"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MARKER = "<!-- runnable -->"
README_MAX_LINES = 200


def runnable_examples() -> list[tuple[str, str]]:
    """(page and example number, code) of every Python block preceded by the runnable marker."""
    examples = []
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text()
        for number, match in enumerate(re.finditer(re.escape(MARKER) + r"\n```python\n(.*?)\n```", text, re.S), 1):
            examples.append((f"{page.relative_to(DOCS)}#{number}", match.group(1)))
    return examples


def test_the_docs_mark_examples_runnable():
    # A renamed marker would silently leave every example untested.
    assert len(runnable_examples()) >= 4


#: Runs each example in a namespace of its own, in one fresh interpreter (one start-up for all of them), and names
#: the first that fails.
RUNNER = """
import sys, traceback
examples = eval(sys.stdin.read())
for where, code in examples:
    try:
        exec(compile(code, where, "exec"), {"__name__": "__main__"})
    except BaseException:
        sys.stderr.write(f"{where} failed:\\n{traceback.format_exc()}")
        sys.exit(1)
"""


def test_every_runnable_example_runs(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=repr(runnable_examples()),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_readme_is_a_front_page_whose_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert local, "the README links into docs/"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, missing
