"""Action topics and payloads: Jinja2 templates, compiled once at load, rendered per firing.

Templates run in Jinja's immutable sandbox (no attribute tricks, no mutating the context),
with StrictUndefined so a misspelt name is an error rather than an empty string, and without
HTML autoescaping since the output is MQTT topics and JSON, not HTML. A null value renders
as the empty string, not Python's "None", which means nothing to whoever reads the payload.

A payload is any JSON value; every string inside it is a template (a string without ``{{``,
``{%`` or ``{#`` is kept as it is, uncompiled). A payload string that is exactly one
expression (``"{{ event.data.dwell_s }}"``) keeps the expression's JSON type, so a number
reaches the central record as a number; any other template renders to a string. Topics are
always strings.
Errors carry ``path``, where in the JSON value the template is (``.visitor``, ``[0].name``),
so the caller can name the field in full.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator, Mapping
from datetime import date
from typing import Any, TypeAlias

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from lantern.errors import TemplateError

_TEMPLATE_MARKERS = ("{{", "{%", "{#")  # Jinja's expression, statement and comment openers


def _blank_null(value: Any) -> Any:
    return "" if value is None else value


_ENV = ImmutableSandboxedEnvironment(
    undefined=jinja2.StrictUndefined, autoescape=False, finalize=_blank_null
)
# Compiling a template costs about a millisecond, and a chain's rules repeat the same topics and
# payload values: one compilation each (compiled templates are immutable, so shared safely).
_COMPILED_TEMPLATES = 4096
_compiled_text = functools.lru_cache(maxsize=_COMPILED_TEMPLATES)(_ENV.from_string)
_compiled_expression = functools.lru_cache(maxsize=_COMPILED_TEMPLATES)(
    functools.partial(_ENV.compile_expression, undefined_to_none=False)
)


class ValueTemplate:
    """One expression whose value is kept as JSON: a number stays a number."""

    __slots__ = ("_expression", "source")

    def __init__(self, source: str, expression: str) -> None:
        self.source = source
        try:
            self._expression = _compiled_expression(expression)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError("", f"line {exc.lineno}: {exc.message}") from None

    def __repr__(self) -> str:
        return f"ValueTemplate({self.source!r})"

    def render(self, context: Mapping[str, Any]) -> Any:
        try:
            value = self._expression(**context)
            if isinstance(value, jinja2.Undefined):
                str(value)  # a StrictUndefined raises here, naming what is missing
            return _json_value(value)
        except Exception as exc:  # undefined names, sandbox refusals, filters' own errors
            raise TemplateError("", f"{exc} (in {self.source!r})") from None


def _json_value(value: Any) -> Any:
    """The expression's value as JSON: times as ISO 8601, anything else unknown as text."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a JSON number")
        return value
    if isinstance(value, date):  # a datetime is a date too
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(key): _json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    return str(value)


class TextTemplate:
    """One compiled string template."""

    __slots__ = ("_template", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._template = _compiled_text(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError("", f"line {exc.lineno}: {exc.message}") from None

    def __repr__(self) -> str:
        return f"TextTemplate({self.source!r})"

    def render(self, context: Mapping[str, Any]) -> str:
        """The text; TemplateError when the template fails (an undefined name, say)."""
        try:
            return self._template.render(context)
        except Exception as exc:  # undefined names, sandbox refusals, filters' own errors
            raise TemplateError("", f"{exc} (in {self.source!r})") from None


# A compiled JSON value: containers of compiled nodes, templates, and constants.
_Node: TypeAlias = (
    "TextTemplate | ValueTemplate | dict[str, _Node] | list[_Node] | str | int | float | bool"
    " | None"
)
# "{{ expression }}" and nothing else around it (the expression holds no second "{{").
_LONE_EXPRESSION = re.compile(r"\s*\{\{(?P<expression>(?:(?!\{\{|\}\}).)*)\}\}\s*", re.DOTALL)


class JsonTemplate:
    """A JSON value whose strings are templates."""

    __slots__ = ("_root",)

    def __init__(self, value: Any) -> None:
        self._root = _compile(value, "")

    def render(self, context: Mapping[str, Any]) -> Any:
        """A new JSON value with every template rendered; TemplateError names the path."""
        return _render(self._root, context)

    def sources(self) -> Iterator[tuple[str, str]]:
        """(path, source) of every template in the value, in order."""
        return _sources(self._root, "")


def selections(source: str) -> frozenset[tuple[str, ...]]:
    """The context names a template reads, each with the fields selected from it
    (``{{ visitor.id }}`` gives ``("visitor", "id")``); names the template sets itself (a
    ``for`` loop's) are left out. The source must compile (a TextTemplate did)."""
    tree = _ENV.parse(source)
    names = meta.find_undeclared_variables(tree)
    found: set[tuple[str, ...]] = {(name,) for name in names}
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        path: list[str] = []
        current: nodes.Node = node
        while isinstance(current, nodes.Getattr | nodes.Getitem):
            if isinstance(current, nodes.Getattr):
                path.append(current.attr)
            elif isinstance(current.arg, nodes.Const) and isinstance(current.arg.value, str):
                path.append(current.arg.value)
            else:
                path.clear()  # a computed index: what follows it cannot be known
            current = current.node
        if isinstance(current, nodes.Name) and current.name in names and path:
            found.add((current.name, *reversed(path)))
    return frozenset(found)


def is_template(text: str) -> bool:
    """Whether the string holds any Jinja syntax (otherwise it renders as itself)."""
    return any(marker in text for marker in _TEMPLATE_MARKERS)


def _compile(value: Any, path: str) -> _Node:
    if isinstance(value, str):
        if not is_template(value):
            return value
        try:
            if lone := _LONE_EXPRESSION.fullmatch(value):
                return ValueTemplate(value, lone["expression"])
            return TextTemplate(value)
        except TemplateError as exc:
            raise TemplateError(path, exc.message) from None
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TemplateError(path, f"{value} is not a JSON number")
        return value
    if isinstance(value, list):
        return [_compile(item, f"{path}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, dict):
        compiled: dict[str, _Node] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TemplateError(path, f"key {key!r} is not text; quote it")
            compiled[key] = _compile(item, f"{path}.{key}")
        return compiled
    if isinstance(value, date):  # a datetime is a date too
        raise TemplateError(path, f"{value} is a date, not JSON; quote it to keep it as text")
    raise TemplateError(path, f"{type(value).__name__} is not a JSON value")


def _sources(node: _Node, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, TextTemplate | ValueTemplate):
        yield path, node.source
    elif isinstance(node, dict):
        for key, item in node.items():
            yield from _sources(item, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _sources(item, f"{path}[{index}]")


def _render(node: _Node, context: Mapping[str, Any]) -> Any:
    # The path is built only on the way out of an error: rendering is on the hot path.
    if isinstance(node, TextTemplate | ValueTemplate):
        return node.render(context)
    if isinstance(node, dict):
        rendered: dict[str, Any] = {}
        for key, item in node.items():
            try:
                rendered[key] = _render(item, context)
            except TemplateError as exc:
                raise TemplateError(f".{key}{exc.path}", exc.message) from None
        return rendered
    if isinstance(node, list):
        items: list[Any] = []
        for index, item in enumerate(node):
            try:
                items.append(_render(item, context))
            except TemplateError as exc:
                raise TemplateError(f"[{index}]{exc.path}", exc.message) from None
        return items
    return node
