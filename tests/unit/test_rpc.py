"""What every API shares: reading offset page tokens."""

from __future__ import annotations

import pytest
from screwops_errors import InvalidInputError
from screwops_rpc import offset_page


def test_a_page_is_an_offset_and_a_bounded_size() -> None:
    assert offset_page(0, "", default=50, most=500) == (0, 50)
    assert offset_page(20, "40", default=50, most=500) == (40, 20)
    assert offset_page(1000, "0", default=50, most=500) == (0, 500)


@pytest.mark.parametrize(
    ("size", "token", "message"),
    [(-1, "", "page_size must not be negative"), (0, "x", "bad page_token"), (0, "-5", "bad")],
)
def test_a_bad_size_or_token_is_refused(size: int, token: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        offset_page(size, token, default=50, most=500)
