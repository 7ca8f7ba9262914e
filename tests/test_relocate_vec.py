"""The relocation's vector kernels (csrc/relocate_vec.h), every width this CPU runs, against
the model of what they compute.

The copy, the re-check's digest and the collection's line scan are compiled once per vector
width (64 bytes AVX-512, 32 AVX2, 16 the baseline) and the loader picks one.  A relocation runs
only the picked one, so the relocation tests alone would leave the others unchecked on this
machine: here each width runs on random tables through a test entry and must give exactly
the model's answer - the digest is the sum mod 2^64 of every word XOR the flip word, so it
does not depend on the width, and the merge's re-check compares a digest computed by one
kernel with one computed by another.
"""

from __future__ import annotations

import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptreloc import _native

U64 = (1 << 64) - 1
# every table size the geometries have, in 8-byte words: PAE's 32-byte top, the 4 KiB tables
# of x86 and arm64 4K, arm64 16K and 64K; and odd sizes of the tail loop
SIZES = (4, 8, 16, 20, 48, 512, 2048, 8192)
WIDTHS = (0, *_native.VECTOR_WIDTHS)


@pytest.fixture(scope="module", params=["relo", "norelo"])
def core(request: pytest.FixtureRequest) -> _native.Core:
    return _native.core(request.param)


def _cpu_flags() -> set[str]:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def model_digest(words: list[int], flip: int) -> int:
    return sum((w ^ flip) for w in words) & U64


def model_next_used_line(words: list[int], line: int) -> int:
    nlines = len(words) // 8
    for n in range(line, nlines):
        if any(words[8 * n:8 * n + 8]):
            return n
    return nlines


# mostly empty entries with some set (a real table), or anything at all
word = st.one_of(st.just(0), st.just(0), st.integers(0, U64))
# no flip, x86's (NX), two 4-byte entries' (PAE-style halves), everything
flip = st.sampled_from([0, 1 << 63, 0x8000000080000000, U64])


@st.composite
def table(draw: st.DrawFn) -> list[int]:
    n = draw(st.sampled_from(SIZES))
    return draw(st.lists(word, min_size=n, max_size=n))


def test_the_picked_width_is_the_widest_this_cpu_runs(core: _native.Core) -> None:
    flags = _cpu_flags()
    want = 64 if "avx512f" in flags else 32 if "avx2" in flags else 16
    assert _native.vector_width(core) == want


def test_widths_the_cpu_lacks_are_refused_and_others_run(core: _native.Core) -> None:
    picked = _native.vector_width(core)
    for w in _native.VECTOR_WIDTHS:
        got = _native.vector_digest(core, w, [1] * 16, 0)
        assert (got is None) == (w > picked), w
        if got is not None:
            assert got == 16


def test_bad_arguments_are_refused(core: _native.Core) -> None:
    with pytest.raises(_native.CoreError):
        _native.vector_digest(core, 8, [0] * 16, 0)  # no such width
    with pytest.raises(_native.CoreError):
        _native.vector_copy(core, 16, [0] * 32, [0] * 32, 8, 0)  # start not a multiple of 16


@settings(max_examples=60, deadline=None)
@given(words=table(), dest_fill=st.integers(0, U64), f=flip, data=st.data())
def test_copy_every_width_is_the_model(core: _native.Core, words: list[int], dest_fill: int,
                                       f: int, data: st.DataObject) -> None:
    start = data.draw(st.sampled_from([i for i in range(0, len(words) + 1, 16)]), label="start")
    dest = [dest_fill] * len(words)
    want = (dest[:start] + words[start:], model_digest(words[start:], f), _or(words[start:]))
    for w in WIDTHS:
        got = _native.vector_copy(core, w, words, dest, start, f)
        if got is not None:
            assert got == want, f"width {w}"


@settings(max_examples=60, deadline=None)
@given(words=table(), f=flip)
def test_digest_every_width_is_the_model_and_the_copy_digest(core: _native.Core,
                                                            words: list[int], f: int) -> None:
    want = model_digest(words, f)
    for w in WIDTHS:
        got = _native.vector_digest(core, w, words, f)
        if got is not None:
            assert got == want, f"width {w}"
            copied = _native.vector_copy(core, w, words, [0] * len(words), 0, f)
            assert copied is not None and copied[1] == got


@settings(max_examples=60, deadline=None)
@given(nlines=st.integers(1, 1024), data=st.data())
def test_next_used_line_every_width_is_the_model(core: _native.Core, nlines: int,
                                                 data: st.DataObject) -> None:
    words = [0] * (8 * nlines)
    for i in data.draw(st.lists(st.integers(0, 8 * nlines - 1), max_size=4), label="set"):
        words[i] = data.draw(st.integers(1, U64), label="value")
    line = data.draw(st.integers(0, nlines), label="line")
    want = model_next_used_line(words, line)
    for w in WIDTHS:
        got = _native.vector_next_used_line(core, w, words, line)
        if got is not None:
            assert got == want, f"width {w}"


def test_a_change_in_any_word_changes_every_widths_digest(core: _native.Core) -> None:
    """The re-check's premise: a CPU's A/D write (a bit set in d(w) = w ^ flip) changes the
    digest, wherever the word is in the table - the head, a vector's middle lane, the tail."""
    f = 1 << 63  # x86's e_rdonly-style flip: the NX bit
    base = [0x1000 * i | 0x7 for i in range(512)]  # present, writable, user; A and D clear
    for w in WIDTHS:
        before = _native.vector_digest(core, w, base, f)
        if before is None:
            continue
        for i in (0, 1, 7, 8, 15, 255, 511):
            for bit in (5, 6):  # accessed, dirty
                changed = list(base)
                changed[i] |= 1 << bit
                assert _native.vector_digest(core, w, changed, f) != before, (w, i, bit)


def _or(words: list[int]) -> int:
    out = 0
    for x in words:
        out |= x
    return out
