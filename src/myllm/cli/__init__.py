"""The `myllm` command: parses flags and calls library functions, nothing more.

- `parser.py`: every subcommand and flag; flags that set a config value are built from one
  table each (`POST_FLAGS`, `SAMPLE_FLAGS`, `PRETRAIN_FLAGS`), their types from the config
  schema, so a flag is the same as `--set section.key=value`.
- `commands.py`: one `cmd_*` function per subcommand, each a few calls into the library.

Errors a user can cause (`MyLLMError`) print one line and exit with status 2; Ctrl-C exits
with 130 and says how to resume.
"""

from __future__ import annotations

import argparse
import sys

from myllm.cli import commands
from myllm.cli.commands import _without_nproc
from myllm.cli.parser import ADD_COMMANDS
from myllm.errors import MyLLMError

__all__ = ["build_parser", "main", "_without_nproc"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="myllm", description="Train a language model from scratch.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in ADD_COMMANDS:  # each adds its subcommands, bound to their `commands.cmd_*` functions
        add(sub, commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except MyLLMError as e:
        print(f"myllm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nmyllm {args.command}: interrupted; completed checkpoints are kept, re-run to resume",
              file=sys.stderr)
        return 130
