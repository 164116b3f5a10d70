import pytest

from voiceagent.adapters.web import InvalidTokenError, TokenSigner
from voiceagent.adapters.web.messages import (
    Hello,
    MarkPlayed,
    PlaybackState,
    ProtocolViolationError,
    parse_browser_message,
)
from voiceagent.audio import Resampler

SECRET = b"s" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_issued_token_verifies_until_it_expires() -> None:
    clock = Clock()
    signer = TokenSigner(SECRET, ttl=60, clock=clock)
    token = signer.issue()
    signer.check(token)
    clock.now += 59
    signer.check(token)
    clock.now += 1
    with pytest.raises(InvalidTokenError, match="expired"):
        signer.check(token)


def test_tampered_or_foreign_tokens_are_rejected() -> None:
    signer = TokenSigner(SECRET)
    token = signer.issue()
    version, expiry, nonce, signature = token.split(".")
    longer = f"{version}.{int(expiry) + 3600}.{nonce}.{signature}"
    with pytest.raises(InvalidTokenError, match="signature"):
        signer.check(longer)
    with pytest.raises(InvalidTokenError, match="signature"):
        TokenSigner(b"x" * 32).check(token)
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    with pytest.raises(InvalidTokenError, match="signature"):
        signer.check(f"{version}.{expiry}.{nonce}.{flipped}")


@pytest.mark.parametrize("token", ["", "abc", "v2.x.n.s", "v1.1.n.s", "v2.1.n", "v2.1.n.s.extra", "v2.1.ñ.s"])
def test_malformed_tokens_are_rejected(token: str) -> None:
    with pytest.raises(InvalidTokenError, match="malformed"):
        TokenSigner(SECRET).check(token)


def test_a_token_opens_only_its_own_path_and_only_once() -> None:
    clock = Clock()
    signer = TokenSigner(SECRET, ttl=60, clock=clock)
    token = signer.issue("/ws")
    with pytest.raises(InvalidTokenError, match="signature"):
        signer.redeem(token, "/admin")
    signer.redeem(token, "/ws")
    with pytest.raises(InvalidTokenError, match="already used"):
        signer.redeem(token, "/ws")
    with pytest.raises(InvalidTokenError, match="already used"):
        signer.check(token, "/ws")
    clock.now += 61
    with pytest.raises(InvalidTokenError, match="expired"):  # and its nonce is forgotten
        signer.redeem(token, "/ws")
    signer.redeem(signer.issue("/ws"), "/ws")
    assert len(signer._redeemed) == 1


def test_redeemed_nonces_are_bounded() -> None:
    clock = Clock()
    signer = TokenSigner(SECRET, ttl=10, clock=clock, max_redeemed=3)
    for _ in range(3):
        signer.redeem(signer.issue())
    with pytest.raises(InvalidTokenError, match="too many"):
        signer.redeem(signer.issue())
    clock.now += 11  # the old ones expire, their room comes back
    fresh = signer.issue()
    signer.redeem(fresh)
    assert list(signer._redeemed) == [fresh.split(".")[2]]


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        TokenSigner(b"short")


def test_browser_messages_parse_into_records() -> None:
    assert parse_browser_message('{"type":"hello","sample_rate":16000}') == Hello(16000)
    assert parse_browser_message('{"type":"mark","name":"m1"}') == MarkPlayed("m1")
    state = parse_browser_message(
        '{"type":"state","event":"cleared","playing":false,"queued_ms":0,"dropped_marks":["a","b"]}'
    )
    assert state == PlaybackState("cleared", False, 0.0, ("a", "b"))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"kind": "hello"}', "no string 'type'"),
        ('{"type": "dance"}', "unknown message type 'dance'"),
        ('{"type": "hello", "sample_rate": "16000"}', "sample_rate"),
        ('{"type": "hello", "sample_rate": true}', "sample_rate"),
        ('{"type": "hello", "sample_rate": 1000000}', "sample_rate"),
        ('{"type": "mark"}', "mark.name"),
        ('{"type": "mark", "name": ""}', "mark.name"),
        ('{"type": "state", "event": "exploded", "playing": false, "queued_ms": 0}', "state.event"),
        ('{"type": "state", "event": "drained", "playing": 0, "queued_ms": 0}', "state.playing"),
        ('{"type": "state", "event": "drained", "playing": false, "queued_ms": -1}', "queued_ms"),
        (
            '{"type": "state", "event": "cleared", "playing": false, "queued_ms": 0, "dropped_marks": [1]}',
            "dropped",
        ),
    ],
)
def test_bad_browser_messages_say_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(ProtocolViolationError, match=reason):
        parse_browser_message(text)


def test_resampler_converts_rate_and_keeps_length_across_chunks() -> None:
    resampler = Resampler(24000, 16000)
    second_at_24k = b"\x10\x00" * 24000
    out = b"".join(resampler.process(second_at_24k[i : i + 960]) for i in range(0, 48000, 960))
    out += resampler.flush()
    assert abs(len(out) // 2 - 16000) <= 2
    assert Resampler(16000, 16000).process(b"\x01\x00" * 10) == b"\x01\x00" * 10
    with pytest.raises(ValueError, match="even"):
        resampler.process(b"\x00\x00\x00")


def test_resampler_carries_an_odd_byte_when_asked_and_reset_forgets_it() -> None:
    pcm = bytes(range(200)) * 4
    one = Resampler(24000, 8000, carry_odd_byte=True)
    whole = one.process(pcm) + one.flush()
    split = Resampler(24000, 8000, carry_odd_byte=True)
    assert len(split.process(pcm[:301]) + split.process(pcm[301:]) + split.flush()) == len(whole)
    split.process(b"\x01")
    split.reset()
    assert len(split.process(pcm) + split.flush()) == len(whole)  # no held byte: a whole new stream
