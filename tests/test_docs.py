"""The README and the manual in docs/ as a reader meets them: every shell and Python block either runs as written,
in the order shown, or is marked ``<!-- not run: why -->`` on the line before it; every link between the pages
resolves.

A page's blocks run in one fresh folder, one after another, as a reader would type them in a clone: it holds the
sweep files (``grids/``), the published study's database (``docs/study/results.db``) and, as after a run, a copy
of it as ``results.db``. Nothing is trained: a block that trains, installs or serves is marked.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN = re.compile(r"<!-- not run: (?P<why>\S.*?) -->")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*$")
SHELL = {"bash", "sh", "shell", "console"}
RUNNABLE = SHELL | {"python"}
LINK = re.compile(r"(?<!!)\[[^\]]*\]\((?P<target>[^)\s]+)\)|!\[[^\]]*\]\((?P<image>[^)\s]+)\)")
BLOCK_SECONDS = 120


@dataclass(frozen=True)
class Block:
    """One fenced shell or Python block: where it is, its text, and why it is not run (``None``: it is run)."""

    page: Path
    line: int
    lang: str
    text: str
    not_run: str | None


def runnable_blocks(page: Path) -> list[Block]:
    """The page's fenced shell and Python blocks in order, each with the ``not run`` mark of the line before it."""
    lines = page.read_text().split("\n")
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        if fence["lang"] in RUNNABLE:
            mark = NOT_RUN.search(lines[index - 1]) if index else None
            text = "\n".join(lines[index + 1 : end])
            blocks.append(Block(page, index + 1, fence["lang"], text, mark["why"] if mark else None))
        index = end + 1
    return blocks


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings (outside code blocks)."""
    found: set[str] = set()
    in_code = False
    for line in page.read_text().split("\n"):
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            found.add(slug(line.lstrip("#")))
    return found


def links(page: Path) -> list[str]:
    """The targets of a page's Markdown links and images, outside code blocks, web addresses left out."""
    prose = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    targets = [m["target"] or m["image"] for m in LINK.finditer(prose)]
    return [t for t in targets if not re.match(r"[a-z]+:", t)]


def reader_folder(tmp_path: Path) -> Path:
    """A folder as a reader's clone has it for the blocks that run: sweep files and the study's database."""
    (tmp_path / "docs" / "study").mkdir(parents=True)
    shutil.copytree(ROOT / "grids", tmp_path / "grids")
    shutil.copy(ROOT / "docs" / "study" / "results.db", tmp_path / "docs" / "study" / "results.db")
    shutil.copy(ROOT / "docs" / "study" / "results.db", tmp_path / "results.db")
    return tmp_path


def reader_env(folder: Path) -> dict[str, str]:
    """This interpreter first on the PATH (as an activated virtual environment) and this checkout importable."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["GRIDSEARCH_DATA"] = str(folder / "data")  # nothing that runs reads images; a download would fail loudly
    return env


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_block_runs_or_says_why_not(page: Path, tmp_path: Path) -> None:
    folder = reader_folder(tmp_path)
    env = reader_env(folder)
    for block in runnable_blocks(page):
        if block.not_run is not None:
            continue
        shell = ["bash", "-e", "-o", "pipefail", "-c"] if block.lang in SHELL else [sys.executable, "-c"]
        done = subprocess.run(
            [*shell, block.text],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=BLOCK_SECONDS,
        )
        where = f"{page.relative_to(ROOT)}:{block.line}"
        assert done.returncode == 0, f"{where} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stderr, f"{where}:\n{done.stderr}"


def test_the_readme_fits_on_a_page_and_runs_something() -> None:
    readme = ROOT / "README.md"
    assert len(readme.read_text().split("\n")) <= 250
    blocks = runnable_blocks(readme)
    assert any(block.not_run is None for block in blocks)
    cpu_hint = next(i for i, b in enumerate(blocks) if "download.pytorch.org/whl/cpu" in b.text)
    set_up = next(i for i, b in enumerate(blocks) if "pip install -e ." in b.text and "whl/cpu" not in b.text)
    assert cpu_hint < set_up, "the CPU-only hint comes before the command it concerns"
    assert "GRIDSEARCH_USPS" in readme.read_text()


def test_every_manual_page_is_in_the_readme_map() -> None:
    readme_links = set(links(ROOT / "README.md"))
    for page in PAGES[1:]:
        assert f"docs/{page.name}" in readme_links, f"the README's map leaves out docs/{page.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_between_pages_resolve(page: Path) -> None:
    for target in links(page):
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        assert resolved.exists(), f"{page.relative_to(ROOT)}: {target} names no file"
        if anchor and resolved.suffix == ".md":
            assert anchor in anchors(resolved), f"{page.relative_to(ROOT)}: {target}: no such heading"


def test_blocks_are_found_and_marks_give_a_reason() -> None:
    blocks = [block for page in PAGES for block in runnable_blocks(page)]
    assert len(blocks) >= 10
    for page in PAGES:
        lines = page.read_text().split("\n")
        for number, line in enumerate(lines, 1):
            if "<!-- not run" in line:
                where = f"{page.relative_to(ROOT)}:{number}"
                assert NOT_RUN.search(line), f"{where}: say why: <!-- not run: why -->"
                fence = FENCE.match(lines[number]) if number < len(lines) else None
                assert fence and fence["lang"] in RUNNABLE, f"{where}: a mark precedes a shell or Python block"
