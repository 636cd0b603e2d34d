"""The one exception hierarchy of spark-stack.

Every error a user can cause or meet is a :class:`SparkStackError` carrying a one-line
``message`` (the cause) and an optional ``fix`` (what to do). The CLI catches the base class
once, prints ``error: <message>`` and ``fix: <fix>`` and exits with ``exit_code``; a traceback
is shown only with ``--debug`` or ``SPARK_STACK_DEBUG=1``. Messages never contain resolved
secrets: code that raises must mask them first.

Exit codes (documented in the README):
    0 ok, 1 operation failed, 2 usage or stack-file error, 3 host unreachable,
    4 not healthy / check failed.
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_UNHEALTHY = 4


class SparkStackError(Exception):
    """Base class: an operation failed (exit 1)."""

    exit_code: int = EXIT_FAILED

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return self.message


class UsageError(SparkStackError):
    """The command line asks for something impossible (exit 2)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Problem:
    """One problem found in a stack file, located for a person to find and fix."""

    message: str
    file: str = "<stack>"
    line: int | None = None
    column: int | None = None
    key_path: str = ""
    fix: str | None = None

    def location(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return where

    def as_json(self) -> dict[str, str | int | None]:
        """The shape `--json` output gives every problem and warning."""
        return {"location": self.location(), "line": self.line, "column": self.column,
                "key_path": self.key_path, "message": self.message, "fix": self.fix}

    def render(self) -> str:
        text = f"{self.location()}: "
        if self.key_path:
            text += f"{self.key_path}: "
        text += self.message
        if self.fix:
            text += f" (fix: {self.fix})"
        return text


class MissingSecret(UsageError):
    """A ``${VAR}`` the stack file refers to is unset or empty where it is used (exit 2)."""

    problems: list[Problem]

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message, fix=fix)
        self.problems = []

    @classmethod
    def listing(cls, problems: list[Problem]) -> MissingSecret:
        """One error naming every unresolvable reference, each at its place in the file."""
        head = problems[0].render()
        if len(problems) > 1:
            head += f" (and {len(problems) - 1} more)"
        error = cls(head)
        error.problems = problems
        return error


class StackFileError(SparkStackError):
    """The stack file is missing, unparsable or invalid (exit 2); lists every problem."""

    exit_code = EXIT_USAGE

    def __init__(
        self, problems: list[Problem], *, fix: str | None = None, what: str = "stack file",
        warnings: list[Problem] | None = None,
    ) -> None:
        self.problems = problems
        self.what = what  # "preset file" for a broken preset
        self.warnings = warnings or []  # lint found beside the errors: listed with them
        head = problems[0].render() if problems else "invalid stack file"
        if len(problems) > 1:
            head += f" (and {len(problems) - 1} more)"
        super().__init__(head, fix=fix)


class LauncherPathTaken(UsageError):
    """``claude.launcher`` names a file spark-stack did not write, or a directory (exit 2)."""


class HostUnreachable(SparkStackError):
    """The GB10 host (or its docker daemon) cannot be reached (exit 3)."""

    exit_code = EXIT_UNREACHABLE


class HostKeyError(HostUnreachable):
    """The host's SSH key is unknown or changed; refused until the user trusts it (exit 3)."""


class AuthenticationError(HostUnreachable):
    """SSH authentication to the host failed (exit 3)."""


class PreflightError(SparkStackError):
    """A check before deploying failed; nothing was changed (exit 4)."""

    exit_code = EXIT_UNHEALTHY


class NotHealthy(SparkStackError):
    """A deployed part does not serve or a check failed (exit 4)."""

    exit_code = EXIT_UNHEALTHY


class DeployError(SparkStackError):
    """Changing containers on the host failed (exit 1)."""


class LockHeld(SparkStackError):
    """Another `up`/`down` holds this stack's lock (exit 1)."""


class ProxyStartError(SparkStackError):
    """The local translating proxy could not be started (exit 1)."""


class ClaudeNotInstalled(SparkStackError):
    """The `claude` CLI is not on PATH (exit 1)."""


class TeamStateError(SparkStackError):
    """The team's key file or usage database is unusable (wrong permissions, corrupt) (exit 1)."""
