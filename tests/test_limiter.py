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


@pytest.mark.anyio
async def test_a_turn_waiting_for_a_slot_speaks_the_filler_then_answers() -> None:
    # Waiting for a slot (here the in-process limiter; tests/test_redis_limiter.py has the fleet one) is
    # not dead air: once opening the stream passes TurnConfig.filler_after the filler is spoken.
    from voiceagent.agent import Agent
    from voiceagent.events import SpeechQueued, TurnEvent
    from voiceagent.llm import LLMClient
    from voiceagent.testing.openai_server import FakeOpenAIServer, text_reply
    from voiceagent.testing.sinks import RecordingSink
    from voiceagent.turn import TurnConfig

    limiter = ConcurrencyLimiter(1)
    filler_queued = anyio.Event()
    results = []

    def on_event(event: TurnEvent) -> None:
        if isinstance(event, SpeechQueued) and event.text == TurnConfig().filler:
            filler_queued.set()

    async with FakeOpenAIServer() as server:
        server.enqueue(text_reply("There you go."))
        llm = LLMClient(base_url=server.base_url, api_key="sk_test", limiter=limiter)
        agent = Agent(
            llm=llm, sink=RecordingSink(), system_prompt="Be brief.", config=TurnConfig(filler_after=0.2)
        )

        async def respond() -> None:
            results.append(await agent.respond("hello?", on_event=on_event))

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                async with limiter.slot():  # someone else's request holds the only slot
                    tg.start_soon(respond)
                    await filler_queued.wait()
                    assert not server.requests
        await llm.aclose()
    [result] = results
    assert result.spoken_text == "One moment. There you go." and not result.fallback_spoken
