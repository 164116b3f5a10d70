"""Serve your agent to phone and web callers: worker processes, health, metrics, graceful drain.

``voiceagent serve mybot:build_agent --twilio --port 8080 --workers 4`` runs ``build_agent(llm, sink)``
for every call, in N worker processes (each its own event loop) behind one port; a worker that dies is
restarted. ``/healthz``, ``/readyz`` and ``/metrics`` (Prometheus) are on the same port. SIGTERM drains:
new calls get 503, live calls finish (up to ``--drain-seconds``; then they hear a goodbye and end).
Logs are JSON lines on stderr with session, turn, round and request ids. ``--redis URL`` shares the
plan's concurrency limit across workers and machines. ``--replay CASSETTE`` runs offline: every call
replays the recorded session (LLM and the caller's words), espeak-ng speaks.
Twilio upgrades are signature-checked with $TWILIO_AUTH_TOKEN (``--allow-unsigned`` to accept any).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("factory", help="your agent factory, module:function (llm, sink) -> Agent")
    parser.add_argument("--twilio", action="store_true", help="Twilio Media Streams on /media (default)")
    parser.add_argument("--web", action="store_true", help="the browser page on / (and its /ws)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--redis", metavar="URL", help="share the plan's limit through this Redis")
    parser.add_argument("--replay", metavar="CASSETTE", help="offline: every call replays this session")
    parser.add_argument(
        "--replay-speed", type=float, default=1.0, help="offline: 1 = recorded pace, 0 = no waiting"
    )
    parser.add_argument("--plan", default="standard", choices=["standard", "enterprise"])
    parser.add_argument("--base-url", help="an OpenAI-compatible server instead of Electron")
    parser.add_argument("--model", default="electron")
    parser.add_argument("--tts", default="lightning", choices=["lightning", "espeak"])
    parser.add_argument("--voice", default=os.environ.get("SMALLEST_VOICE_ID"))
    parser.add_argument(
        "--twilio-public-url", metavar="WSS_URL", help="the wss:// URL in your TwiML (signed by Twilio)"
    )
    parser.add_argument(
        "--allow-unsigned", action="store_true", help="accept Twilio upgrades without a valid signature"
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="--web behind a proxy: the page's public host name (repeatable)",
    )
    parser.add_argument("--drain-seconds", type=float, default=30.0, help="SIGTERM: how long calls may go on")
    parser.add_argument("--goodbye", help="what a call still live at the drain deadline hears")
    for name, what in (
        ("llm-fresh", "per million fresh prompt tokens"),
        ("llm-cached", "per million cached prompt tokens"),
        ("llm-output", "per million completion tokens"),
        ("tts", "per thousand characters synthesized"),
        ("stt", "per minute of caller audio"),
    ):
        parser.add_argument(f"--rate-{name}", type=float, default=0.0, help=f"cost: {what}")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--otel",
        choices=["otlp", "console"],
        help="OpenTelemetry spans (the [otel] extra): OTLP/HTTP to $OTEL_EXPORTER_OTLP_ENDPOINT, or stderr",
    )


def run(args: argparse.Namespace) -> int:
    problem = _check(args)  # before importing what needs the extras
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    import anyio

    from voiceagent.commands.replay import load_factory
    from voiceagent.serving.jsonlog import configure_json
    from voiceagent.serving.supervisor import Supervisor
    from voiceagent.serving.worker import GOODBYE, WorkerConfig

    try:
        load_factory(args.factory)  # fail here, once, not in every worker
    except (ImportError, AttributeError, ValueError) as exc:
        print(f"error: cannot load the agent factory {args.factory!r}: {exc}", file=sys.stderr)
        return 2
    if args.replay:
        from voiceagent.cassette import CassetteError
        from voiceagent.commands import cassettes

        try:
            cassettes.load(args.replay)
        except CassetteError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    config = WorkerConfig(
        factory=args.factory,
        twilio=args.twilio or not args.web,
        web=args.web,
        replay=args.replay,
        replay_speed=args.replay_speed,
        redis=args.redis,
        plan=args.plan,
        base_url=args.base_url,
        model=args.model,
        tts="espeak" if args.replay else args.tts,
        voice=args.voice,
        public_url=args.twilio_public_url,
        allow_unsigned=args.allow_unsigned,
        drain_seconds=args.drain_seconds,
        goodbye=args.goodbye or GOODBYE,
        rates={
            "llm_fresh_per_mtok": args.rate_llm_fresh,
            "llm_cached_per_mtok": args.rate_llm_cached,
            "llm_output_per_mtok": args.rate_llm_output,
            "tts_per_kchar": args.rate_tts,
            "stt_per_minute": args.rate_stt,
        },
        log_level=args.log_level,
        otel=args.otel,
        allowed_hosts=args.allowed_host,
    )
    configure_json(worker="supervisor")
    supervisor = Supervisor(config, workers=args.workers, host=args.host, port=args.port)
    anyio.run(supervisor.run)
    return 130 if supervisor.stopped_by == signal.SIGINT else 0  # Ctrl-C: drained, then 130 as ever


def _check(args: argparse.Namespace) -> str | None:
    if args.workers < 1:
        return "--workers must be 1 or more"
    if args.drain_seconds < 0 or args.replay_speed < 0:
        return "--drain-seconds and --replay-speed must be 0 or more"
    twilio = args.twilio or not args.web
    if twilio and not (os.environ.get("TWILIO_AUTH_TOKEN") or args.allow_unsigned):
        return (
            "Twilio upgrades are signature-checked: set TWILIO_AUTH_TOKEN (your Twilio Auth Token), "
            "or pass --allow-unsigned to accept unsigned calls"
        )
    if args.twilio_public_url and not args.twilio_public_url.startswith(("wss://", "ws://")):
        return f"--twilio-public-url must be the wss:// URL Twilio dials: {args.twilio_public_url!r}"
    import importlib.util

    if importlib.util.find_spec("prometheus_client") is None:
        return "voiceagent serve needs prometheus-client (its /metrics): pip install 'voiceagent[serve]'"
    if args.redis and importlib.util.find_spec("redis") is None:
        return "--redis needs the redis client: pip install 'voiceagent[redis]'"
    if args.otel:
        wanted = "opentelemetry.sdk" if args.otel == "console" else "opentelemetry.exporter.otlp.proto.http"
        try:
            found = importlib.util.find_spec(wanted) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            return f"--otel {args.otel} needs {wanted}: pip install 'voiceagent[otel]'"
    if not args.replay and not os.environ.get("SMALLEST_API_KEY") and not args.base_url:
        return "SMALLEST_API_KEY is not set: export it, give --base-url, or try --replay CASSETTE"
    return None
