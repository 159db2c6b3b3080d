"""Every page of the documentation runs as written: README.md and docs/*.md, each as one
script in a fresh process.

Each page's ```python blocks, in order, make one script, run by a new interpreter in a
fresh directory holding the plate the pages say they use: ``plate.zarr``, the demo's sample
plate (what ``xarray-hcs demo .`` writes). A page that starts a cluster must guard it with
``if __name__ == "__main__":``, as a user's script must. The ``xarray-hcs ...`` lines of its
```sh blocks then run through the installed console script, in the same directory (the
set-up lines, ``python -m pip ...``, are what CI itself runs). So the documentation cannot
drift from the code.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from xarray_hcs.sample import DEMO, write_sample_plate

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _blocks(path: Path, lang: str = "python") -> list[tuple[int, str]]:
    text = path.read_text()
    return [(text[:m.start()].count("\n") + 2, m.group(1))
            for m in re.finditer(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)]


def _commands(path: Path) -> list[tuple[int, list[str]]]:
    import shlex

    out = []
    for line, block in _blocks(path, "sh"):
        for i, cmd in enumerate(block.splitlines()):
            if cmd.startswith("xarray-hcs ") and cmd.split()[1] != "demo":  # demo: test_cli
                out.append((line + i, shlex.split(cmd)[1:]))
    return out


def _script(path: Path) -> str:
    """The page's blocks as one script; each block starts at its line in the page, so a
    traceback names the page's own line."""
    lines: list[str] = []
    for line, code in _blocks(path):
        lines.extend([""] * (line - 1 - len(lines)))
        lines.extend(code.splitlines())
    return "\n".join(lines) + "\n"  # matplotlib draws off screen: MPLBACKEND=Agg


@pytest.fixture(scope="module")
def demo_plate(tmp_path_factory) -> Path:
    """The plate the pages use: the demo's sample plate."""
    return write_sample_plate(tmp_path_factory.mktemp("docplate") / "plate.zarr", DEMO)


@pytest.mark.parametrize("path", [p for p in DOCS if _blocks(p) or _commands(p)],
                         ids=lambda p: p.name)
def test_page_runs_as_a_script(path, demo_plate, tmp_path):
    shutil.copytree(demo_plate, tmp_path / "plate.zarr")
    script = tmp_path / f"page_{path.stem}.py"  # not a module name the page imports
    script.write_text(_script(path))
    env = {**os.environ, "MPLBACKEND": "Agg", "DASK_TEMPORARY_DIRECTORY": str(tmp_path)}
    r = subprocess.run([sys.executable, script.name], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600, env=env)
    assert r.returncode == 0, f"{path.name} failed as a script:\n{r.stderr[-3000:]}"
    exe = Path(sys.executable).parent / "xarray-hcs"
    for line, args in _commands(path):
        r = subprocess.run([str(exe) if exe.exists() else "xarray-hcs", *args], cwd=tmp_path,
                           capture_output=True, text=True, timeout=600, env=env)
        assert r.returncode == 0, (f"{path.name}, the command at line {line} failed: {args}"
                                   f"\n{r.stderr[-2000:]}")


def test_every_page_says_which_plate_it_uses():
    for path in DOCS:
        text = path.read_text()
        if '"plate.zarr"' in text and path.name not in ("index.md", "performance.md"):
            assert "[the examples' plate](" in text, path.name


def test_every_doc_page_is_linked_from_the_index():
    index = (ROOT / "docs" / "index.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for page in (ROOT / "docs").glob("*.md"):
        if page.name != "index.md":
            assert f"({page.name})" in index, page.name
            assert f"(docs/{page.name})" in readme, page.name
