"""SpeechChunker alone: huge deltas, per-token CPU, and first-chunk delay per script.

``python -m bench.chunker big [--sizes 1,10,50] [--rev REV]``: one delta of N MB per text shape, each in
its own subprocess; wall time of ``push()`` + ``flush()`` and the peak RSS it added.
``python -m bench.chunker tokens [--rev REV]``: CPU µs per streamed token (word-sized deltas), median of 9.
``python -m bench.chunker first [--rev REV]``: tokens (and ms at ``--ms-per-token``) until the first chunk
of an answer, per script.
``python -m bench.chunker bytecodes [--rev REV]``: Python bytecodes the chunker runs per ``push()`` (callees
included), per token shape, markdown filter on and off: deterministic, so it compares revisions on a noisy
machine (C code, the regex engine's included, is not counted).

``--rev`` loads ``voiceagent/chunker.py`` as it was at a git revision (a before/after comparison); the
default is the working tree.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.opcodes import OpcodeCounter

ROOT = Path(__file__).resolve().parent.parent

# Text shapes for one huge delta (each repeated to the size asked for).
SHAPES = {
    "english prose": "Sure, the weather in Paris is sunny today. It is 21 degrees, with a light wind! ",
    "hindi prose": "जी हाँ, आज पेरिस में मौसम साफ़ है। तापमान इक्कीस डिग्री है, और हल्की हवा चल रही है। ",
    "one word no spaces": "x",
    "dots no spaces": "a.",
    "cjk no spaces": "好的，今天巴黎天气晴朗。气温二十一度，有微风！",
    "markdown-ish": "**Sure**, the *weather* in `Paris` is [sunny](http://x.io) today. ",
}

# Answers as a model streams them: (script, answer). Word-sized tokens with their leading space.
ANSWERS = [
    ("english", "Sure, it is sunny in Paris today. The temperature is 21 degrees. Anything else?"),
    ("english, no commas", "It is sunny in Paris today and the temperature is 21 degrees. Anything else?"),
    ("hindi", "जी हाँ, आज पेरिस में धूप खिली है। तापमान इक्कीस डिग्री है। और कुछ जानना है?"),
    ("hindi, no commas", "आज पेरिस में धूप खिली है और तापमान इक्कीस डिग्री है। और कुछ जानना है?"),
    (
        "english, 5 sentences",
        "It is sunny in Paris today. It is 21 degrees. It may rain tonight. Take an umbrella. Anything else?",
    ),
    (
        "hindi, 5 sentences",
        "आज पेरिस में धूप खिली है। तापमान इक्कीस डिग्री है। शाम को हल्की बारिश हो सकती है। छाता साथ रखें। और कुछ जानना है?",
    ),
    ("bengali, no commas", "আজ প্যারিসে রোদ ঝলমলে এবং তাপমাত্রা একুশ ডিগ্রি। আর কিছু জানতে চান?"),
    ("chinese", "今天巴黎天气晴朗。气温二十一度。还有什么需要吗？"),
    ("arabic", "الطقس في باريس مشمس اليوم وتبلغ درجة الحرارة واحدا وعشرين درجة. هل تريد شيئا آخر؟"),
    ("urdu", "آج پیرس میں دھوپ ہے اور درجہ حرارت اکیس ڈگری ہے۔ کیا آپ کچھ اور جاننا چاہتے ہیں؟"),
]


def load(rev: str | None) -> ModuleType:
    """The chunker module, from the working tree or from a git revision."""
    if rev is None:
        import voiceagent.chunker as module

        return module
    source = subprocess.run(
        ["git", "show", f"{rev}:voiceagent/chunker.py"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "chunker_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("chunker_at_rev", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["chunker_at_rev"] = module
    spec.loader.exec_module(module)
    return module


def tokens_of(text: str) -> list[str]:
    """LLM-like tokens: each word with its leading space; CJK (no spaces) two characters at a time."""
    if " " not in text:
        return [text[i : i + 2] for i in range(0, len(text), 2)]
    return re.findall(r" ?\S+", text)


def big_one(shape: str, mb: int, rev: str | None) -> dict[str, Any]:
    module = load(rev)
    unit = SHAPES[shape]
    text = (unit * (mb * 1_000_000 // len(unit.encode()) + 1))[: mb * 1_000_000]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    chunker = module.SpeechChunker()
    chunks = chunker.push(text)
    chunks += chunker.flush()
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert len("".join(chunks)) <= len(text)
    return {"seconds": seconds, "added_mb": (after - before) / 1024, "chunks": len(chunks)}


def big(sizes: list[int], rev: str | None, shapes: list[str]) -> None:
    print(f"| shape | MB | seconds | peak RSS added (MB) | chunks |  (rev: {rev or 'working tree'})")
    print("|---|---|---|---|---|")
    for shape in shapes:
        for mb in sizes:
            args = [sys.executable, "-m", "bench.chunker", "_big_one", shape, str(mb)]
            if rev:
                args += ["--rev", rev]
            try:
                out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
                result = json.loads(out.stdout)
                row = f"{result['seconds']:.2f} | {result['added_mb']:.0f} | {result['chunks']}"
            except subprocess.TimeoutExpired:
                row = "> 300 (stopped) | - | -"
            print(f"| {shape} | {mb} | {row} |", flush=True)


def per_token(rev: str | None) -> None:
    module = load(rev)
    for script, answer in [ANSWERS[i] for i in (0, 1, 2, 3, 7)]:
        stream = tokens_of(answer) * 40
        samples = []
        for _ in range(9):
            chunker = module.SpeechChunker()
            start = time.process_time()
            for _ in range(5):
                for token in stream:
                    chunker.push(token)
                chunker.flush()
            samples.append((time.process_time() - start) / (5 * len(stream)) * 1e6)
        print(f"{script}: {statistics.median(samples):.2f} µs/token (min {min(samples):.2f})")


def first(rev: str | None, ms_per_token: float) -> None:
    module = load(rev)
    print(f"| answer | tokens until the first chunk | ms at {ms_per_token:g} ms/token | first chunk |")
    print("|---|---|---|---|")
    for script, answer in ANSWERS:
        chunker = module.SpeechChunker()
        stream = tokens_of(answer)
        count, out = 0, list[str]()
        while not out and count < len(stream):
            out = chunker.push(stream[count])
            count += 1
        if not out:
            out = chunker.flush()  # only at the end of the answer
        print(f"| {script} | {count} of {len(stream)} | {count * ms_per_token:.0f} | {out[0]!r} |")


def bench_words(count: int) -> list[str]:
    """The bench server's stream (bench/scenarios.py ``token_words``): "w0 ", ..., "w7. " every 8th."""
    from bench.scenarios import token_words

    return token_words(count)


def leading_words(count: int) -> list[str]:
    """The usual LLM shape: the space leads (" w0"), a full stop ends every 8th word (" w7."), and a
    comma, a token of its own, follows the 4th word of every 8 (" w3", ",")."""
    tokens = []
    for i in range(count):
        tokens.append(f" w{i}." if (i + 1) % 8 == 0 else f" w{i}")
        if (i + 1) % 8 == 4:
            tokens.append(",")
    return tokens[:count]


def answer_words(count: int) -> list[str]:
    """A real answer's tokens (ANSWERS' 5 English sentences, punctuation on the word), repeated."""
    unit = tokens_of(ANSWERS[4][1])
    return (unit * (count // len(unit) + 1))[:count]


TOKEN_SHAPES = {"bench 'w0 '": bench_words, "leading ' w0', ','": leading_words, "answer": answer_words}


def push_bytecodes(module: ModuleType, tokens: list[str], strip_markdown: bool, warmup: int = 50) -> float:
    """Bytecodes the chunker module runs per ``push`` over ``tokens`` (after ``warmup`` of them)."""
    filename = module.__file__
    chunker = module.SpeechChunker(strip_markdown=strip_markdown)
    for token in tokens[:warmup]:
        chunker.push(token)
    counter = OpcodeCounter(only=filename)
    push = chunker.push
    before = sys.gettrace()  # (a coverage run's tracer, say: given back after)
    sys.settrace(counter)
    try:
        for token in tokens[warmup:]:
            push(token)
    finally:
        sys.settrace(before)
    return counter.count / (len(tokens) - warmup)


def bytecodes(rev: str | None, count: int) -> None:
    module = load(rev)
    where = f"rev: {rev or 'working tree'}, {count} tokens"
    print(f"| token shape | bytecodes per push, markdown on | off |  ({where})")
    print("|---|---|---|")
    for name, make in TOKEN_SHAPES.items():
        tokens = make(count + 50)
        on, off = (push_bytecodes(module, tokens, md) for md in (True, False))
        print(f"| {name} | {on:.1f} | {off:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["big", "tokens", "first", "bytecodes", "_big_one"])
    parser.add_argument("args", nargs="*")
    parser.add_argument("--rev", default=None)
    parser.add_argument("--sizes", default="1,10,50")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--ms-per-token", type=float, default=30.0)
    parser.add_argument("--count", type=int, default=1000, help="tokens per shape (bytecodes)")
    ns = parser.parse_args()
    if ns.what == "_big_one":
        print(json.dumps(big_one(ns.args[0], int(ns.args[1]), ns.rev)))
    elif ns.what == "big":
        big([int(s) for s in ns.sizes.split(",")], ns.rev, ns.shapes.split(","))
    elif ns.what == "tokens":
        per_token(ns.rev)
    elif ns.what == "bytecodes":
        bytecodes(ns.rev, ns.count)
    else:
        first(ns.rev, ns.ms_per_token)


if __name__ == "__main__":
    main()
