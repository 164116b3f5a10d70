"""A small mutation run over hand-picked one-line bugs in the core (docs/testing.md has the results).

    python tools/mutate.py --list                    # the mutations, and whether each still applies
    python tools/mutate.py --only chunker,cache_guard
    python tools/mutate.py                           # all of them (slow: one test run per mutation)

The tree (tracked and untracked, not ignored files) is copied to a temporary directory once; each
mutation is applied there alone, the test files that cover its module run with ``-x``, and the file is
restored. Nothing in the working tree is touched. A mutation whose snippet is not found (the code moved
on) is reported as such and skipped, never a failure of the tool: keep the snippets to stable lines.
A mutation *survives* when its tests still pass: either a missing test, or an equivalent mutant (say
why in docs/testing.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # relative to the repository root
    original: str  # must occur exactly once in the file
    replacement: str


TESTS: dict[str, list[str]] = {
    "chunker": ["tests/test_chunker.py", "tests/test_turn_scripts.py"],
    "cache_guard": ["tests/test_cache_guard.py", "tests/test_turn.py"],
    "accumulator": ["tests/test_accumulator.py"],
    "llm": ["tests/test_llm_client.py", "tests/test_retry.py", "tests/test_faults.py"],
    "turn": ["tests/test_turn.py"],
    "tool_runner": ["tests/test_tools.py"],
    "signature": ["tests/test_twilio_twiml_signature.py"],
}

C = "voiceagent/chunker.py"
G = "voiceagent/cache_guard.py"
MUTATIONS: dict[str, list[Mutation]] = {
    "chunker": [
        Mutation(
            "first chunk: sentence ends decided while it waited are not cut",
            C,
            "        for pos, kind in list(self._cands):\n            if kind == _SENTENCE:",
            "        for pos, kind in []:\n            if kind == _SENTENCE:",
        ),
        Mutation(
            "min_first_chars off by one (event)",
            C,
            "index + 1 - self._start < self.min_first_chars",
            "index - self._start < self.min_first_chars",
        ),
        Mutation(
            "min_first_chars off by one (stretch)",
            C,
            "max(cur, self._start + self.min_first_chars - 1)",
            "max(cur, self._start + self.min_first_chars)",
        ),
        Mutation(
            "later chunks: a sentence end is not cut",
            C,
            "        elif kind == _SENTENCE:\n            self._cut(full, base, index)",
            "        elif False:\n            self._cut(full, base, index)",
        ),
        Mutation(
            "no space after a script mark decides nothing",
            C,
            "                kind = mark\n",
            "                kind = _NONE\n",
        ),
        Mutation(
            "a digit after a script mark is a boundary",
            C,
            "            if mark != _NONE and char not in _ENDERS and not char.isdigit():",
            "            if mark != _NONE and char not in _ENDERS:",
        ),
        Mutation(
            "a script sentence terminal counts as a clause",
            C,
            "        return _SENTENCE\n    if kind == _NONE and _SCRIPT_CLAUSE",
            "        return _CLAUSE\n    if kind == _NONE and _SCRIPT_CLAUSE",
        ),
        Mutation("abbreviations end sentences", C, "if lower in _ABBREVIATIONS or", "if False or"),
        Mutation(
            "max_chars ignores clause boundaries",
            C,
            "at = self._cands[-1][0] if self._cands else self._last_word_start(full, base, index)",
            "at = self._last_word_start(full, base, index)",
        ),
        Mutation(
            "fast path taken after a punctuation mark",
            C,
            "and (self._content_start < 0 or self._last_content not in _ENDERS)",
            "and True",
        ),
        Mutation(
            "a run directly followed by a word counts as a word start",
            C,
            "if nxt.start() > run.end():",
            "if nxt.start() >= run.end():",
        ),
        Mutation(
            "the run state is not carried into the next delta",
            C,
            "    mark = self._mark\n            if mark != _NONE and char not in _ENDERS",
            "    mark = _NONE\n            if mark != _NONE and char not in _ENDERS",
        ),
        Mutation(
            "markdown: a plain stretch does not update the previous character",
            C,
            "self._emit(text[i:j])\n                        self._prev = text[j - 1]\n",
            "self._emit(text[i:j])\n",
        ),
    ],
    "cache_guard": [
        Mutation(
            "a change to the tools is ignored",
            G,
            "if self._tools is not None and tools_encoded != self._tools:",
            "if False:",
        ),
        Mutation(
            "removed messages are ignored",
            G,
            "if len(encoded) < len(self._messages):",
            "if False:",
        ),
        Mutation(
            "the last changed message is reported, not the first",
            G,
            'f"message {index} changed after it was sent")\n                    break',
            'f"message {index} changed after it was sent")',
        ),
        Mutation(
            "the first request is remembered forever",
            G,
            "self._messages, self._tools = encoded, tools_encoded",
            "self._messages, self._tools = (encoded, tools_encoded) if self._tools is None else "
            "(self._messages, self._tools)",
        ),
        Mutation("busts are not counted", G, "self.busts += 1", "self.busts += 0"),
        Mutation("key order matters", G, "json.dumps(m, sort_keys=True)", "json.dumps(m)"),
    ],
    "accumulator": [
        Mutation(
            "a text ending in } counts as complete JSON",
            "voiceagent/accumulator.py",
            "return isinstance(json.loads(text), dict)",
            "return True",
        ),
        Mutation(
            "a stream that ends without finish_reason is 'stop' even with tool calls",
            "voiceagent/accumulator.py",
            'self.finish_reason = "tool_calls" if self._calls else "stop"',
            'self.finish_reason = "stop"',
        ),
    ],
    "llm": [
        Mutation(
            "any 5xx is retried",
            "voiceagent/llm.py",
            "if not policy.is_retryable_status(exc.status_code) or",
            "if not exc.status_code >= 500 or",
        ),
        Mutation(
            "429 is not a RateLimitError",
            "voiceagent/llm.py",
            "cls = RateLimitError if exc.status_code == 429 else LLMStatusError",
            "cls = LLMStatusError",
        ),
        Mutation(
            "one retry too many after a broken stream",
            "voiceagent/llm.py",
            "if self.attempts >= self.client.retry.max_attempts:",
            "if self.attempts > self.client.retry.max_attempts:",
        ),
    ],
    "turn": [
        Mutation(
            "an interrupted answer counts as heard in full",
            "voiceagent/turn.py",
            "return total if not interrupted else max(0, min(played, total))",
            "return total",
        ),
        Mutation(
            "one round more than max_rounds",
            "voiceagent/turn.py",
            "for number in range(1, self._config.max_rounds + 1):",
            "for number in range(1, self._config.max_rounds + 2):",
        ),
    ],
    "tool_runner": [
        Mutation(
            "on_cancel='finish' is not shielded",
            "voiceagent/tool_runner.py",
            'with anyio.CancelScope(shield=tool.on_cancel == "finish"):',
            "with anyio.CancelScope(shield=False):",
        ),
        Mutation(
            "a tool's own timeout is ignored",
            "voiceagent/tool_runner.py",
            "timeout = tool.timeout if tool.timeout is not None else self.default_timeout",
            "timeout = self.default_timeout",
        ),
    ],
    "signature": [
        Mutation(
            "form values are not sorted",
            "adapters/twilio/signature.py",
            "for value in sorted({values} if isinstance(values, str) else set(values)):",
            "for value in {values} if isinstance(values, str) else values:",
        ),
        Mutation(
            "the URL is tried only as given (no default-port variants)",
            "adapters/twilio/signature.py",
            "candidates = {_with_default_port(url), _without_port(url)}",
            "candidates = {url}",
        ),
        Mutation(
            "a JSON body's hash is not checked",
            "adapters/twilio/signature.py",
            "signature, algorithm=algorithm) and body_ok",
            "signature, algorithm=algorithm)",
        ),
    ],
}


def copy_tree(dest: Path) -> None:
    """Tracked and untracked (not ignored) files of the worktree, as they are now."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    # The editable install maps voiceagent.adapters to the worktree's adapters/: point it at the copy's.
    (dest / "voiceagent" / "adapters").symlink_to("../adapters", target_is_directory=True)


def check_imports(tree: Path) -> None:
    code = (
        "import voiceagent, voiceagent.adapters.twilio.signature as s; print(voiceagent.__file__, s.__file__)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True, check=True)
    if any(not Path(p).resolve().is_relative_to(tree.resolve()) for p in out.stdout.split()):
        raise SystemExit(f"the copy does not import its own modules: {out.stdout.strip()}")


def run_tests(tree: Path, tests: list[str], timeout: float) -> tuple[str, float]:
    start = time.monotonic()
    args = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        done = subprocess.run(args, cwd=tree, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - start
    return ("pass" if done.returncode == 0 else "fail"), time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", help="comma-separated modules: " + ",".join(MUTATIONS))
    parser.add_argument("--match", default="", help="only mutations whose name contains this")
    parser.add_argument("--list", action="store_true", help="list the mutations and whether they apply")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated test run")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per test run")
    args = parser.parse_args()
    modules = args.only.split(",") if args.only else list(MUTATIONS)
    unknown = [m for m in modules if m not in MUTATIONS]
    if unknown:
        parser.error(f"unknown modules {unknown}; choose from {list(MUTATIONS)}")

    survivors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="voiceagent-mutate-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        if not args.list:
            check_imports(tree)
        for module in modules:
            tests = TESTS[module]
            if not args.list and not args.no_baseline:
                status, seconds = run_tests(tree, tests, args.timeout)
                print(f"[{module}] baseline: {status} ({seconds:.0f} s)", flush=True)
                if status != "pass":
                    print(f"[{module}] the tests fail without a mutation: skipped", flush=True)
                    continue
            for mutation in [m for m in MUTATIONS[module] if args.match in m.name]:
                target = tree / mutation.path
                source = target.read_text(encoding="utf-8")
                count = source.count(mutation.original)
                if count != 1:
                    why = "snippet not found" if count == 0 else f"snippet found {count} times"
                    print(f"[{module}] SKIPPED  {mutation.name}: {why} in {mutation.path}", flush=True)
                    continue
                if args.list:
                    print(f"[{module}] applies  {mutation.name}")
                    continue
                target.write_text(source.replace(mutation.original, mutation.replacement), encoding="utf-8")
                try:
                    status, seconds = run_tests(tree, tests, args.timeout)
                finally:
                    target.write_text(source, encoding="utf-8")
                verdict = {"fail": "killed", "timeout": "killed (timeout)", "pass": "SURVIVED"}[status]
                print(f"[{module}] {verdict:16} {mutation.name} ({seconds:.0f} s)", flush=True)
                if status == "pass":
                    survivors.append(f"{module}: {mutation.name}")
    if not args.list:
        print(f"\n{len(survivors)} surviving mutant(s)" + "".join(f"\n- {s}" for s in survivors))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
