"""The one error tree of Lantern.

::

    Exception
    ├── ValueError
    │   ├── devices.model.DecodeError      a message of a device family that cannot be decoded;
    │   │                                  becomes a dead letter with its reason
    │   ├── rules.model.RulesInvalid       a rules folder that does not validate: one
    │   │                                  RuleProblem (file, field, what) per problem
    │   └── gateway.backtest.RecordingError a recording line not in DESIGN.md's format
    └── LanternError                       everything the gateway itself raises
        ├── ConfigError                    store.yaml / environment invalid: one line per problem
        ├── OutboxError                    the outbox database cannot be opened or written
        └── SinkError                      a sink cannot deliver
            ├── RetryableSinkError         5xx, 429, connection trouble: retried with backoff
            └── RejectedBatchError         another 4xx: the batch is parked with the reason

Decode and rule errors live beside their pure cores (``devices/`` and ``rules/`` may not import
the gateway), and are caught at the gateway's boundaries: a decode error at the pipeline (dead
letter), a rule error at rule evaluation (trace entry).
"""

from __future__ import annotations


class LanternError(Exception):
    """Base of every error the gateway raises itself."""


class ConfigError(LanternError):
    """The configuration is invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class OutboxError(LanternError):
    """The outbox database cannot be opened or written."""


class SinkError(LanternError):
    """A sink could not deliver a batch."""


class RetryableSinkError(SinkError):
    """Delivery failed in a way that may pass later (5xx, 429, connection error)."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class RejectedBatchError(SinkError):
    """The far side refused the batch for good (a 4xx other than 429)."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
