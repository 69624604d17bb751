"""How the command line reads values: strict number parsing, one-line usage errors, options
generated from the frozen config dataclasses, and settings files (``--config FILE.toml``).

Nothing here decides what a command does; the commands are thin calls into the library.
"""

from __future__ import annotations

import argparse
import math
import re
import shlex
import sys
from dataclasses import MISSING, fields
from pathlib import Path

from ..errors import ConfigError
from ..io.atomic import check_output

_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def number(text: str, option: str) -> float:
    """One finite number written plainly (no inf, nan, inner spaces or underscores)."""
    item = str(text).strip()
    if not _FLOAT.fullmatch(item):
        raise ConfigError(f"{option}: expected a number like 1.5 or 2e-3, got {text!r}")
    value = float(item)
    if not math.isfinite(value):
        raise ConfigError(f"{option}: {text!r} is too large (overflows to infinity)")
    return value


def floats(text: str, option: str = "--x0") -> list[float]:
    """Comma-separated finite numbers, parsed strictly: ``"1 2"`` is an error, not 12."""
    items = str(text).split(",")
    if any(not item.strip() for item in items):
        raise ConfigError(
            f"{option}: expected comma-separated numbers like 1.5,1.0, got {text!r} (an empty item)"
        )
    return [number(item, option) for item in items]


def finite(text: str) -> float:
    """argparse type of float options: finite numbers only."""
    try:
        return number(text, "value")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("value: ")) from None


def integer(text: str) -> int:
    """argparse type of integer options: ``12``, ``-3`` or an exact ``1e6``; no ``1.5``."""
    item = str(text).strip()
    if re.fullmatch(r"[+-]?\d+", item):
        return int(item)
    if _FLOAT.fullmatch(item):
        value = float(item)
        if math.isfinite(value) and value == int(value) and abs(value) < 2**63:
            return int(value)
    raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")


def integer_or_zero(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def seed(text: str) -> int:
    """argparse type of --seed: an integer in [0, 2^63)."""
    value = integer(text)
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 2^63 - 1, got {text!r}")
    return value


def memory(text: str):
    """--memory: an integer >= 0 or 'auto'."""
    if str(text).strip().lower() == "auto":
        return "auto"
    return integer_or_zero(text)


class Parser(argparse.ArgumentParser):
    """argparse with slowflow's one-line errors (``slowflow: error: ...``, exit code 2)."""

    def error(self, message: str):  # type: ignore[override]
        print(f"slowflow: error: {self.prog.removeprefix('slowflow ')}: {message}", file=sys.stderr)
        raise SystemExit(2)


class Given(argparse.Action):
    """Store the value and remember that the option was given (``args.given``)."""

    def __init__(self, *a, flag: bool = False, **kw) -> None:
        self.flag = flag
        if flag:
            kw.update(nargs=0, default=False)
        super().__init__(*a, **kw)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, True if self.flag else values)
        given = set(getattr(namespace, "given", set()))
        given.add(self.dest)
        namespace.given = given


def given(args) -> set[str]:
    """The options given on the command line (those declared with :class:`Given`)."""
    return set(getattr(args, "given", set()))


#: argparse types of config fields whose range is narrower than their annotation says.
_FIELD_TYPES = {"seed": seed, "skip_first": integer_or_zero}


def _arg_type(name: str, annotation: str):
    if name in _FIELD_TYPES:
        return _FIELD_TYPES[name]
    kind = str(annotation).split("|")[0].strip()
    return {"int": integer, "float": finite}.get(kind, str)


def config_options(parser, cls, helps: dict[str, str | None]) -> None:
    """Add an option ``--field-name`` for each field of the dataclass ``cls`` named in
    ``helps`` (in that order), with the field's default and a type from its annotation;
    bool fields become flags. Every option records that it was given (:class:`Given`)."""
    by_name = {f.name: f for f in fields(cls)}
    for name, text in helps.items():
        f = by_name[name]
        flag = "--" + name.replace("_", "-")
        default = None if f.default is MISSING else f.default
        if str(f.type) == "bool":
            parser.add_argument(flag, action=Given, flag=True, help=text)
            continue
        shown = f"{text} " if text else ""
        parser.add_argument(
            flag,
            action=Given,
            type=_arg_type(name, f.type),
            default=default,
            help=f"{shown}(default {default})" if default is not None else text,
        )


def read_config_file(path, tables: dict[str, type]) -> dict[str, dict]:
    """Settings from a TOML file (``--config FILE.toml``): one table per name in
    ``tables`` (e.g. ``[train]`` for :class:`~slowflow.train.TrainConfig`), each key a field
    of that table's dataclass; ``[model]`` may also name a ``preset``. Unknown tables or
    keys are refused in one line naming the file, the table and the key."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    p = Path(path)
    try:
        with open(p, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"--config {p}: cannot read ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {p}: not valid TOML ({exc})") from None
    out: dict[str, dict] = {}
    for table, body in doc.items():
        if table not in tables or not isinstance(body, dict):
            raise ConfigError(
                f"--config {p}: unknown table [{table}]; expected "
                + ", ".join(f"[{t}]" for t in tables)
            )
        known = {f.name for f in fields(tables[table])} | (
            {"preset"} if table == "model" else set()
        )
        for key in body:
            if key not in known:
                raise ConfigError(
                    f"--config {p}: [{table}] has no setting {key!r}; expected one of "
                    + ", ".join(sorted(known))
                )
        out[table] = dict(body)
    return out


def command_line() -> str:
    """The command as typed, for the provenance of what it writes."""
    return " ".join(shlex.quote(a) for a in ["slowflow", *sys.argv[1:]])


def check_out(path, suffixes, inputs=()) -> None:
    """``--out`` must have one of ``suffixes`` and be writable without touching an input."""
    if Path(path).suffix.lower() not in suffixes:
        raise ConfigError(f"--out {path}: unsupported extension; use one of {', '.join(suffixes)}")
    check_output(path, inputs)
