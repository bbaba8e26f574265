"""What the decoders' seeded fuzz tests share: the strategies that make near-valid JSON
objects. How many examples each runs is the Hypothesis profile's (tests/conftest.py).

A near-valid object is a good one with a few keys replaced by (key, value) pairs drawn from a
table (far cheaper to generate than optional keys): mostly other good values, some odd ones.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def key_value_table(fields: dict[str, list[Any]], odd_values: list[Any]) -> list[tuple[str, Any]]:
    """(key, value) pairs, for each key four drawn from its own values to one odd value."""
    return [
        (key, value)
        for key, values in fields.items()
        for value in [*values * (4 * len(odd_values) // len(values) + 1), *odd_values]
    ]


def with_changes(base: dict[str, Any], pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return {**base, **dict(pairs)}


def near(
    base: dict[str, Any], fields: dict[str, list[Any]], odd_values: list[Any], changes: int = 2
) -> st.SearchStrategy[dict[str, Any]]:
    """``base`` with up to ``changes`` keys replaced from its ``key_value_table``."""
    return st.lists(st.sampled_from(key_value_table(fields, odd_values)), max_size=changes).map(
        lambda pairs: with_changes(base, pairs)
    )
