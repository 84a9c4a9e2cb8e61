"""The console's local accounts: a file of ``name:role:argon2-hash`` lines.

A file rather than a collection: an account must exist before anything else in the stack runs
(the first admin is made before the console starts), the console reads it on every request without
a database round trip, and an operator can review or revoke one with a text editor. The file is
re-read when it changes, so an account removed or given a lesser role loses that role on its next
request, even with a session still open. Written whole to a temporary file, then renamed, readable
by the owner only (it holds password hashes).

Roles are the APIs' (:class:`~screwops_settings.Role`): a console user's role is sent on with every
call the console makes for them (:func:`screwops_rpc.on_behalf_of`).
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from screwops_settings import PRINCIPAL_PATTERN, Role

MIN_PASSWORD_CHARS = 12
FIRST_ADMIN = "admin"

_HASHER = PasswordHasher()
_UNKNOWN = _HASHER.hash(secrets.token_urlsafe(16))
"""Verified against when the name is unknown, so a login takes as long either way and its timing
does not tell which names exist."""


class AccountError(ValueError):
    """An account that cannot be written or a file that cannot be read; says why."""


@dataclass(frozen=True)
class Account:
    """Who is logged in, and the most they may do."""

    name: str
    role: Role


@dataclass(frozen=True)
class _Entry:
    account: Account
    password_hash: str


class AccountFile:
    """The accounts in ``path`` (none while it does not exist)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._entries: dict[str, _Entry] = {}

    def names(self) -> list[str]:
        """Every account's name, sorted."""
        return sorted(self._load())

    def get(self, name: str) -> Account | None:
        """``name``'s account as the file says now; None once it is removed."""
        entry = self._load().get(name)
        return None if entry is None else entry.account

    def verify(self, name: str, password: str) -> Account | None:
        """``name``'s account when ``password`` is theirs; None otherwise (which, is not said)."""
        entry = self._load().get(name)
        try:
            _HASHER.verify(_UNKNOWN if entry is None else entry.password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        return None if entry is None else entry.account

    def add(self, name: str, role: Role, password: str) -> Account:
        """Add ``name`` (or replace their role and password) and write the file."""
        if not re.fullmatch(PRINCIPAL_PATTERN, name):
            raise AccountError(
                f"{name!r} is not a valid name: letters, digits, '.', '_', '@', '-', at most 128"
            )
        if len(password) < MIN_PASSWORD_CHARS:
            raise AccountError(f"a password needs {MIN_PASSWORD_CHARS}+ characters")
        entries = dict(self._load())
        entries[name] = _Entry(Account(name, role), _HASHER.hash(password))
        self._write(entries)
        return entries[name].account

    def _load(self) -> dict[str, _Entry]:
        try:
            status = self.path.stat()
        except FileNotFoundError:
            self._seen, self._entries = None, {}
            return self._entries
        seen = (status.st_mtime_ns, status.st_size)
        if seen != self._seen:
            self._entries = _parse(self.path)
            self._seen = seen
        return self._entries

    def _write(self, entries: dict[str, _Entry]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(
            f"{name}:{entry.account.role.value}:{entry.password_hash}\n"
            for name, entry in sorted(entries.items())
        )
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".accounts-")
        try:
            with os.fdopen(handle, "w") as out:  # mkstemp makes it 0600
                out.write(lines)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def _parse(path: Path) -> dict[str, _Entry]:
    entries: dict[str, _Entry] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(":", 2)
        if len(parts) != 3 or not re.fullmatch(PRINCIPAL_PATTERN, parts[0]):
            raise AccountError(f"{path}:{number}: expected name:role:argon2-hash")
        name, role, password_hash = parts
        try:
            entries[name] = _Entry(Account(name, Role(role)), password_hash)
        except ValueError:
            roles = ", ".join(r.value for r in Role)
            raise AccountError(f"{path}:{number}: role {role!r} is not one of {roles}") from None
    return entries


def first_admin(accounts: AccountFile, password_file: Path) -> bool:
    """Make the first account, ``admin``, when there is none: its password is generated and
    written to ``password_file`` (owner-only), never logged. Whether it made one."""
    if accounts.names():
        return False
    password = secrets.token_urlsafe(18)
    password_file.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(password + "\n")
    os.chmod(password_file, 0o600)
    accounts.add(FIRST_ADMIN, Role.ADMIN, password)
    return True
