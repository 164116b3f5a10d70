from __future__ import annotations

from voiceagent.marks import MarkLedger, MarkOutcome


def test_marks_move_audio_to_heard_in_order() -> None:
    ledger = MarkLedger()
    ledger.audio_sent(0.5, "Hello there. ")
    ledger.mark_sent("a")
    ledger.audio_sent(0.25, "How are you?")
    ledger.mark_sent("b")
    assert ledger.pending_marks == ("a", "b") and ledger.heard_seconds == 0
    assert ledger.mark_echoed("a") is MarkOutcome.PLAYED
    assert (ledger.heard_seconds, ledger.heard_text) == (0.5, "Hello there. ")
    assert ledger.mark_echoed("b") is MarkOutcome.PLAYED
    assert ledger.heard_text == "Hello there. How are you?" and ledger.sent_seconds == 0.75


def test_marks_pending_at_clear_do_not_count_as_heard() -> None:
    ledger = MarkLedger()
    ledger.audio_sent(1.0, "one ")
    ledger.mark_sent("a")
    ledger.audio_sent(1.0, "two ")
    ledger.mark_sent("b")
    assert ledger.mark_echoed("a") is MarkOutcome.PLAYED
    assert ledger.cleared() == ("b",)
    assert ledger.mark_echoed("b") is MarkOutcome.CLEARED
    assert ledger.heard_text == "one " and ledger.cleared_seconds == 1.0
    assert ledger.mark_echoed("b") is MarkOutcome.UNKNOWN
    assert ledger.mark_echoed("never") is MarkOutcome.UNKNOWN


def test_reused_mark_name_after_clear_first_echo_is_the_flushed_one() -> None:
    ledger = MarkLedger()
    ledger.audio_sent(1.0, "x")
    ledger.mark_sent("m")
    ledger.cleared()
    ledger.audio_sent(1.0, "y")
    ledger.mark_sent("m")
    assert ledger.mark_echoed("m") is MarkOutcome.CLEARED  # the flushed echo comes first
    assert ledger.heard_text == ""
    assert ledger.mark_echoed("m") is MarkOutcome.PLAYED
    assert ledger.heard_text == "y"
