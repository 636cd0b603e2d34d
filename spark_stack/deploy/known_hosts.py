"""known_hosts as OpenSSH reads it, at the SSH edge (paramiko's ``HostKeys`` does not).

paramiko matches host names literally, raises ``InvalidHostKey`` on a malformed line and
does not know ``@revoked``. Here each line is ``[@marker] patterns keytype base64 [comment]``:

- patterns are comma-separated, with ``*`` and ``?`` wildcards, case-insensitive; a line
  matches a host when one pattern matches and no negated (``!``) pattern does;
- ``|1|salt|hash`` is a hashed host name (``HashKnownHosts``);
- a host on a port other than 22 is named ``[host]:port``;
- ``@revoked`` keys are refused for the hosts they match; ``@cert-authority`` lines are
  skipped (spark-stack does not use host certificates);
- blank lines and ``#`` comments are skipped; any other line that cannot be read is a
  :class:`~spark_stack.errors.HostKeyError` naming ``file:line``.

:func:`check_host_key` gives the verdict on the key a host presented.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from ..errors import HostKeyError

_MARKERS = ("@revoked", "@cert-authority")


@dataclass(frozen=True)
class KnownHost:
    """One readable known_hosts line."""

    path: str
    line: int
    marker: str | None
    patterns: tuple[str, ...]
    key_type: str
    key_blob: bytes

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def matches(self, name: str) -> bool:
        """Whether this line is about ``name`` (``host`` or ``[host]:port``)."""
        positive = False
        for pattern in self.patterns:
            if pattern.startswith("|1|"):
                positive = positive or _hashed_match(pattern, name)
            elif pattern.startswith("!"):
                if _glob_match(pattern[1:], name):
                    return False
            elif _glob_match(pattern, name):
                positive = True
        return positive


def _glob_match(pattern: str, name: str) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name, flags=re.IGNORECASE | re.DOTALL) is not None


def _hashed_match(pattern: str, name: str) -> bool:
    try:
        _, _, salt_b64, hash_b64 = pattern.split("|")
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(hash_b64, validate=True)
    except (ValueError, binascii.Error):
        return False
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return hmac.compare_digest(digest, expected)


def _malformed(path: str, number: int, why: str) -> HostKeyError:
    return HostKeyError(
        f"{path}:{number}: unreadable known_hosts line ({why})",
        fix=f"correct or delete line {number} of {path} (`sed -i '{number}d' {path}` deletes "
        "it), then run the command again",
    )


def parse_known_hosts(text: str, path: str) -> list[KnownHost]:
    """Every host-key line of one known_hosts file; raises on a line that cannot be read."""
    entries: list[KnownHost] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        marker = None
        if fields[0].startswith("@"):
            marker = fields.pop(0)
            if marker not in _MARKERS:
                raise _malformed(path, number, f"unknown marker {marker!r}")
        if len(fields) < 3:
            raise _malformed(path, number, "expected: host patterns, key type, base64 key")
        patterns, key_type, key_b64 = fields[0], fields[1], fields[2]
        try:
            blob = base64.b64decode(key_b64, validate=True)
        except (ValueError, binascii.Error):
            raise _malformed(path, number, "the key is not valid base64") from None
        if not _blob_names(blob, key_type):
            raise _malformed(path, number, f"the key is not a {key_type} key")
        entries.append(KnownHost(path, number, marker, tuple(patterns.split(",")), key_type,
                                 blob))
    return entries


def _blob_names(blob: bytes, key_type: str) -> bool:
    """An SSH public key blob starts with its type as a length-prefixed string."""
    if len(blob) < 4:
        return False
    length = int.from_bytes(blob[:4], "big")
    return blob[4:4 + length] == key_type.encode()


def read_known_hosts(paths: Iterable[str | Path]) -> list[KnownHost]:
    """The lines of every existing file among ``paths``, in order."""
    entries: list[KnownHost] = []
    for path in paths:
        file = Path(path).expanduser()
        try:
            text = file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise HostKeyError(f"cannot read {file}: {exc.strerror or exc}",
                               fix=f"check the permissions of {file}") from exc
        entries += parse_known_hosts(text, str(file))
    return entries


class Verdict(Enum):
    KNOWN = "known"
    UNKNOWN = "unknown"
    CHANGED = "changed"
    REVOKED = "revoked"


def check_host_key(
    entries: Iterable[KnownHost], name: str, key_type: str, key_blob: bytes
) -> tuple[Verdict, KnownHost | None]:
    """What the known_hosts lines say about ``key`` presented by ``name``, as OpenSSH decides:
    revoked first, then a line with the same key, then a line with another key of that type."""
    about = [e for e in entries if e.marker != "@cert-authority" and e.matches(name)]
    for entry in about:
        if entry.marker == "@revoked" and entry.key_blob == key_blob:
            return Verdict.REVOKED, entry
    plain = [e for e in about if e.marker is None]
    for entry in plain:
        if entry.key_type == key_type and entry.key_blob == key_blob:
            return Verdict.KNOWN, entry
    for entry in plain:
        if entry.key_type == key_type:
            return Verdict.CHANGED, entry
    return Verdict.UNKNOWN, None
