"""Every python block of README.md runs as written, imports included, in an empty folder and offline.

The convention (also in a comment at the top of README.md), by the line right before a block's fence:
- nothing: a script; ``python block.py`` must exit 0.
- ``<!-- pytest: ARGS -->``: a test file; ``python -m pytest ARGS test_block.py`` must pass.
- ``<!-- fragment: FILE -->``: a piece that does not run alone; FILE (from the repository root) is
  the runnable whole, and must exist.
Blocks in other languages (bash, text) are not run.
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

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\S*)\s*$")
MARKER = re.compile(r"^<!--\s*(fragment|pytest)\s*:\s*(.*?)\s*-->\s*$")
LIMIT = 120  # seconds per block


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    kind: str  # "script", "pytest" or "fragment"
    argument: str  # pytest's arguments, or the fragment's runnable file
    heading: str  # the section it is in

    @property
    def id(self) -> str:
        return f"line{self.line}-{self.kind}"


def read_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    heading = ""
    previous = ""  # the last non-blank line before the current one
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = FENCE.match(line)
        if fence is None:
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
            if line.strip():
                previous = line.strip()
            i += 1
            continue
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        marker = MARKER.match(previous)
        kind, argument = (marker.group(1), marker.group(2)) if marker else ("script", "")
        blocks.append(Block(start + 1, fence.group(1), "\n".join(body) + "\n", kind, argument, heading))
        previous = ""
        i += 1  # the closing fence
    return blocks


BLOCKS = [b for b in read_blocks(README.read_text(encoding="utf-8")) if b.language == "python"]
RUNNABLE = [b for b in BLOCKS if b.kind != "fragment"]


def test_the_readme_has_runnable_blocks_and_every_fragment_names_a_runnable_file() -> None:
    assert any(b.heading == "Example" and b.kind == "script" for b in BLOCKS)
    assert {b.kind for b in BLOCKS if "def test_" in b.code} == {"pytest"}
    for block in BLOCKS:
        if block.kind == "fragment":
            assert block.argument, f"README line {block.line}: a fragment names its runnable file"
            assert (ROOT / block.argument).is_file(), f"README line {block.line}: {block.argument} is missing"


def run_block(block: Block, folder: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SMALLEST_API_KEY", "PYTHONPATH")}
    if block.kind == "pytest":
        (folder / "test_block.py").write_text(block.code)
        args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *block.argument.split()]
        args.append("test_block.py")
    else:
        (folder / "block.py").write_text(block.code)
        args = [sys.executable, "block.py"]
    return subprocess.run(
        args, cwd=folder, capture_output=True, text=True, timeout=LIMIT, env=env, check=False
    )


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_a_readme_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    if "EspeakSink" in block.code and shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    done = run_block(block, tmp_path)
    assert done.returncode == 0, f"README line {block.line}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    if block.kind == "pytest":
        assert " passed" in done.stdout and "skipped" not in done.stdout, done.stdout


def test_the_main_example_answers_offline(tmp_path: Path) -> None:
    [main] = [b for b in BLOCKS if b.heading == "Example"]
    done = run_block(main, tmp_path)
    assert done.returncode == 0, done.stderr
    heard, *rounds = done.stdout.splitlines()
    assert heard == "Let me check the weather. It's 18 degrees and sunny in Paris."
    assert rounds[-1].startswith('get_weather {"city": "Paris"} -> Paris: 18 degrees, sunny started')


def test_the_reader_sees_markers_and_fences() -> None:
    text = "# A\n```python\nprint(1)\n```\n<!-- fragment: x.py -->\n```python\nf()\n```\n```bash\nls\n```\n"
    blocks = read_blocks(text)
    assert [(b.line, b.language, b.kind, b.argument, b.heading) for b in blocks] == [
        (2, "python", "script", "", "A"),
        (6, "python", "fragment", "x.py", "A"),
        (9, "bash", "script", "", "A"),
    ]
    assert blocks[0].code == "print(1)\n"
