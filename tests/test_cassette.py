"""The cassette format: round trips, redaction, flush-per-record, and clear errors naming the line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from voiceagent.replay.cassette import (
    Cassette,
    CassetteError,
    CassetteWriter,
    ChunkRecord,
    EndRecord,
    RequestRecord,
    ResponseRecord,
    SpeechRecord,
    TurnRecord,
)

HEADER = '{"type": "header", "version": 1}'
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "cassettes"


def test_writer_round_trips_every_record_and_groups_exchanges(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    with CassetteWriter(path, meta={"agent": "x:y"}) as writer:
        body = {"model": "electron", "messages": [{"role": "system", "content": "Hi"}]}
        writer.write(RequestRecord(1, body))
        writer.write(ResponseRecord(1, 200, "req-1", 0.01))
        writer.write(ChunkRecord(1, 0.25, {"choices": [{"index": 0, "delta": {"content": "Hel"}}]}))
        writer.write(ChunkRecord(1, 0.28, {"choices": [{"index": 0, "delta": {"content": "lo"}}]}))
        writer.write(EndRecord(1, "done", 0.3, 2))
        writer.write(SpeechRecord("Hello", 0.4, "ab" * 32, 0.1, 8000, 1))
        writer.write(TurnRecord(1, "hi", "Hello", "Hello", rounds=({"request_id": "req-1"},)))
    cassette = Cassette.load(path)
    assert cassette.meta == {"agent": "x:y"}
    assert cassette.header.version == 1
    [exchange] = cassette.exchanges
    assert exchange.request_id == "req-1"
    assert [c.data["choices"][0]["delta"]["content"] for c in exchange.chunks] == ["Hel", "lo"]
    assert exchange.end is not None and exchange.end.how == "done"
    assert cassette.turns[0].request_ids == ("req-1",)
    assert cassette.system_prompt == "Hi"
    assert Cassette.loads(cassette.dumps()).records == cassette.records
    first = json.loads(path.read_text().splitlines()[0])
    assert first["type"] == "header" and first["version"] == 1


def test_each_record_is_on_disk_as_soon_as_it_is_written(tmp_path: Path) -> None:
    path = tmp_path / "crash.jsonl"
    writer = CassetteWriter(path)
    writer.write(RequestRecord(1, {"messages": []}))
    # Not closed (as after a crash): both lines are already readable.
    assert [r.TYPE for r in Cassette.load(path).records] == ["request"]
    writer.close()


def test_secrets_are_never_written(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    with CassetteWriter(path) as writer:
        body = {
            "messages": [{"role": "user", "content": "my key is sk_live_abcdef123456 ok"}],
            "api_key": "sk_test_123456789",
            "headers": {"Authorization": "Bearer sk_test_123456789"},
        }
        writer.write(RequestRecord(1, body))
    text = path.read_text()
    assert "sk_" not in text and "Authorization" not in text and "api_key" not in text
    assert "my key is [REDACTED] ok" in text


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["not json"], "line 1: not valid JSON"),
        (['{"type": "request", "n": 1, "body": {}}'], "line 1: the first line must be the header"),
        (['{"type": "header", "version": 2}'], "line 1: unsupported cassette version 2"),
        ([HEADER, "", '{"type": "bogus"}'], "line 3: unknown record type 'bogus'"),
        ([HEADER, '{"type": "chunk", "n": 1}'], "line 2: bad chunk record"),
        ([HEADER, '{"type": "end", "n": 1, "how": "maybe"}'], "line 2: end record"),
        (
            [HEADER, '{"type": "chunk", "n": 1, "t": 0, "data": {}, "x": 1}'],
            r"line 2: chunk record has unknown field\(s\) x",
        ),
        ([], "empty cassette"),
    ],
)
def test_bad_files_name_the_line(tmp_path: Path, lines: list[str], message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CassetteError, match=message) as info:
        Cassette.load(path)
    assert str(path) in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CassetteError, match="cannot read cassette"):
        Cassette.load(tmp_path / "nope.jsonl")


@pytest.mark.parametrize("name", ["weather", "parallel_tools", "barge_in"])
def test_shipped_cassettes_load_and_hold_no_secret(name: str) -> None:
    path = EXAMPLES / f"{name}.jsonl"
    cassette = Cassette.load(path)
    assert cassette.meta["agent"] == "voiceagent.examples.weather_bot:build_agent"
    assert cassette.exchanges and cassette.turns and cassette.speech
    assert "sk_" not in path.read_text()
