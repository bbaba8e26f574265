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
from collections.abc import Mapping
from typing import Any

import cel

from lantern.errors import ConditionError, ConditionSyntaxError

# The CEL library reports each syntax error as "ERROR: <input>:LINE:COLUMN: message".
_SYNTAX_ERROR = re.compile(r"ERROR: <input>:(\d+):(\d+): ([^\n]*)")


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
