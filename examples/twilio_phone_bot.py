"""The weather bot on the phone over Twilio Media Streams: ``phone_bot`` with ``--provider twilio``.

    python -m voiceagent.examples.twilio_phone_bot --port 8080 --public-url wss://your.host/media
    python -m voiceagent.examples.twilio_phone_bot --selftest      # one offline call, every part on loopback

Point your Twilio number's voice webhook at TwiML like the one this prints (a TLS proxy in front of the
port: Twilio only dials wss on 443). Set TWILIO_AUTH_TOKEN: every upgrade's X-Twilio-Signature is
checked against it and --public-url, and the server refuses to start without it. The same bot over
Telnyx or Plivo: ``voiceagent.examples.phone_bot``.
"""

from __future__ import annotations

import sys

from . import phone_bot


def main(argv: list[str] | None = None) -> int:
    return phone_bot.main(argv, provider="twilio", description=__doc__.splitlines()[0] if __doc__ else None)


if __name__ == "__main__":
    sys.exit(main())
