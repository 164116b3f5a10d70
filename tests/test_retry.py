import random

import pytest

from voiceagent.retry import RetryPolicy


def test_defaults_follow_electron_guidance() -> None:
    policy = RetryPolicy()
    assert (policy.base_delay, policy.max_delay, policy.max_attempts) == (0.25, 8.0, 5)
    assert policy.retry_statuses == frozenset({502, 503})
    assert policy.is_retryable_status(503) and not policy.is_retryable_status(429)


def test_delay_doubles_and_caps_without_jitter() -> None:
    policy = RetryPolicy(jitter=False)
    assert [policy.delay(n) for n in range(1, 8)] == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert policy.delay(10_000) == 8.0  # no overflow on absurd attempt numbers


def test_jitter_never_retries_earlier_than_the_doubled_delay() -> None:
    # Electron's guide: start ~250 ms. "Equal jitter" ([d/2, d]) let the first retry come after 125 ms.
    policy = RetryPolicy()
    rng = random.Random(7)
    for attempt in range(1, 9):
        capped = RetryPolicy(jitter=False).delay(attempt)
        samples = [policy.delay(attempt, rng=rng) for _ in range(200)]
        if capped * 1.5 <= policy.max_delay:
            assert all(capped <= s <= capped * 1.5 for s in samples)
        else:  # at the cap: spread below it, never above
            assert all(min(capped, 6.0) <= s <= policy.max_delay for s in samples)
        assert len(set(samples)) > 1  # it really is random
    assert min(policy.delay(1, rng=rng) for _ in range(1000)) >= 0.25


def test_bad_values_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="1-based"):
        RetryPolicy().delay(0)
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
