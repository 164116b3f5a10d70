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
    ToolRecord,
    TurnRecord,
)
from voiceagent.results import ToolCall

HEADER = '{"type": "header", "version": 2}'
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
    assert cassette.header.version == 2 and cassette.source_version == 2
    [exchange] = cassette.exchanges
    assert exchange.request_id == "req-1"
    assert [c.data["choices"][0]["delta"]["content"] for c in exchange.chunks] == ["Hel", "lo"]
    assert exchange.end is not None and exchange.end.how == "done"
    assert cassette.turns[0].request_ids == ("req-1",)
    assert cassette.system_prompt == "Hi"
    assert Cassette.loads(cassette.dumps()).records == cassette.records
    first = json.loads(path.read_text().splitlines()[0])
    assert first["type"] == "header" and first["version"] == 2


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
        (['{"type": "header", "version": 3}'], "line 1: unsupported cassette version 3"),
        (['{"type": "header", "version": true}'], "line 1: unsupported cassette version True"),
        ([HEADER, '{"type": "tool", "call_id": "c1"}'], r"line 2: tool record lacks field\(s\) round"),
        (
            [HEADER, '{"type": "tool", "call_id": "c1", "started": 0}'],
            r"line 2: tool record has unknown field\(s\) started",
        ),
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


# ---- version 1: read, upgraded, written back as version 2 -------------------------------------------

V1_HEADER = '{"type": "header", "version": 1}'


def test_a_version_1_cassette_reads_as_version_2_records_each_call_once() -> None:
    cassette = Cassette.load(EXAMPLES / "weather.jsonl")  # recorded by version 1
    assert cassette.source_version == 1 and cassette.header.version == 2
    # v1 wrote the call twice (a tool line with session times, the summary's entry with turn times):
    # one record now, the summary's turn times and the line's result.
    assert cassette.tools == [
        ToolRecord(
            ToolCall(
                1,
                "call_c6d07ef7b77e90d3593ad699",
                "get_weather",
                '{"city": "Paris"}',
                "Paris: 18 degrees C, sunny.",
                False,
                0.615872,
                0.616175,
                0.618033,
            ),
            1,
        )
    ]
    types = [r.TYPE for r in cassette.records]
    assert types.index("tool") == types.index("turn") - 1  # placed before its turn's summary


def test_an_upgraded_cassette_is_written_back_as_version_2_and_reads_the_same(tmp_path: Path) -> None:
    old = Cassette.load(EXAMPLES / "barge_in.jsonl")
    text = old.dumps()
    assert json.loads(text.splitlines()[0])["version"] == 2
    for line in text.splitlines()[1:]:  # the v1 shapes are gone
        record = json.loads(line)
        assert record["type"] != "turn" or "tool_calls" not in record
        assert record["type"] != "tool" or ("started" not in record and "started_at" in record)
    again = Cassette.loads(text)
    assert again.source_version == 2 and again.records == old.records


def test_a_version_1_call_no_summary_lists_keeps_its_line_relative_to_its_turn() -> None:
    """A turn that never finished (the call hung up) has tool lines and no summary."""
    lines = [
        V1_HEADER,
        '{"type": "request", "n": 1, "body": {"messages": []}, "at": 2.0, "turn": 4, "round": 1}',
        '{"type": "tool", "call_id": "c1", "name": "f", "arguments": "{}", "result": "ok", "is_error": false,'
        ' "started": 2.5, "finished": 2.75, "turn": 4, "round": 1}',
    ]
    [tool] = Cassette.loads("\n".join(lines)).tools
    assert tool == ToolRecord(ToolCall(1, "c1", "f", "{}", "ok", False, 0.5, 0.5, 0.75), 4)


def test_a_version_1_call_that_never_finished_takes_its_result_from_a_later_request() -> None:
    later = {"messages": [{"role": "tool", "tool_call_id": "c2", "content": "Cancelled."}]}
    summary = {
        "type": "turn", "turn": 1, "user_text": "u", "spoken_text": "", "heard_text": "", "at": 1.0,
        "total": 1.0, "tool_calls": [
            {"round": 1, "call_id": "c2", "name": "slow", "arguments": "{}", "is_error": True,
             "ready_at": 0.1, "started_at": 0.2, "finished_at": 0.9},
        ],
    }  # fmt: skip
    lines = [
        V1_HEADER,
        json.dumps(summary),
        json.dumps({"type": "request", "n": 2, "body": later, "turn": 2, "round": 1}),
    ]
    [tool] = Cassette.loads("\n".join(lines)).tools
    assert tool == ToolRecord(ToolCall(1, "c2", "slow", "{}", "Cancelled.", True, 0.1, 0.2, 0.9), 1)


def test_a_bad_line_of_a_version_1_cassette_is_named_by_its_line() -> None:
    with pytest.raises(CassetteError, match="line 3: unknown record type 'bogus'"):
        Cassette.loads("\n".join([V1_HEADER, '{"type": "stt", "kind": "transcript"}', '{"type": "bogus"}']))
