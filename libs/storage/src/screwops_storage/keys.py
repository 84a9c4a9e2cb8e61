"""Object keys: content addresses, and the checks that keep every key inside its prefix.

Keys are often built from input (dataset ids, file names inside an uploaded model directory), so
each one is checked before it reaches MinIO: a key that could be read as a path outside its prefix
(``..``, a leading ``/``, a backslash) is refused rather than normalised, because normalising
would make two different keys name the same object.
"""

from __future__ import annotations

import hashlib
import re

from screwops_errors import InvalidInputError

__all__ = [
    "MAX_KEY_BYTES",
    "content_key",
    "join_key",
    "sha256_hex",
    "validate_digest",
    "validate_key",
]

MAX_KEY_BYTES = 1024
"""S3's limit on a key's UTF-8 length; checking it here turns a server 400 into a clear error."""

_SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def sha256_hex(data: bytes) -> str:
    """The lowercase hex digest that names content and is recorded beside every object."""
    return hashlib.sha256(data).hexdigest()


def validate_digest(digest: str) -> str:
    """Refuse anything but a lowercase hex sha256, so a digest can safely become part of a key."""
    if not _SHA256.fullmatch(digest):
        raise InvalidInputError(f"not a lowercase hex sha256 digest: {digest!r}")
    return digest


def validate_key(key: str, *, prefix: str | None = None) -> str:
    """Return ``key`` if it is a plain relative key (and lies under ``prefix``), else refuse it.

    Refusing instead of cleaning up keeps the mapping from keys to objects one-to-one, and the
    prefix check is what lets a service give out a prefix without giving out its whole bucket.

    Raises:
        InvalidInputError: empty or too long; a leading ``/``; a backslash or control character;
            an empty, ``.`` or ``..`` segment; or not strictly under ``prefix``.
    """
    if not key:
        raise InvalidInputError("object key is empty")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidInputError(f"object key is longer than {MAX_KEY_BYTES} bytes")
    if key.startswith("/"):
        raise InvalidInputError(f"object key {key!r} starts with '/'")
    if "\\" in key:
        raise InvalidInputError(f"object key {key!r} contains a backslash")
    if _CONTROL.search(key):
        raise InvalidInputError(f"object key {key!r} contains a control character")
    if any(segment in ("", ".", "..") for segment in key.split("/")):
        raise InvalidInputError(f"object key {key!r} has an empty, '.' or '..' segment")
    if prefix is not None:
        validate_key(prefix)
        if not key.startswith(f"{prefix}/"):
            raise InvalidInputError(f"object key {key!r} is not under prefix {prefix!r}")
    return key


def join_key(prefix: str, relative: str) -> str:
    """``prefix/relative``, checked, so a relative name taken from input cannot climb out."""
    return validate_key(f"{prefix}/{relative}", prefix=prefix)


def content_key(prefix: str, digest: str) -> str:
    """Where content with ``digest`` lives under ``prefix``: ``prefix/ab/abcdef…``.

    The two-character fan-out keeps any one listing level small when millions of images share a
    prefix, and deriving the key from the digest makes storing the same bytes twice a no-op.
    """
    validate_digest(digest)
    return join_key(prefix, f"{digest[:2]}/{digest}")
