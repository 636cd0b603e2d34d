"""Every ``${NAME}`` a stack file refers to, checked at once and located in the file.

Secrets are resolved one by one where they are used (:func:`.secrets.resolve`); ``up`` first
asks :func:`unresolved` for all of them, so one run names every unset or empty variable at
its line instead of one per run. :func:`look_alikes` finds text that looks like a reference
but is not one (``$A``, ``${A``, ``${A:-x}``), which would otherwise reach a container literally.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping

from ..errors import MissingSecret, Problem
from . import schema
from .loaded import LoadedStack
from .secrets import REFERENCE, referenced_names
from .yamlpos import KeyPath

# "${" not closed into a reference, or "$NAME" without braces (what a shell would expand).
_BROKEN_BRACES = re.compile(r"\$\{(?![A-Za-z_][A-Za-z0-9_]*\})([A-Za-z0-9_]*)")
_BARE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def secret_settings(stack: schema.Stack) -> Iterator[tuple[KeyPath, str]]:
    """(key path, value) of every setting that may hold ``${NAME}`` references."""
    if stack.proxy.token is not None:
        yield ("proxy", "token"), stack.proxy.token
    for index, model in enumerate(stack.models):
        api_key = getattr(model, "api_key", None)
        if isinstance(api_key, str):
            yield ("models", index, "api_key"), api_key
        for name, value in getattr(model, "env", {}).items():
            yield ("models", index, "env", name), value


def unresolved(loaded: LoadedStack, environ: Mapping[str, str] | None = None) -> list[Problem]:
    """One located problem per reference whose variable is unset or empty."""
    env = os.environ if environ is None else environ
    problems = []
    for path, value in secret_settings(loaded.stack):
        for name in referenced_names(value):
            if name not in env:
                problems.append(loaded.problem(
                    f"environment variable {name} is not set", path,
                    fix=f"export {name}=... before running spark-stack"))
            elif env[name] == "":
                credential = path[-1] in ("token", "api_key")
                problems.append(loaded.problem(
                    f"environment variable {name} is empty"
                    + (": an empty secret would turn authentication off" if credential
                       else " (an empty secret is refused)"), path,
                    fix=f"export {name} with the secret's value"
                    + (", or write auto to have one generated" if credential else "")))
    return sorted(problems, key=lambda problem: problem.line or 0)


def check_resolvable(loaded: LoadedStack, environ: Mapping[str, str] | None = None) -> None:
    """Raise :class:`MissingSecret` listing every unset or empty referenced variable."""
    problems = unresolved(loaded, environ)
    if problems:
        raise MissingSecret.listing(problems)


def look_alikes(loaded: LoadedStack) -> list[Problem]:
    """Errors for ``${`` that does not form a reference (``${A``, ``${A:-x}``): only
    ``${NAME}`` is replaced, so these would reach the container as written."""
    problems = []
    for path, value in secret_settings(loaded.stack):
        for match in _BROKEN_BRACES.finditer(value):
            # Only the name is echoed: what follows it (a default) may be a secret.
            problems.append(loaded.problem(
                f"'{match.group(0)}…' is not a reference: only ${{NAME}} is replaced (no "
                "defaults, no shell syntax), so it would be passed on as written", path,
                fix="write ${NAME} with a variable name of letters, digits and '_'"))
    return problems


def bare_dollars(loaded: LoadedStack) -> list[Problem]:
    """Warnings for ``$NAME`` without braces: passed on literally, unlike in a shell."""
    problems = []
    for path, value in secret_settings(loaded.stack):
        for match in _BARE.finditer(REFERENCE.sub("", value)):
            problems.append(loaded.problem(
                f"'{match.group(0)}' is not a reference and is passed on as written", path,
                fix=f"write ${{{match.group(1)}}} to use the environment variable"))
    return problems
