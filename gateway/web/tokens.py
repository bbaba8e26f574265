"""Console tokens and roles: who may see and do what.

A token is random text the holder keeps; store.yaml keeps only its SHA-256 (``web.tokens``),
so a copy of the configuration lets no one in. A token is 32 random bytes, so a plain hash is
as strong as a slow one would be: nobody guesses 256 bits.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.config import Role, WebToken

__all__ = ["ROLES", "Principal", "find_token", "new_token", "token_digest"]

TOKEN_PREFIX = "lt_"  # recognisable in a paste, and by secret scanners
_TOKEN_BYTES = 32
# What each role may do; admin may do both.
ROLES: dict[Role, frozenset[str]] = {
    "technician": frozenset({"technician"}),
    "marketer": frozenset({"marketer"}),
    "admin": frozenset({"technician", "marketer"}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request comes from: the token's name and role."""

    name: str
    role: Role

    def may(self, need: str) -> bool:
        return need in ROLES[self.role]


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(_TOKEN_BYTES)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def find_token(token: str, configured: Iterable[WebToken]) -> Principal | None:
    """The principal the token belongs to, or None. Every entry is compared, in constant
    time, so the answer's timing says nothing about which digits matched."""
    digest = token_digest(token)
    found: Principal | None = None
    for entry in configured:
        if hmac.compare_digest(digest, entry.sha256):
            found = Principal(entry.name, entry.role)
    return found
