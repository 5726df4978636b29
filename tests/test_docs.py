"""The documentation cannot rot: every example of docs/ marked runnable runs, and the README stays a front page whose
links all lead somewhere. (`make test` also builds the site with `mkdocs build --strict`: a broken link or an API
reference to something that no longer exists fails it.)"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests._console import console_env

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MARKER = "<!-- runnable -->"
README_MAX_LINES = 200


#: The README and every page of the site.
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
#: A named snippet (``<!-- export-snippet -->``): a test reads it with `tests._snippets.page_snippet` and runs it.
SNIPPET = re.compile(r"<!-- ([\w-]+-snippet) -->")


def runnable_examples() -> list[tuple[str, str]]:
    """(page and example number, code) of every Python block preceded by the runnable marker."""
    examples = []
    for page in PAGES:
        text = page.read_text()
        for number, match in enumerate(re.finditer(re.escape(MARKER) + r"\n```python\n(.*?)\n```", text, re.S), 1):
            examples.append((f"{page.relative_to(ROOT)}#{number}", match.group(1)))
    return examples


def test_the_docs_mark_examples_runnable():
    # A renamed marker would silently leave every example untested.
    assert len(runnable_examples()) >= 10


def test_every_python_example_is_run_by_a_test():
    """Each Python block of the README and the site is marked runnable, or is a named snippet a test runs: nothing
    shown to users as Python goes unchecked."""
    tests = "".join(path.read_text() for path in (ROOT / "tests").rglob("*.py"))
    unchecked = []
    for page in PAGES:
        lines = page.read_text().splitlines()
        for number, line in enumerate(lines):
            if line.strip() != "```python":
                continue
            before = lines[number - 1].strip() if number else ""
            snippet = SNIPPET.fullmatch(before)
            if before != MARKER and not (snippet and f'"{snippet.group(1)}"' in tests):
                unchecked.append(f"{page.relative_to(ROOT)}:{number + 1}")
    assert not unchecked, f"Python examples no test runs: {unchecked}"


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
        env=console_env(),  # one torch thread, offline: as the suite's other processes
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
