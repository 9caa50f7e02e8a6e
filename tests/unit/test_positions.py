"""Tests for collab.domain.positions: fractional index keys."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collab.domain.positions import (
    DIGITS, FIRST_POSITION, MAX_POSITION_CHARS, PositionError, is_valid, key_between, keys_after,
)

INSERTIONS = 200

#: Valid keys as the module defines them: base-62 digits, never ending in "0".
valid_keys = st.text(alphabet=DIGITS, min_size=1, max_size=12).filter(lambda k: not k.endswith("0"))


def assert_well_formed(key: str) -> None:
    assert is_valid(key), key
    assert not key.endswith("0"), key
    assert len(key) <= MAX_POSITION_CHARS


# --- basics ---------------------------------------------------------------------

def test_unbounded_on_both_sides_gives_the_first_position() -> None:
    assert key_between(None, None) == FIRST_POSITION
    assert_well_formed(FIRST_POSITION)


def test_digits_alphabet_is_in_c_collation_order() -> None:
    assert list(DIGITS) == sorted(DIGITS)
    assert list(DIGITS.encode("ascii")) == sorted(DIGITS.encode("ascii"))
    assert len(set(DIGITS)) == 62


@pytest.mark.parametrize(
    ("lower", "upper"),
    [
        (None, "V"), ("V", None), ("A", "B"), ("A", "B5"), ("Az", "B"), ("V", "V1"), ("A", "A01"),
        (None, "1"), (None, "01"), (None, "0001"), ("z", None), ("zzzz", None), ("0V", "1"), ("y", "z"),
        ("1", "z"), ("V5", "W"), ("ABC", "ABD"), ("ABCz", "ABD"),
    ],
)
def test_key_is_strictly_between_the_bounds(lower: str | None, upper: str | None) -> None:
    key = key_between(lower, upper)
    assert_well_formed(key)
    if lower is not None:
        assert lower < key
    if upper is not None:
        assert key < upper


@given(valid_keys, valid_keys)
@settings(max_examples=500, deadline=None)
def test_strictly_between_for_random_valid_pairs(a: str, b: str) -> None:
    if a == b:
        with pytest.raises(PositionError):
            key_between(a, b)
        return
    lower, upper = min(a, b), max(a, b)
    key = key_between(lower, upper)
    assert_well_formed(key)
    assert lower < key < upper
    # The same holds bytewise, which is what PostgreSQL's COLLATE "C" compares.
    assert lower.encode() < key.encode() < upper.encode()


@given(valid_keys)
@settings(max_examples=300, deadline=None)
def test_half_open_bounds(key: str) -> None:
    above = key_between(key, None)
    below = key_between(None, key)
    assert_well_formed(above)
    assert_well_formed(below)
    assert below < key < above


@given(st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=80))
@settings(max_examples=200, deadline=None)
def test_random_insertions_keep_list_order(choices: list[int]) -> None:
    """Insert each new key at a random gap of a list; the list must stay sorted.

    The list is kept in insertion order (where each key was put), so sorting the
    keys must give back exactly that list: the keys' order *is* the board order.
    """
    board: list[str] = []
    for choice in choices:
        gap = choice % (len(board) + 1)  # 0 = front, len = end
        lower = board[gap - 1] if gap > 0 else None
        upper = board[gap] if gap < len(board) else None
        key = key_between(lower, upper)
        assert_well_formed(key)
        board.insert(gap, key)
        assert sorted(board) == board
    assert len(set(board)) == len(board)
    assert sorted(board, key=lambda k: k.encode()) == board
    assert all(is_valid(k) for k in board)


# --- invalid input --------------------------------------------------------------

@pytest.mark.parametrize(
    ("lower", "upper"),
    [
        ("V0", None),        # trailing zero
        (None, "A0"),
        ("0", "V"),          # a lone zero is a trailing zero too
        ("", None),          # empty
        (None, ""),
        ("A-", None),        # not a base-62 digit
        (None, "a b"),
        ("é", None),
        ("V", "V"),          # lower == upper
        ("W", "V"),          # lower > upper
        ("V1", "V"),
        ("A" * (MAX_POSITION_CHARS + 1), None),  # too long
    ],
)
def test_invalid_inputs_raise_position_error(lower: str | None, upper: str | None) -> None:
    with pytest.raises(PositionError):
        key_between(lower, upper)


def test_position_error_is_a_value_error() -> None:
    assert issubclass(PositionError, ValueError)


@pytest.mark.parametrize("key", ["", "0", "A0", "a-b", "Ä", " V", "V\n", "A" * (MAX_POSITION_CHARS + 1)])
def test_is_valid_rejects(key: str) -> None:
    assert not is_valid(key)


@pytest.mark.parametrize("key", ["1", "V", "z", "00001", "A" * MAX_POSITION_CHARS])
def test_is_valid_accepts(key: str) -> None:
    assert is_valid(key)


# --- keys_after -----------------------------------------------------------------

@pytest.mark.parametrize("last", [None, "V", "z", "zzz", "0001"])
def test_keys_after_gives_increasing_keys(last: str | None) -> None:
    keys = keys_after(last, 50)
    assert len(keys) == 50
    assert keys == sorted(keys)
    assert len(set(keys)) == 50
    assert all(is_valid(k) for k in keys)
    if last is not None:
        assert last < keys[0]


def test_keys_after_zero_count_is_empty() -> None:
    assert keys_after("V", 0) == []


# --- growth ---------------------------------------------------------------------

def test_repeated_insertion_at_the_front_stays_bounded() -> None:
    first = key_between(None, None)
    seen = [first]
    for _ in range(INSERTIONS):
        new = key_between(None, first)
        assert new < first
        assert_well_formed(new)
        first = new
        seen.append(new)
    assert len(set(seen)) == len(seen)
    assert len(first) < MAX_POSITION_CHARS


def test_repeated_insertion_at_the_end_stays_bounded() -> None:
    last = key_between(None, None)
    for _ in range(INSERTIONS):
        new = key_between(last, None)
        assert new > last
        last = new
    assert len(last) < MAX_POSITION_CHARS


@pytest.mark.parametrize("side", ["lower", "upper", "alternate"])
def test_repeated_insertion_between_adjacent_keys_stays_bounded(side: str) -> None:
    lower, upper = "A", "B"  # adjacent digits: no single-character key fits between them
    keys = [lower, upper]
    for i in range(INSERTIONS):
        new = key_between(lower, upper)
        assert lower < new < upper
        assert_well_formed(new)
        keys.append(new)
        if side == "lower" or (side == "alternate" and i % 2 == 0):
            upper = new   # keep inserting right after "A"
        else:
            lower = new   # keep inserting right before "B"
    assert len(set(keys)) == len(keys)
    assert max(len(k) for k in keys) < MAX_POSITION_CHARS
