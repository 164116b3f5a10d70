"""``voiceagent`` command line. Each subcommand lives in its own module under voiceagent.commands.

Those modules import only the standard library at the top (the openai SDK alone takes ~0.6 s to
import), so ``voiceagent --help`` and argument errors answer at once; ``run`` imports the rest.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from voiceagent.commands.errors import run_cleanly

# name -> module; each module defines add_arguments(parser) and run(args) -> int
COMMANDS: dict[str, str] = {
    "chat": "voiceagent.commands.chat",
    "demo": "voiceagent.commands.demo",
    "replay": "voiceagent.commands.replay",
    "serve": "voiceagent.commands.serve",
}


def main(argv: Sequence[str] | None = None) -> int:
    return run_cleanly(lambda: _main(argv))


def _main(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="voiceagent", description="Voice agents on streaming LLMs.")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        modules[name] = module
        module.add_arguments(
            sub.add_parser(name, help=module.__doc__.splitlines()[0] if module.__doc__ else None)
        )
    args = parser.parse_args(argv)
    result: int = modules[args.command].run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
