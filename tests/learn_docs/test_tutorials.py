"""The tutorials in docs/learn/ run as tests, so they never go stale.

For each ``docs/learn/*.md``, every fenced code block is taken in order: ```python blocks run in
one namespace per file, ```bash blocks run in a shell (``set -e``, with this interpreter's folder
first on PATH, so ``refrt`` and ``python`` are the ones under test). All of a file's blocks run
in one fresh temporary folder. Other fences (```text for shown output) are not run. A failure
names the file, the block number and its line. Relative links in the tutorials must point at
files that exist.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LEARN = ROOT / "docs" / "learn"
TUTORIALS = sorted(LEARN.glob("*.md"))
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```\s*$", re.M | re.S)
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")


def blocks(text: str):
    """(language, code, line number of the fence) for every fenced block."""
    for m in FENCE.finditer(text):
        yield m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1


def test_there_are_tutorials():
    assert len(TUTORIALS) >= 3, [p.name for p in TUTORIALS]


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_links_resolve(path):
    missing = [target for target, _ in LINK.findall(path.read_text())
               if "://" not in target and not (path.parent / target).exists()]
    assert not missing, f"{path.name}: links to missing files {missing}"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    namespace = {"__name__": f"tutorial_{path.stem.replace('-', '_')}"}
    ran = 0
    for number, (lang, code, line) in enumerate(blocks(path.read_text()), start=1):
        where = f"{path.relative_to(ROOT)}, block {number} (line {line})"
        if lang == "python":
            try:
                exec(compile(code, f"<{where}>", "exec"), namespace)
            except Exception:
                pytest.fail(f"{where} failed:\n{traceback.format_exc()}", pytrace=False)
        elif lang == "bash":
            done = subprocess.run(["bash", "-e", "-c", code], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=300)
            if done.returncode:
                pytest.fail(f"{where} exited with {done.returncode}:\n$ {code}\n{done.stdout}"
                            f"\n{done.stderr}", pytrace=False)
        else:
            continue
        ran += 1
    assert ran, f"{path.name} has no python or bash block"
