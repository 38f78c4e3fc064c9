"""Every code block in README.md runs as written.

Python blocks run in order in one namespace (a reader runs them top to bottom), in a temporary
working directory; ``bash`` blocks run in a shell there, with the README's ``nextstat`` command.
A block is marked by an HTML comment on the line before its fence:

* ``<!-- readme-test: skip (reason) -->``: not run here (installs, CI itself);
* ``<!-- readme-test: needs-workspaces -->``: runs with ``$NEXTSTAT_WORKSPACES`` (the published
  likelihoods) as the working directory, skipped without them;

the other blocks share one temporary working directory;
* ``<!-- readme-test: fresh -->``: a Python block that starts a new namespace.
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

from nextstat import testing

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
_FENCE = re.compile(r"(?:<!--\s*readme-test:\s*(?P<mark>[\w-]+)[^>]*-->\s*\n)?```(?P<lang>\w+)\n(?P<code>.*?)\n```",
                    re.S)


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    mark: str | None
    line: int

    @property
    def id(self) -> str:
        return f"README.md:{self.line}:{self.lang}"


def readme_blocks(text: str) -> list[Block]:
    """The fenced ``python`` and ``bash`` blocks of ``text`` with their marks and line numbers."""
    blocks = []
    for m in _FENCE.finditer(text):
        if m.group("lang") not in ("python", "bash"):
            continue
        line = text.count("\n", 0, m.start("code"))
        blocks.append(Block(m.group("lang"), m.group("code"), m.group("mark"), line))
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


def test_marks_are_known():
    assert BLOCKS, "README.md has no code blocks"
    assert {b.mark for b in BLOCKS} <= {None, "skip", "needs-workspaces", "fresh"}


def test_first_two_commands_install_and_test():
    """README opens with the two commands for a fresh machine (install + main job, tests)."""
    first = [b for b in BLOCKS if b.lang == "bash"][:2]
    assert "pip install" in first[0].code and "nextstat demo" in first[0].code
    assert "python -m pytest" in first[1].code
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "python -m pytest -q" in first[1].code and "python -m pytest -q" in ci


@pytest.fixture(scope="module")
def namespace():
    return {"__name__": "__readme__"}


@pytest.fixture(scope="module")
def readme_dir(tmp_path_factory):
    """One working directory for the README's blocks (later blocks use files earlier ones wrote)."""
    return tmp_path_factory.mktemp("readme")


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_block_runs(block: Block, namespace: dict, readme_dir, monkeypatch):
    if block.mark == "skip":
        pytest.skip("marked skip in README")
    workdir = readme_dir
    if block.mark == "needs-workspaces":
        if not testing.have_workspaces():
            pytest.skip("published likelihoods not found ($NEXTSTAT_WORKSPACES)")
        workdir = testing.workspaces_dir()
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if block.lang == "python":
        if block.mark == "fresh":
            namespace.clear()
            namespace["__name__"] = "__readme__"
        import matplotlib

        matplotlib.use("Agg")
        exec(compile(block.code, block.id, "exec"), namespace)  # noqa: S102 - the README's own code
        return
    env = dict(os.environ, NEXTSTAT_QUIET_COMPILE="1")
    exe = shutil.which("nextstat") or f"{sys.executable} -m nextstat"
    script = block.code.replace("nextstat ", f"{exe} ") if not shutil.which("nextstat") else block.code
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{block.id} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
