"""The loop's completion-tag scheme: op | gen | slot round-trips for every Op."""

import pytest

from ringline._core import tags as _tags
from ringline._core.tags import Op


@pytest.mark.parametrize("op", list(Op))
def test_round_trip_every_op(op):
    for slot in (0, 1, 12345, 2**32 - 2):
        for gen in (0, 1, 2**24 - 1):
            assert _tags.decode(_tags.encode(op, slot, gen)) == (op, slot, gen)


def test_gen_wraps_within_its_field():
    # A generation past 24 bits wraps instead of spilling into the op field.
    assert _tags.decode(_tags.encode(Op.RECV, 3, 2**24 + 5)) == (Op.RECV, 3, 5)


def test_no_slot_is_distinct_from_every_real_slot():
    assert _tags.NO_SLOT == 2**32 - 1
    assert _tags.decode(_tags.encode(Op.CANCEL, _tags.NO_SLOT, 0))[1] == _tags.NO_SLOT


def test_op_values_fit_the_op_field_and_are_unique():
    values = [int(op) for op in Op]
    assert len(values) == len(set(values))
    assert all(0 < v < 2**_tags.OP_BITS for v in values)
