"""The `myllm` command: parses flags and calls library functions, nothing more.

- `parser.py`: every subcommand and flag; flags that set a config value are built from one
  table each (`POST_FLAGS`, `SAMPLE_FLAGS`, `PRETRAIN_FLAGS`), their types from the config
  schema, so a flag is the same as `--set section.key=value`.
- `commands.py`: one `cmd_*` function per subcommand, each a few calls into the library.

Errors a user can cause (`MyLLMError`) print one line and exit with status 2, and so do the
machine's own (a full disk, a path that cannot be written): both name the thing and the fix. Ctrl-C
exits with 130 and says how to resume. Anything else is a bug in myllm: one line saying so, status
1, and `MYLLM_DEBUG=1` shows its traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import sys

from myllm.cli import commands
from myllm.cli.commands import _without_nproc
from myllm.cli.parser import ADD_COMMANDS, check_run_dir
from myllm.errors import MyLLMError, brief

__all__ = ["build_parser", "main", "_without_nproc"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="myllm", description="Train a language model from scratch.")
    parser.add_argument("--version", action="version", version=f"myllm {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in ADD_COMMANDS:  # each adds its subcommands, bound to their `commands.cmd_*` functions
        add(sub, commands)
    return parser


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("myllm")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_run_dir(parser, args)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except MyLLMError as e:
        print(f"myllm {args.command}: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nmyllm {args.command}: interrupted; completed checkpoints are kept, re-run to resume",
              file=sys.stderr)
        return 130
    except OSError as e:
        if os.environ.get("MYLLM_DEBUG"):
            raise
        if isinstance(e, BrokenPipeError):  # `myllm generate ... | head`: the reader left, nothing is wrong
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
            return 0
        folder = next((str(v) for k in ("run", "out", "run_dir") if (v := getattr(args, k, None))), None)
        print(f"myllm {args.command}: error: {one_line(os_error_message(e, folder))}", file=sys.stderr)
        return 2
    except UnicodeDecodeError as e:  # a text file of the run (or stdin) holding bytes that are not UTF-8
        print(f"myllm {args.command}: error: a file it reads is not UTF-8 text ({brief(e)}); restore it, or "
              "re-run the stage that wrote it", file=sys.stderr)
        return 2
    except ValueError as e:
        if "null byte" not in str(e):
            return internal_error(args.command, e)
        print(f"myllm {args.command}: error: a path holds a NUL character; pass a plain path", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the last line of defence against a traceback
        return internal_error(args.command, e)


def internal_error(command: str, e: Exception) -> int:
    """A bug in myllm: one line saying so, status 1; MYLLM_DEBUG=1 shows the traceback."""
    if os.environ.get("MYLLM_DEBUG"):
        raise e
    print(f"myllm {command}: internal error: {type(e).__name__}: {brief(e, 300)} (a bug in myllm: please report it; "
          "MYLLM_DEBUG=1 shows the traceback)", file=sys.stderr)
    return 1


def one_line(message: str) -> str:
    """A message on one line (an exception text quoted inside it may hold newlines)."""
    return " ".join(message.split())


def os_error_message(e: OSError, folder: str | None = None) -> str:
    """A full disk or an unwritable path, in one line: what, where (the run folder if the error names no
    file), and what to do."""
    where = e.filename or (f"into {folder}" if folder else "the output")
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = f"{shutil.disk_usage(os.path.dirname(os.path.abspath(where)) or '.').free:,} bytes free"
        except OSError:
            free = "free space unknown"
        return (f"disk full while writing {where} ({free}); free some space and re-run the same command "
                "(completed stages and checkpoints are kept, a half-written file is never used)")
    return f"{e.strerror or e} ({where}); check that path exists and can be read and written, then re-run"
