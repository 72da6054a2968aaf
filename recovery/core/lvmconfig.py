"""LVM2's text metadata format (what ``vgcfgbackup`` writes and each PV's metadata area holds).

Plain data in, plain data out: :func:`parse` turns the text into nested dicts of sections and
values. The grammar, as LVM2's ``lib/config`` reads it: a file is a list of ``name = value``
assignments and ``name { ... }`` sections; a value is an integer, a double-quoted string
(backslash escapes the next character) or a list ``[v, v, ...]`` of those; ``#`` starts a comment
to the end of the line. Anything else raises :class:`ConfigError` with the line number, and the
input is bounded (at most :data:`MAX_DEPTH` nested sections, :data:`MAX_ITEMS` items), so hostile
metadata costs bounded time and memory.
"""

from __future__ import annotations

import re
from typing import TypeAlias

Scalar: TypeAlias = int | float | str
Value: TypeAlias = Scalar | list[Scalar]
Section: TypeAlias = dict[str, "Value | Section"]

MAX_DEPTH = 16
MAX_ITEMS = 1_000_000

_TOKEN = re.compile(
    r"""
    (?P<space>[ \t\r\n]+|\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<number>-?[0-9]+(?:\.[0-9]+)?)
  | (?P<name>[A-Za-z0-9_+.\-/]+)
  | (?P<punct>[={}\[\],])
    """,
    re.VERBOSE | re.DOTALL,
)


class ConfigError(ValueError):
    """The text is not LVM2 metadata; the message names the line."""


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    at = 0
    line = 1
    while at < len(text):
        m = _TOKEN.match(text, at)
        if m is None:
            raise ConfigError(f"line {line}: unexpected {text[at : at + 10]!r}")
        kind = m.lastgroup or ""
        value = m.group()
        if kind != "space":
            out.append((kind, value, line))
            if len(out) > MAX_ITEMS:
                raise ConfigError(f"line {line}: more than {MAX_ITEMS} items")
        line += value.count("\n")
        at = m.end()
    return out


def _unquote(token: str) -> str:
    return re.sub(r"\\(.)", r"\1", token[1:-1], flags=re.DOTALL)


def _scalar(kind: str, token: str, line: int) -> int | float | str:
    if kind == "string":
        return _unquote(token)
    if kind == "number":
        return float(token) if "." in token else int(token)
    raise ConfigError(f"line {line}: expected a value, found {token!r}")


def parse(text: str) -> Section:
    """The sections and values of LVM2 text metadata."""
    tokens = _tokens(text)
    at = 0

    def section(depth: int, closing: bool) -> Section:
        nonlocal at
        if depth > MAX_DEPTH:
            raise ConfigError(f"sections nested deeper than {MAX_DEPTH}")
        out: Section = {}
        while at < len(tokens):
            kind, token, line = tokens[at]
            if token == "}" and kind == "punct":
                if not closing:
                    raise ConfigError(f"line {line}: '}}' without a section")
                at += 1
                return out
            if kind not in ("name", "number"):
                raise ConfigError(f"line {line}: expected a name, found {token!r}")
            name = token
            at += 1
            if at >= len(tokens):
                raise ConfigError(f"line {line}: {name} has no value")
            kind, token, line = tokens[at]
            at += 1
            if token == "{":
                out[name] = section(depth + 1, True)
            elif token == "=":
                out[name] = value(line)
            else:
                raise ConfigError(f"line {line}: expected '=' or '{{' after {name}")
        if closing:
            raise ConfigError("a section is not closed")
        return out

    def value(line: int) -> Value:
        nonlocal at
        if at >= len(tokens):
            raise ConfigError(f"line {line}: missing value")
        kind, token, line = tokens[at]
        at += 1
        if token != "[":
            return _scalar(kind, token, line)
        items: list[int | float | str] = []
        while True:
            if at >= len(tokens):
                raise ConfigError(f"line {line}: a list is not closed")
            kind, token, line = tokens[at]
            at += 1
            if token == "]":
                return items
            if token == "," and items:
                continue
            items.append(_scalar(kind, token, line))

    return section(0, False)
