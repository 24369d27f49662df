# cython: language_level=3
"""Python view of the completion-tag scheme declared in _core/tags.pxd (tests, tools)."""
from libc.stdint cimport uint64_t, uint32_t
from ringline._core.tags cimport tag_encode, tag_op, tag_gen, tag_slot

GEN_BITS = 24
SLOT_BITS = 32
OP_BITS = 8


def encode(unsigned op, uint32_t slot, uint32_t gen):
    return tag_encode(op, slot, gen)


def decode(uint64_t tag):
    """Return (op, slot, gen) of a tag."""
    return tag_op(tag), tag_slot(tag), tag_gen(tag)


# The enum constants of _core/tags.pxd cannot be rebound by name here; publish
# their unsigned values under the same names for Python callers.
globals()["NO_SLOT"] = <uint32_t>NO_SLOT
globals()["GEN_MASK"] = <uint32_t>TAG_GEN_MASK
