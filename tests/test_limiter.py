import anyio
import pytest

from voiceagent.limiter import ConcurrencyLimiter


@pytest.mark.anyio
async def test_plan_caps_in_flight_and_queues_the_rest() -> None:
    limiter = ConcurrencyLimiter.for_plan("standard")
    peak = 0
    release = anyio.Event()

    async def request() -> None:
        nonlocal peak
        async with limiter.slot():
            peak = max(peak, limiter.in_flight)
            await release.wait()

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(request)
        await anyio.wait_all_tasks_blocked()
        assert limiter.in_flight == 3
        assert limiter.waiting == 2
        release.set()
    assert peak == 3
    assert limiter.in_flight == 0


@pytest.mark.anyio
async def test_one_task_may_hold_two_slots() -> None:
    limiter = ConcurrencyLimiter(2)
    async with limiter.slot(), limiter.slot():
        assert limiter.in_flight == 2


def test_unknown_plan_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown plan 'gold'"):
        ConcurrencyLimiter.for_plan("gold")
    assert ConcurrencyLimiter.for_plan("enterprise").limit == 20
