"""The user's path, end to end: build the sdist and (from it) the wheel, install the wheel into a fresh
venv outside the repository, then in empty folders run the demo, a shipped replay, a bot's self-test and
a small user project's own test suite under pytest-asyncio strict, pytest-asyncio auto and anyio.

Installs are offline-capable: a wheelhouse (``$VOICEAGENT_WHEELHOUSE``, default
``~/.cache/voiceagent-tests/wheelhouse``) is filled from the package index the first time, then every
install is ``pip install --no-index``. The same user suite also runs in this venv (fast, not slow).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import venv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.user_project import SETUPS, pytest_runs, write_user_project
from voiceagent.audio import read_wav

ROOT = Path(__file__).resolve().parents[1]
CASSETTES = ROOT / "examples" / "cassettes"
STEP = 600  # seconds any one build or install step may take on a loaded machine
TEST_DEPS = ["pytest>=8", "pytest-asyncio>=1.0"]
# Building and installing take minutes on a loaded machine, more than the suite's 120 s per test.
pytestmark = pytest.mark.timeout(3 * STEP)
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def run(args: Sequence[str | Path], cwd: Path, timeout: float = STEP, **env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k not in ("SMALLEST_API_KEY", "PYTHONPATH")}
    environment.update(env)
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=environment,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{args}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


@dataclass(frozen=True)
class Dist:
    sdist: Path
    wheel: Path


@dataclass(frozen=True)
class Venv:
    root: Path

    @property
    def python(self) -> str:
        return str(self.root / "bin" / "python")

    @property
    def voiceagent(self) -> str:
        return str(self.root / "bin" / "voiceagent")


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    out = tmp_path_factory.mktemp("dist")
    # No isolation: this venv's setuptools builds it (nothing fetched). The wheel is built from the sdist.
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT], cwd=out)
    [sdist] = out.glob("voiceagent-*.tar.gz")
    [wheel] = out.glob("voiceagent-*.whl")
    return Dist(sdist, wheel)


def wheelhouse() -> Path:
    default = Path.home() / ".cache" / "voiceagent-tests" / "wheelhouse"
    path = Path(os.environ.get("VOICEAGENT_WHEELHOUSE", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def installed(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Venv]:
    root = tmp_path_factory.mktemp("fresh") / "venv"
    venv.create(root, with_pip=True, clear=True)
    fresh = Venv(root)
    house = wheelhouse()
    pip = [fresh.python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    offline: list[str | Path] = [*pip, "--no-index", "--find-links", house, dist.wheel, *TEST_DEPS]
    try:
        run(offline, cwd=root)
    except AssertionError:  # the wheelhouse lacks something: fill it once from the index, then retry
        download: list[str | Path] = [fresh.python, "-m", "pip", "download", "-q"]
        run([*download, "--dest", house, dist.wheel, *TEST_DEPS], cwd=root)
        for stale in house.glob("voiceagent-*"):
            stale.unlink()  # our own wheel comes from dist, never from the cache
        run(offline, cwd=root)
    yield fresh


def test_the_sdist_holds_the_project_and_its_tests_collect(dist: Dist, tmp_path: Path) -> None:
    with tarfile.open(dist.sdist) as archive:
        archive.extractall(tmp_path, filter="data")
    [tree] = tmp_path.iterdir()
    shipped = {str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file()}
    if (ROOT / ".git").exists():
        tracked = set(run(["git", "ls-files"], cwd=ROOT).split()) - {".gitignore"}
        assert tracked - shipped == set()  # every tracked file: tests, their cassettes, examples, bench
    # The tests run against the installed package; here this venv's (the same code).
    pytest_ = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    collected = run([*pytest_, "--collect-only"], cwd=tree).splitlines()[-1]
    in_repo = run([*pytest_, "--collect-only"], cwd=ROOT).splitlines()[-1]
    assert collected.split(" in ")[0] == in_repo.split(" in ")[0]  # "N tests collected", no errors
    run([*pytest_, "tests/test_cassette.py", "tests/test_replay.py"], cwd=tree)


@pytest.mark.slow
@needs_espeak
def test_the_wheel_runs_the_demo_and_the_shipped_replays_in_an_empty_folder(
    installed: Venv, tmp_path: Path
) -> None:
    out = run([installed.voiceagent, "demo", "--speed", "0"], cwd=tmp_path)
    assert "bot:    Let me check the weather for you. It's 18 degrees and sunny in Paris" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.wav"]  # written where it ran
    pcm, rate = read_wav(tmp_path / "demo.wav")
    assert len(pcm) / 2 / rate > 3.0
    for name in ("weather", "parallel_tools", "barge_in"):
        replayed = run([installed.voiceagent, "replay", name, "--speed", "0", "--no-chunks"], cwd=tmp_path)
        assert "replayed with voiceagent.examples.weather_bot:build_agent" in replayed
    assert "as recorded" in run([installed.voiceagent, "replay", "weather", "--recorded"], cwd=tmp_path)
    (tmp_path / "mine.jsonl").write_bytes((CASSETTES / "parallel_tools.jsonl").read_bytes())
    other = [installed.voiceagent, "demo", "--speed", "0", "--cassette", "mine.jsonl", "--out", "two.wav"]
    assert "Paris wins today." in run(other, cwd=tmp_path)
    # One offline call per phone provider (Twilio, Telnyx, Plivo), the same bot code, from the wheel.
    selftest = run([installed.python, "-m", "voiceagent.examples.phone_bot", "--selftest"], cwd=tmp_path)
    for provider in ("plivo", "telnyx", "twilio"):
        assert f"[{provider}] caller heard: Let me check the weather for you." in selftest
        assert f"[{provider}] the bot hung up (end_call, close code 1000)" in selftest  # its cassette shipped
    assert run([installed.voiceagent, "--help"], cwd=tmp_path).startswith("usage: voiceagent")


@pytest.mark.slow
@pytest.mark.parametrize("setup", list(SETUPS))
def test_a_user_suite_passes_on_the_wheel(installed: Venv, tmp_path: Path, setup: str) -> None:
    write_user_project(tmp_path, installed.python, CASSETTES / "barge_in.jsonl")
    out = run(pytest_runs(installed.python)[setup], cwd=tmp_path)
    assert " passed" in out and "failed" not in out and "error" not in out, out


@pytest.mark.parametrize("setup", list(SETUPS))
def test_a_user_suite_passes_in_this_venv(tmp_path: Path, setup: str) -> None:
    write_user_project(tmp_path, sys.executable, CASSETTES / "barge_in.jsonl")
    out = run(pytest_runs(sys.executable)[setup], cwd=tmp_path)
    assert " passed" in out and "failed" not in out and "error" not in out, out
