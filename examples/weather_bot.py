"""Weather bot: the agent behind ``voiceagent demo``.

One tool, a filler-first system prompt (Electron streams the filler before the tool call, so the caller
hears "Let me check..." while the tool runs). The weather comes from a small built-in sample table so
the demo runs offline; swap ``get_weather`` for a real API call in your own bot.
"""

from __future__ import annotations

from typing import Literal

from voiceagent.agent import Agent
from voiceagent.tools import tool
from voiceagent.tts import TTSSink
from voiceagent.turn import ChatStreamer, TurnConfig

# Stable, never-changing prefix first: it is what the server's prefix cache reuses turn after turn.
SYSTEM_PROMPT = (
    "You are Sunny, a friendly voice assistant on a phone line. Answer in one or two short spoken "
    "sentences, no lists or markdown. When you need the weather, first say a short filler such as "
    "'Let me check the weather for you.' and then call get_weather."
)

# Sample data for the offline demo: (temperature in C, conditions).
SAMPLE_WEATHER: dict[str, tuple[float, str]] = {
    "paris": (18.0, "sunny"),
    "london": (12.5, "light rain"),
    "new york": (22.0, "partly cloudy"),
    "bengaluru": (27.0, "humid with passing showers"),
    "tokyo": (16.0, "clear"),
}


@tool
def get_weather(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius") -> str:
    """Current weather for a city."""
    found = SAMPLE_WEATHER.get(city.strip().lower())
    if found is None:
        known = ", ".join(name.title() for name in SAMPLE_WEATHER)
        return f"No weather data for {city}. Known cities: {known}."
    celsius, conditions = found
    value = celsius if unit == "celsius" else celsius * 9 / 5 + 32
    symbol = "C" if unit == "celsius" else "F"
    return f"{city.title()}: {value:.0f} degrees {symbol}, {conditions}."


# Deterministic request parameters: the recorded demo session must match them exactly.
PARAMS = {"max_tokens": 200, "temperature": 0, "seed": 7}


def build_agent(llm: ChatStreamer, sink: TTSSink) -> Agent:
    return Agent(
        llm=llm,
        sink=sink,
        system_prompt=SYSTEM_PROMPT,
        tools=[get_weather],
        config=TurnConfig(max_rounds=3, params=PARAMS),
        session_id="weather-demo",
    )
