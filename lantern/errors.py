"""The one error tree of Lantern.

::

    LanternError                        the root: everything Lantern raises on purpose
    ├── InputError (ValueError)         something given to Lantern is wrong; str() says what
    │   ├── DecodeError                 a device's message that cannot be decoded: a dead
    │   │                               letter with its ``reason`` (devices/)
    │   ├── RulesInvalid                a rules folder that does not validate: one RuleProblem
    │   │                               (file, field, what) per problem (rules/)
    │   ├── ConditionSyntaxError        a CEL condition that does not compile (rules/)
    │   ├── ConditionError              a CEL condition that fails when evaluated (rules/)
    │   ├── TemplateError               a Jinja2 template that fails, at ``path`` (rules/)
    │   ├── RecordingError              a recording line not in the recording format
    │   └── ConfigError                 store.yaml or the environment is invalid: one line per
    │                                   problem in ``problems``
    ├── StartupError                    something the gateway must hold is taken: web.port in
    │                                   use, the data folder held by another lantern run
    ├── BrokerUnreachable               the MQTT broker cannot be reached (lantern record)
    ├── OutboxError                     the outbox database cannot be opened or written: the
    │   │                               one failure that stops the gateway (exit 1)
    │   └── OutboxFull                  no room for a batch: the disk is full, or the budget is
    │                                   full of events that are never dropped; nothing was
    │                                   written, acknowledgements wait, the commit is retried
    └── SinkError                       a sink cannot deliver a batch (``confirmed``: how
        │                               much of its head the far side took first)
        ├── RetryableSinkError          5xx, 429, connection trouble, no ack: retried with
        │                               backoff
        └── RejectedBatchError          refused for good (another 4xx, a refused publish):
                                        parked with the reason

Every ``InputError`` is also a ``ValueError``, so code that validates values (pydantic
validators, ``json``) treats them as it treats any bad value.

Where each is caught: a decode error at the pipeline (a dead letter); a condition or template
error at rule evaluation (an ``error`` trace); ``RulesInvalid`` by the rules watcher (the old
set keeps running) and the CLI (one line per problem); ``ConfigError`` by the CLI (one line per
problem, exit 2); ``StartupError`` and ``BrokerUnreachable`` by the CLI (one line, exit 1);
``OutboxFull`` by the committer (it waits and retries; any other ``OutboxError`` there stops
the gateway); sink errors inside their sink (retry or park). Anything else that escapes a
part is caught at that part's boundary, logged with its context, and the part goes on.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BrokerUnreachable",
    "ConditionError",
    "ConditionSyntaxError",
    "ConfigError",
    "DecodeError",
    "InputError",
    "LanternError",
    "OutboxError",
    "OutboxFull",
    "RecordingError",
    "RejectedBatchError",
    "RetryableSinkError",
    "RuleProblem",
    "RulesInvalid",
    "SinkError",
    "StartupError",
    "TemplateError",
]


class LanternError(Exception):
    """The root of every error Lantern raises on purpose."""


class InputError(LanternError, ValueError):
    """Something given to Lantern (a message, a rule, a recording, the config) is wrong."""


class DecodeError(InputError):
    """A message of a decoder's family that cannot be decoded; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RuleProblem:
    """What is wrong with one field of one rule file; str() is ``file: field: message``."""

    file: str
    field: str  # a dotted path (then[0].publish.topic), or (yaml) for the file as a whole
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.message}"


class RulesInvalid(InputError):
    """A rule set that cannot be used: every problem of every file, in file order."""

    def __init__(self, problems: list[RuleProblem]) -> None:
        super().__init__("\n".join(str(problem) for problem in problems))
        self.problems = problems


class ConditionSyntaxError(InputError):
    """A condition that does not compile; the message names the line and column."""


class ConditionError(InputError):
    """A condition that failed at run time or did not give a boolean."""


class TemplateError(InputError):
    """A template that does not compile or fails to render, at ``path`` in its JSON value."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


class RecordingError(InputError):
    """A recording line that is not in the recording format; says which line and why."""


class ConfigError(InputError):
    """The configuration is invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class StartupError(LanternError):
    """The gateway cannot start: something it must hold is taken. str() says what to fix."""


class BrokerUnreachable(LanternError):
    """The MQTT broker could not be reached in time; str() names it and the last error."""


class OutboxError(LanternError):
    """The outbox database cannot be opened or written."""


class OutboxFull(OutboxError):
    """No room for a batch (disk full, or the budget full of events never dropped); nothing
    of it was written. The committer retries it; the broker keeps what is unacknowledged."""


class SinkError(LanternError):
    """A sink could not deliver a batch; ``confirmed`` rows at its head were delivered."""

    def __init__(self, reason: str, confirmed: int = 0) -> None:
        super().__init__(reason)
        self.confirmed = confirmed


class RetryableSinkError(SinkError):
    """Delivery failed in a way that may pass later (5xx, 429, connection error)."""

    def __init__(self, reason: str, retry_after_s: float | None = None, confirmed: int = 0) -> None:
        super().__init__(reason, confirmed)
        self.retry_after_s = retry_after_s


class RejectedBatchError(SinkError):
    """The far side refused for good (a 4xx other than 429): the rows after the ``confirmed``
    ones, or only the next ``refused`` of them."""

    def __init__(
        self,
        reason: str,
        status: int | None = None,
        confirmed: int = 0,
        refused: int | None = None,
    ) -> None:
        super().__init__(reason, confirmed)
        self.status = status
        self.refused = refused
