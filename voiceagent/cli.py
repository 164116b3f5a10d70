"""``voiceagent`` command line. Each subcommand lives in its own module under voiceagent.commands."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> module; each module defines add_arguments(parser) and run(args) -> int
COMMANDS: dict[str, str] = {
    "demo": "voiceagent.commands.demo",
    "replay": "voiceagent.commands.replay",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voiceagent", description="Voice agents on streaming LLMs.")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        modules[name] = module
        module.add_arguments(
            sub.add_parser(name, help=module.__doc__.splitlines()[0] if module.__doc__ else None)
        )
    args = parser.parse_args(argv)
    result: int = modules[args.command].run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
