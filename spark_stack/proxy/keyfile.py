"""The team's keys: one per person, kept as hashes only, in the stack's state directory.

``keys.json`` (0600) holds, per key, its name, the SHA-256 of the key, when it was made and its
limits. The CLI (:mod:`spark_stack.team`) writes it atomically; the proxy's :class:`KeyRing`
reads it again whenever it changes (polled every :data:`RELOAD_S`), so a revoked key is refused
within a second without a restart. Keys are 32 random bytes: a plain hash is enough (nothing to
brute-force), and looking one up costs a microsecond on the hot path.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from spark_stack.claude_context import PLACEHOLDER_TOKEN
from spark_stack.errors import TeamStateError
from spark_stack.proxy.dispatch import OWNER, Caller, KeyLimits

KEY_FILE = "keys.json"
KEY_PREFIX = "sk-spark-"
RELOAD_S = 0.25
_PLACEHOLDER = PLACEHOLDER_TOKEN.encode()

log = logging.getLogger("spark_stack.proxy")


@dataclass(frozen=True)
class KeyRecord:
    """One person's key as stored: never the key itself."""

    name: str
    sha256: str
    created: str  # ISO 8601, UTC
    max_concurrent: int | None = None
    tokens_per_minute: int | None = None

    @property
    def limits(self) -> KeyLimits:
        return KeyLimits(self.max_concurrent, self.tokens_per_minute)


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(key: str | bytes) -> str:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).hexdigest()


def check_private(path: Path) -> None:
    """Refuse a team file others can read or write (it says who may use the Spark)."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise TeamStateError(
            f"{path} has mode {mode:04o}: other users can read or change it",
            fix=f"chmod 600 {path}")


def read_keys(path: Path) -> list[KeyRecord]:
    """The records in ``path`` (none when it does not exist)."""
    try:
        check_private(path)
        raw = orjson.loads(path.read_bytes())
        return [KeyRecord(**item) for item in raw["keys"]]
    except FileNotFoundError:
        return []
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise TeamStateError(f"cannot read the key file {path}: {exc}",
                             fix=f"restore it, or move it away and add the keys again ({path})"
                             ) from None


def encode_keys(records: Iterable[KeyRecord]) -> str:
    return orjson.dumps({"keys": [asdict(r) for r in records]},
                        option=orjson.OPT_INDENT_2).decode()


class KeyRing:
    """Who a request's credential belongs to: the stack's own token (the owner's, as the
    launcher sends it) or a team key from the key file, re-read when it changes."""

    def __init__(self, owner_token: str | None, path: Path | None) -> None:
        self._owner_token = owner_token.encode() if owner_token else None
        self.owner = Caller(OWNER)
        self.path = path
        self._by_digest: dict[bytes, Caller] = {}
        self._callers: dict[str, Caller] = {OWNER: self.owner}
        self._seen: tuple[int, int, int] | None = None
        self._complaint = ""
        self.reload()

    @property
    def required(self) -> bool:
        """Whether a request must carry a credential (the stack has a token)."""
        return self._owner_token is not None

    @property
    def count(self) -> int:
        return len(self._by_digest)

    def callers(self) -> list[Caller]:
        """The owner and every current key's caller."""
        return list(self._callers.values())

    def caller(self, offered: bytes | None) -> Caller | None:
        """The caller ``offered`` identifies; None for a wrong or revoked key.

        With a token, it is the owner's and every other credential must be a key. Without one
        (a loopback proxy), whoever sends nothing or the launcher's placeholder is the owner,
        as before keys existed; anything else must still be a valid key.
        """
        owner = self._owner_token
        if owner is not None:
            if offered is not None and hmac.compare_digest(offered, owner):
                return self.owner
        elif offered is None or offered == _PLACEHOLDER or not self._by_digest:
            return self.owner
        if offered is None or not self._by_digest:
            return None
        return self._by_digest.get(hashlib.sha256(offered).digest())

    def reload(self) -> None:
        """Read the key file again if it changed since the last look; a file that cannot be
        read keeps the keys as they were, and says why once."""
        if self.path is None:
            return
        try:
            info = os.stat(self.path)
            seen = (info.st_mtime_ns, info.st_size, info.st_ino)
        except FileNotFoundError:
            seen = None
        except OSError as exc:
            self._complain(f"cannot read the key file {self.path}: {exc}")
            return
        if seen == self._seen and self._seen is not None:
            return
        try:
            records = read_keys(self.path)
        except TeamStateError as error:
            self._complain(f"{error.message} (fix: {error.fix}); keeping the keys as they were")
            return
        self._seen = seen
        self._complaint = ""
        by_digest: dict[bytes, Caller] = {}
        callers: dict[str, Caller] = {OWNER: self.owner}
        for record in records:
            caller = self._callers.get(record.name) or Caller(record.name)
            caller.limits = record.limits
            callers[record.name] = caller
            by_digest[bytes.fromhex(record.sha256)] = caller
        self._by_digest, self._callers = by_digest, callers

    def _complain(self, message: str) -> None:
        if message != self._complaint:
            self._complaint = message
            log.error("%s", message)
