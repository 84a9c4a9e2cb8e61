"""Object keys cannot escape their prefix, and equal bytes always get the same content key."""

from __future__ import annotations

import hashlib

import pytest
from screwops_errors import InvalidInputError
from screwops_storage import content_key, join_key, sha256_hex, validate_digest, validate_key


@pytest.mark.parametrize(
    "key",
    [
        "images/ab/abcdef",
        "models/screw-classifier/3/model.savedmodel/variables/variables.index",
        "reports/dataset-1/v2.json",
        "a",
        "unicode/ñandú.png",
    ],
)
def test_plain_relative_keys_are_accepted(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/images/a",
        "images/../secrets",
        "../outside",
        "images/..",
        "images/./a",
        "images//a",
        "images/a/",
        "images\\..\\a",
        "images/a\x00b",
        "images/a\nb",
        "images/a\x7fb",
        "images/a\x85b",
        "k" * 1025,
    ],
)
def test_keys_that_could_escape_or_alias_are_refused(key: str) -> None:
    with pytest.raises(InvalidInputError):
        validate_key(key)


@pytest.mark.parametrize(
    "key",
    ["models/m/1/model.py", "models/m/1/a/b/c"],
)
def test_keys_under_the_prefix_are_accepted(key: str) -> None:
    assert validate_key(key, prefix="models/m/1") == key


@pytest.mark.parametrize(
    "key",
    [
        "models/m/1",
        "models/m/10/model.py",
        "models/m/2/model.py",
        "other/models/m/1/model.py",
    ],
)
def test_keys_outside_the_prefix_are_refused(key: str) -> None:
    with pytest.raises(InvalidInputError, match="not under prefix"):
        validate_key(key, prefix="models/m/1")


def test_a_bad_prefix_is_refused_even_when_the_key_starts_with_it() -> None:
    with pytest.raises(InvalidInputError):
        validate_key("models/../x/a", prefix="models/../x")


@pytest.mark.parametrize("relative", ["../model.py", "a/../../b", "/etc/passwd", "a\\b", ""])
def test_join_key_refuses_a_relative_name_that_climbs_out(relative: str) -> None:
    with pytest.raises(InvalidInputError):
        join_key("models/m/1", relative)


def test_join_key_puts_the_relative_name_under_the_prefix() -> None:
    assert join_key("models/m/1", "variables/variables.index") == (
        "models/m/1/variables/variables.index"
    )


def test_the_same_bytes_get_the_same_content_key() -> None:
    image = b"\x89PNG fake screw"
    first = content_key("images", sha256_hex(image))
    second = content_key("images", sha256_hex(bytes(image)))
    digest = hashlib.sha256(image).hexdigest()
    assert first == second == f"images/{digest[:2]}/{digest}"


def test_different_bytes_get_different_content_keys() -> None:
    assert content_key("images", sha256_hex(b"a")) != content_key("images", sha256_hex(b"b"))


@pytest.mark.parametrize(
    "digest",
    ["", "abc", "A" * 64, "g" * 64, "a" * 63, "a" * 65, "../" + "a" * 61],
)
def test_only_lowercase_hex_sha256_digests_are_accepted(digest: str) -> None:
    with pytest.raises(InvalidInputError):
        validate_digest(digest)
    with pytest.raises(InvalidInputError):
        content_key("images", digest)


def test_a_content_key_under_a_bad_prefix_is_refused() -> None:
    with pytest.raises(InvalidInputError):
        content_key("../images", sha256_hex(b"a"))
