"""Console tokens for the tests: one of each role, and the settings that configure them."""

from __future__ import annotations

from typing import Any

from gateway.web.tokens import token_digest

TOKENS = {
    role: f"lt_test-{role}-token-0123456789abcdef" for role in ("technician", "marketer", "admin")
}
WEB_TOKENS: list[dict[str, Any]] = [
    {"name": f"{role}-1", "role": role, "sha256": token_digest(token)}
    for role, token in TOKENS.items()
]


def bearer(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}
