"""Model name → stack model: the one routing rule every command and the proxy apply (pure).

A routing table is an ordered list of :class:`Rule`. A name a client sends is matched so:

1. an exact rule (no ``*``, ``?`` or ``[``): the first exact rule for that name wins — exact
   names never overlap in a valid stack (validation refuses a route that shadows a model's
   name or served name, and two models serving the same name);
2. else the first glob rule (``proxy.routes`` patterns, in file order) that matches;
3. else the catch-all ``*`` (``proxy.fallback``, the first model unless set to ``none``);
4. else nothing: the proxy answers 404 listing the routable names.

The table is built by :func:`spark_stack.deployment.resolve` in this order: routes, model
names, served names, catch-all. ``plan`` prints it, the proxy's router and ``export litellm``
follow it. Standard library only: the proxy's hot path imports this.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import translate
from typing import Literal

Origin = Literal["route", "model name", "served name", "catch-all"]
ORIGINS: tuple[Origin, ...] = ("route", "model name", "served name", "catch-all")
CATCH_ALL = "*"
_GLOB_CHARS = frozenset("*?[")


def is_glob(pattern: str) -> bool:
    return any(ch in _GLOB_CHARS for ch in pattern)


@dataclass(frozen=True)
class Rule:
    """Requests for names matching ``pattern`` go to the stack model ``model``."""

    pattern: str
    model: str
    origin: Origin = "route"


class RouteTable:
    """Matches a requested name against an ordered list of rules (see the module doc)."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = tuple(rules)
        self._exact: dict[str, Rule] = {}
        self._globs: list[tuple[re.Pattern[str], Rule]] = []
        catch_all: list[tuple[re.Pattern[str], Rule]] = []
        for rule in self.rules:
            if not is_glob(rule.pattern):
                self._exact.setdefault(rule.pattern, rule)
            elif rule.origin == "catch-all":
                catch_all.append((re.compile(translate(rule.pattern), re.DOTALL), rule))
            else:
                self._globs.append((re.compile(translate(rule.pattern), re.DOTALL), rule))
        self._globs += catch_all

    def match(self, name: str) -> Rule | None:
        """The rule that routes ``name``, or None (the proxy's 404)."""
        found = self._exact.get(name)
        if found is not None:
            return found
        for regex, rule in self._globs:
            if regex.match(name):
                return rule
        return None

    def exact_names(self) -> list[str]:
        return sorted(self._exact)

    def routable_names(self) -> list[str]:
        """Exact names (sorted), then the glob patterns in the order they are tried."""
        return self.exact_names() + [rule.pattern for _, rule in self._globs]
