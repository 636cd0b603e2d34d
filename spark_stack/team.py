"""A team on one Spark: the keys people use (add, list, revoke, rotate) and the usage the
proxy recorded for them. The proxy reads the same files (:mod:`spark_stack.proxy.keyfile`,
:mod:`spark_stack.proxy.usage`); this module is the CLI's side: validation, the writes, and
the usage report.
"""

from __future__ import annotations

import re
import sqlite3
import stat
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from .errors import SparkStackError, TeamStateError, UsageError
from .paths import write_private
from .proxy.keyfile import KEY_FILE, KeyRecord, digest, encode_keys, new_key, read_keys
from .proxy.usage import INCOMPLETE_FILE, USAGE_DB
from .stack.schema import NAME_PATTERN

Grouping = Literal["key", "model", "day"]
GROUPINGS: tuple[Grouping, ...] = ("key", "model", "day")
_NAME = re.compile(NAME_PATTERN)


def check_key_name(name: str) -> str:
    """Key names follow the rule for model names (they appear in logs and metric labels)."""
    if not _NAME.match(name) or name == "owner" or name == "other":
        raise UsageError(
            f"{name!r} is not a valid key name",
            fix="use 1-63 lowercase letters, digits, '.', '_' or '-', starting with a letter or "
                "digit (not 'owner' or 'other', which the proxy uses itself)")
    return name


def key_file(state_dir: Path) -> Path:
    return state_dir / KEY_FILE


def list_keys(state_dir: Path) -> list[KeyRecord]:
    return read_keys(key_file(state_dir))


def add_key(state_dir: Path, name: str, *, max_concurrent: int | None = None,
            tokens_per_minute: int | None = None) -> str:
    """A new key for ``name``; only its hash is stored. Returns the key (shown once)."""
    check_key_name(name)
    records = list_keys(state_dir)
    if any(r.name == name for r in records):
        raise UsageError(f"a key named {name!r} exists",
                         fix=f"`spark-stack keys rotate {name}` gives it a new key; "
                             f"`spark-stack keys revoke {name}` removes it")
    key = new_key()
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    records.append(KeyRecord(name, digest(key), created, max_concurrent, tokens_per_minute))
    write_private(key_file(state_dir), encode_keys(records))
    return key


def revoke_key(state_dir: Path, name: str) -> None:
    """Remove ``name``'s key: the proxy refuses it within a second."""
    records = list_keys(state_dir)
    kept = [r for r in records if r.name != name]
    if len(kept) == len(records):
        raise _unknown(name, records)
    write_private(key_file(state_dir), encode_keys(kept))


def rotate_key(state_dir: Path, name: str) -> str:
    """A new key for ``name`` (same limits); the old one stops working within a second."""
    records = list_keys(state_dir)
    if not any(r.name == name for r in records):
        raise _unknown(name, records)
    key = new_key()
    updated = [replace(r, sha256=digest(key)) if r.name == name else r for r in records]
    write_private(key_file(state_dir), encode_keys(updated))
    return key


def _unknown(name: str, records: list[KeyRecord]) -> UsageError:
    known = ", ".join(r.name for r in records) or "none yet"
    return UsageError(f"no key named {name!r} (keys: {known})",
                      fix="`spark-stack keys list` shows them")


# --- usage ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class UsageLine:
    """The counts of one key, model or day."""

    name: str
    requests: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    errors: int
    wait_seconds: float


@dataclass(frozen=True)
class UsageReport:
    by: Grouping
    since: str | None
    lines: list[UsageLine]
    incomplete: list[str]  # why some requests are missing (empty: complete)


_GROUP_SQL = {
    "key": "key",
    "model": "model",
    "day": "strftime('%Y-%m-%d', ts, 'unixepoch')",
}


def parse_since(text: str) -> float:
    """``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM[:SS]`` (UTC) as a Unix time."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--since {text!r} is not a date",
                         fix="write it as YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def usage_report(state_dir: Path, stack: str, by: Grouping = "key",
                 since: str | None = None) -> UsageReport:
    """What the proxy recorded, grouped ``by`` key, model or day (UTC), from ``since``."""
    path = state_dir / USAGE_DB
    if not path.exists():
        raise SparkStackError(
            f"no usage recorded for stack {stack!r} yet: its proxy has never run",
            fix="run `spark-stack up`; the proxy records every request from then on")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise TeamStateError(f"{path} has mode {mode:04o}: other users can read or change it",
                             fix=f"chmod 600 {path}")
    start = parse_since(since) if since else 0.0
    column = _GROUP_SQL[by]
    query = (f"SELECT {column}, count(*), sum(input_tokens), sum(cached_tokens), "
             "sum(output_tokens), sum(error), sum(wait_s) FROM requests WHERE ts >= ? "
             f"GROUP BY {column} ORDER BY {column}")
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
        try:
            rows = connection.execute(query, (start,)).fetchall()
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise TeamStateError(f"cannot read the usage database {path}: {exc}",
                             fix=f"move {path} away (the proxy starts a new one) or restore it"
                             ) from None
    lines = [UsageLine(str(name), int(n), int(i or 0), int(c or 0), int(o or 0), int(e or 0),
                       round(float(w or 0.0), 3))
             for name, n, i, c, o, e, w in rows]
    marker = path.with_name(INCOMPLETE_FILE)
    notes = marker.read_text(encoding="utf-8").splitlines() if marker.exists() else []
    return UsageReport(by, since, lines, notes)


def last_used(state_dir: Path) -> dict[str, str]:
    """Per key name, when it last sent a request (UTC; empty when there is no usage yet)."""
    path = state_dir / USAGE_DB
    if not path.exists():
        return {}
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
        try:
            rows = connection.execute("SELECT key, max(ts) FROM requests GROUP BY key")
            return {name: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
                    for name, ts in rows}
        finally:
            connection.close()
    except sqlite3.Error:
        return {}
