"""Command-line interface: thin subcommands over the library.

Every user error prints one line ``slowflow: error: ...`` and exits with code 2; ``--debug``
shows the traceback instead. The commands live in :mod:`.data` (systems, simulate),
:mod:`.model` (fit, predict, drift) and :mod:`.evaluate` (evaluate, check, reproduce);
:mod:`.options` reads values.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import warnings

from ..errors import SlowflowError
from ..io.atomic import request_stop, stop_requested
from . import data, evaluate, model
from .options import Parser

__all__ = ["build_parser", "entry", "main"]

_DISCARDED = "the output being written was discarded; existing files are unchanged"


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    p = Parser(
        prog="slowflow",
        description=(
            "Learn the slow dynamics of multiscale stochastic systems from short bursts of "
            "slow-variable data."
        ),
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.add_argument("--version", action="version", version=f"slowflow {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for group in (data, model, evaluate):
        group.register(sub)
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"slowflow: warning: {message}", file=sys.stderr)


def _interrupt(signum, frame):
    """Ctrl-C, SIGTERM and SIGHUP stop a command: temporary files are removed and existing
    outputs stay as they were. The request is recorded before the KeyboardInterrupt is
    raised, so that one the interpreter drops (raised inside a callback) still stops the
    command before it commits any output."""
    request_stop()
    raise KeyboardInterrupt


def _unraisable(hook):
    """A ``sys.unraisablehook`` that keeps quiet about a KeyboardInterrupt the interpreter
    dropped (the stop request it carried is recorded and acted on) and passes the rest on."""

    def quiet(info) -> None:
        if not isinstance(info.exc_value, KeyboardInterrupt):
            hook(info)

    return quiet


def _fail(args, exc: BaseException) -> int:
    """The one line a failed command prints (or the traceback with --debug)."""
    if args.debug:
        raise exc
    if isinstance(exc, SlowflowError):
        print(f"slowflow: error: {exc}", file=sys.stderr)
    elif isinstance(exc, MemoryError):
        print("slowflow: error: out of memory; lower the sizes asked for", file=sys.stderr)
    else:
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"slowflow: error: {type(exc).__name__}: {first} (run with --debug for a traceback)",
            file=sys.stderr,
        )
    return 2


def main(argv: list[str] | None = None) -> int:
    """Run one command line (``argv`` without the program name); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a one-line usage error
        return exc.code if isinstance(exc.code, int) else 2
    if not args.debug:
        warnings.showwarning = _show_warning
    if args.command is None:
        parser.print_help()
        return 2
    handlers, hook = {}, sys.unraisablehook
    request_stop(False)
    sys.unraisablehook = _unraisable(hook)
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is not None:
                with contextlib.suppress(ValueError):  # not the main thread: leave them
                    handlers[sig] = signal.signal(sig, _interrupt)
        code = int(args.func(args) or 0)
        if stop_requested():  # an interrupt the interpreter dropped: nothing was committed
            raise KeyboardInterrupt
        return code
    except KeyboardInterrupt:
        print(f"slowflow: interrupted; {_DISCARDED}", file=sys.stderr)
        return 130
    except (SlowflowError, MemoryError, OSError, ValueError, OverflowError) as exc:
        return _fail(args, exc)
    finally:
        request_stop(False)
        sys.unraisablehook = hook
        for sig, old in handlers.items():
            signal.signal(sig, old)


def entry() -> None:  # pragma: no cover
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C while Python was still starting up
        print(f"slowflow: interrupted; {_DISCARDED}", file=sys.stderr)
        sys.exit(130)
