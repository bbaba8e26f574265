"""A rule's ``if``: a CEL expression (https://cel.dev), compiled once at load, run per trigger.

CEL is small, side-effect free and terminates, so a marketer's condition can neither loop nor
reach the gateway. ``compile`` reports a syntax error with its line and column in the
expression; ``evaluate`` raises ConditionError when the expression fails at run time (a
missing key, a type mismatch) or gives something other than true or false.

Converting the variables to CEL values costs far more than running a condition (several
microseconds a name against well under one), so the engine makes one ``Variables`` per
trigger for every rule's condition, and a name is converted only when a condition that
reads it first runs.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from lantern.errors import ConditionError, ConditionSyntaxError

# The cel package's __init__ first imports its command-line REPL (prompt_toolkit, pygments,
# rich): 8 MiB of the gateway's memory and 90 ms of each start, for a module Lantern never
# runs. Taken as imported, it is not loaded; the engine needs only the compiled extension.
sys.modules.setdefault("cel.cli", ModuleType("cel.cli"))

import cel  # noqa: E402 - after the stand-in for its REPL

# The CEL library reports each syntax error as "ERROR: <input>:LINE:COLUMN: message".
_SYNTAX_ERROR = re.compile(r"ERROR: <input>:(\d+):(\d+): ([^\n]*)")

# CEL's lexical grammar, as far as finding the names an expression reads needs it: string and
# bytes literals (raw, triple-quoted) and comments are skipped whole, so a dot or a word inside
# them is not taken for a field. The CEL library compiles but shows no parse tree.
_TOKEN = re.compile(
    r"""(?P<skip>\s+|//[^\n]*)
    |(?P<string>(?:[rR][bB]?|[bB][rR]?)?(?:\"\"\"(?:\\.|[^\\])*?\"\"\"|'''(?:\\.|[^\\])*?'''
        |"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'))
    |(?P<number>0[xX][0-9a-fA-F]+[uU]?|[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?[uU]?|\.[0-9]+)
    |(?P<name>[_a-zA-Z][_a-zA-Z0-9]*)
    |(?P<other>.)""",
    re.VERBOSE | re.DOTALL,
)
# Macros that bind a name for their body: list.exists(x, x > 1), cel.bind(x, 1, x + 1).
_BINDING_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter", "bind"})
# Words that are not variables: literals, the `in` operator, type names (`type(x) == int`).
_NOT_VARIABLES = frozenset(
    {
        "true",
        "false",
        "null",
        "in",
        "int",
        "uint",
        "double",
        "bool",
        "string",
        "bytes",
        "list",
        "map",
        "type",
        "null_type",
        "dyn",
        "cel",
    }
)


class Variables:
    """The names conditions can read, each converted to a CEL value on first use."""

    __slots__ = ("_context", "_given", "_values")

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = values
        self._context = cel.Context()
        self._given: set[str] = set()

    def _for(self, names: frozenset[str]) -> cel.Context:
        for name in names - self._given:
            self._given.add(name)
            if name not in self._values:
                continue  # a name bound inside the expression (a macro's), or an undefined one
            try:
                self._context.add_variable(name, self._values[name])
            except Exception as exc:  # the library raises assorted builtin types on odd values
                raise ConditionError(f"{name} cannot be given to CEL: {exc}") from None
        return self._context


class Condition:
    """A compiled CEL expression that must give a boolean."""

    __slots__ = ("_names", "_program", "source")

    def __init__(self, source: str, program: cel.Program) -> None:
        self.source = source
        self._program = program
        self._names = frozenset(program.variables())

    def __repr__(self) -> str:
        return f"Condition({self.source!r})"

    def evaluate(self, variables: Variables | Mapping[str, Any]) -> bool:
        """The expression's value; ConditionError if it fails or is not a boolean."""
        context = variables if isinstance(variables, Variables) else Variables(variables)
        try:
            result = self._program.execute(context._for(self._names))
        except Exception as exc:  # KeyError, TypeError, RuntimeError... per CEL failure kind
            raise ConditionError(_runtime_message(exc)) from None
        if not isinstance(result, bool):
            raise ConditionError(
                f"must give true or false, gave {type(result).__name__} {result!r}"
            )
        return result


def compile(source: str) -> Condition:
    """The expression compiled; ConditionSyntaxError naming line and column otherwise."""
    if not source.strip():
        raise ConditionSyntaxError("is empty; leave `if` out for a rule without a condition")
    try:
        program = cel.compile(source)
    except Exception as exc:  # ValueError for syntax errors; anything else is one too
        raise ConditionSyntaxError(_syntax_message(str(exc))) from None
    return Condition(source, program)


def selections(source: str) -> frozenset[tuple[str, ...]]:
    """The variables an expression reads, each with the fields selected from it:
    ``visitor.segment == "x" && has(event.data.gtin)`` gives ``("visitor", "segment")`` and
    ``("event", "data", "gtin")``. A method call ends a selection (``event.data.zone`` in
    ``event.data.zone.startsWith("a")``), a constant index (``zone["id"]``) continues it,
    and the names a macro binds (``x`` in ``list.exists(x, x > 1)``) are left out."""
    tokens = [
        (kind, text)
        for match in _TOKEN.finditer(source)
        for kind, text in match.groupdict().items()
        if text is not None and kind != "skip"
    ]
    bound = {
        tokens[index + 3][1]
        for index in range(len(tokens) - 4)
        if tokens[index] == ("other", ".")
        and tokens[index + 1][1] in _BINDING_MACROS
        and tokens[index + 2] == ("other", "(")
        and tokens[index + 3][0] == "name"
        and tokens[index + 4] == ("other", ",")
    }
    found: set[tuple[str, ...]] = set()
    for index, (kind, text) in enumerate(tokens):
        previous = tokens[index - 1] if index else ("", "")
        if kind != "name" or previous == ("other", ".") or text in _NOT_VARIABLES | bound:
            continue
        if _at(tokens, index + 1) == ("other", "("):
            continue  # a function: has(...), size(...), timestamp(...)
        found.add(_selection(tokens, index))
    return frozenset(found)


def _at(tokens: list[tuple[str, str]], index: int) -> tuple[str, str]:
    return tokens[index] if index < len(tokens) else ("", "")


def _selection(tokens: list[tuple[str, str]], index: int) -> tuple[str, ...]:
    """The name at ``index`` and the fields selected after it, up to a method call."""
    path = [tokens[index][1]]
    index += 1
    while True:
        if (
            _at(tokens, index) == ("other", ".")
            and _at(tokens, index + 1)[0] == "name"
            and _at(tokens, index + 2) != ("other", "(")
        ):
            path.append(tokens[index + 1][1])
            index += 2
        elif (
            _at(tokens, index) == ("other", "[")
            and _at(tokens, index + 1)[0] == "string"
            and _at(tokens, index + 2) == ("other", "]")
        ):
            literal = tokens[index + 1][1].lstrip("rRbB")
            quote = 3 if literal[:3] in ('"""', "'''") else 1
            path.append(literal[quote:-quote])
            index += 3
        else:
            return tuple(path)


def _syntax_message(raw: str) -> str:
    errors = [
        f"line {line}, column {column}: {message}"
        for line, column, message in _SYNTAX_ERROR.findall(raw)
    ]
    return "; ".join(errors) if errors else raw


def _runtime_message(exc: Exception) -> str:
    if isinstance(exc, KeyError):  # a map without the key: str(KeyError) is only the key
        return f"no such key: {exc}"
    return str(exc) or type(exc).__name__
