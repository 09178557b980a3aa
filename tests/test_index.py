"""Tests for dedupd.index.HashIndex against a brute-force reference."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import numpy as np

from dedupd import index as index_module
from dedupd.config import MatchSettings
from dedupd.index import HashIndex
from dedupd.models import Fingerprint, Hashes

U64 = st.integers(min_value=0, max_value=2**64 - 1)
IDS = st.integers(min_value=1, max_value=60)


def brute_force(entries: dict[int, int], probe: int, max_distance: int) -> list[tuple[int, int]]:
    """The reference answer: every (id, distance) within reach, nearest first, then by id."""
    hits = [(fid, (h ^ probe).bit_count()) for fid, h in entries.items()]
    return sorted(((fid, d) for fid, d in hits if d <= max_distance), key=lambda x: (x[1], x[0]))


def near(value: int, flips: list[int]) -> int:
    """``value`` with the given bit positions flipped."""
    for bit in flips:
        value ^= 1 << bit
    return value


def replay(index: HashIndex, ops: list[tuple[str, int, int]]) -> dict[int, int]:
    """Apply add/remove operations to the index; the id -> hash map it should then hold."""
    reference: dict[int, int] = {}
    for op, fid, value in ops:
        if op == "add":
            index.add(fid, value)
            reference[fid] = value
        else:
            index.remove(fid)
            reference.pop(fid, None)
    return reference


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), IDS, U64),
        st.tuples(st.just("remove"), IDS, st.just(0)),
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(ops=OPS, probe=U64, flips=st.lists(st.integers(0, 63), max_size=12), max_distance=st.integers(0, 64))
def test_search_equals_brute_force_after_any_adds_and_removes(
    ops: list[tuple[str, int, int]], probe: int, flips: list[int], max_distance: int
) -> None:
    """After any sequence of add/replace/remove, search returns exactly the ids within the distance, nearest first."""
    index = HashIndex(capacity=4)  # small, so that growing is exercised
    reference = replay(index, ops)
    assert len(index) == len(reference)
    # probe both at random and next to a stored hash, so that hits are common
    probes = [probe] + [near(h, flips) for h in list(reference.values())[:3]]
    for p in probes:
        assert index.search(p, max_distance) == brute_force(reference, p, max_distance)


@settings(max_examples=50, deadline=None)
@given(items=st.dictionaries(IDS, U64, max_size=40), probe=U64, max_distance=st.integers(0, 64))
def test_build_equals_brute_force(items: dict[int, int], probe: int, max_distance: int) -> None:
    """An index built from (id, hash) pairs answers like the brute-force reference."""
    index = HashIndex.build(items.items())
    assert index.search(probe, max_distance) == brute_force(items, probe, max_distance)


def test_distance_boundary_is_inclusive() -> None:
    """A hash exactly max_distance bits away is found; one more bit away is not."""
    index = HashIndex()
    base = 0x0123_4567_89AB_CDEF
    index.add(1, near(base, [0, 5, 63]))
    index.add(2, near(base, [0, 5, 63, 30]))
    assert index.search(base, 3) == [(1, 3)]
    assert index.search(base, 4) == [(1, 3), (2, 4)]
    assert index.search(base, 2) == []


def test_extreme_values_round_trip() -> None:
    """0 and 2**64-1 are stored and compared as unsigned 64-bit values."""
    index = HashIndex()
    index.add(1, 0)
    index.add(2, 2**64 - 1)
    index.add(3, 1 << 63)
    assert index.search(0, 0) == [(1, 0)]
    assert index.search(2**64 - 1, 0) == [(2, 0)]
    assert index.search(1 << 63, 1) == [(3, 0), (1, 1)]
    assert index.search(0, 64) == [(1, 0), (3, 1), (2, 64)]


def test_remove_then_re_add_and_replace() -> None:
    """A removed id is gone, comes back when re-added, and an add replaces an id's hash."""
    index = HashIndex()
    for fid in range(1, 6):
        index.add(fid, fid << 20)
    index.remove(3)
    assert [f for f, _ in index.search(3 << 20, 0)] == []
    assert len(index) == 4
    index.remove(3)  # removing twice is harmless
    assert len(index) == 4
    index.add(3, 3 << 20)
    assert index.search(3 << 20, 0) == [(3, 0)]
    index.add(3, 7)  # replace
    assert index.search(3 << 20, 0) == []
    assert index.search(7, 0) == [(3, 0)]
    assert len(index) == 5


def test_remove_moves_the_last_entry_correctly() -> None:
    """Removing from the middle keeps every other id findable by its own hash."""
    rng = random.Random(7)
    index = HashIndex(capacity=2)
    values = {fid: rng.getrandbits(64) for fid in range(1, 3000)}
    for fid, v in values.items():
        index.add(fid, v)
    for fid in range(1, 3000, 3):
        index.remove(fid)
        del values[fid]
    for fid, v in list(values.items())[::97]:
        assert (fid, 0) in index.search(v, 0)
    assert len(index) == len(values)


def test_empty_index_finds_nothing() -> None:
    """An empty index answers every query with nothing."""
    assert HashIndex().search(12345, 64) == []
    assert HashIndex(capacity=0).search(0, 64) == []


# --- the multi-index path ----------------------------------------------------
# Tuned down so that tiny tables are sealed and always searched through the
# chunk buckets: the answers must not change, only the cost.

EAGER = {"seal_min": 2, "linear_below": 0, "max_share": float("inf")}
#: the same, with the tables cut into three wide chunks (what a million files get)
WIDE = EAGER | {"wide_from": 0}
#: the numpy loops, where the compiled ones are built
NUMPY = {"compiled": False}


@settings(max_examples=150, deadline=None)
@given(
    ops=OPS,
    probe=U64,
    flips=st.lists(st.integers(0, 63), max_size=16),
    max_distance=st.integers(0, 15),
    wide=st.booleans(),
    compiled=st.booleans(),
)
def test_multi_index_search_equals_brute_force(
    ops: list[tuple[str, int, int]], probe: int, flips: list[int], max_distance: int, wide: bool, compiled: bool
) -> None:
    """Through sealing, tombstones, reseals and the unsealed tail, the chunk-bucket
    search returns exactly what the brute-force scan returns, in four chunks or
    three, by the compiled loops or by numpy."""
    index = HashIndex(capacity=4, compiled=compiled, **(WIDE if wide else EAGER))  # type: ignore[arg-type]
    reference = replay(index, ops)
    assert len(index) == len(reference)
    probes = [probe] + [near(h, flips) for h in list(reference.values())[:4]]
    for p in probes:
        assert index.search(p, max_distance) == brute_force(reference, p, max_distance)


def _fingerprint(phash: int, crop_keys: tuple[int, ...]) -> Fingerprint:
    return Fingerprint("s", "p", Hashes(phash, 0, b"\0" * 48), 100, 100, "PNG", 40.0, (), crop_keys)


FILES = st.dictionaries(IDS, st.tuples(U64, st.lists(U64, max_size=9).map(tuple)), max_size=30)


@settings(max_examples=100, deadline=None)
@given(files=FILES, new=st.tuples(U64, st.lists(U64, max_size=9).map(tuple)),
       flips=st.lists(st.integers(0, 63), max_size=12),
       tuning=st.sampled_from([{}, EAGER, WIDE, EAGER | NUMPY, WIDE | NUMPY]),
       bulk=st.booleans())
def test_candidates_equal_brute_force_with_crop_keys(
    files: dict[int, tuple[int, tuple[int, ...]]], new: tuple[int, tuple[int, ...]], flips: list[int],
    tuning: dict[str, float], bulk: bool,
) -> None:
    """candidates() proposes exactly the files whose pHash is near one of the new
    picture's keys, or one of whose crop keys is near the new pHash, whether the
    index was built in bulk or file by file, searched linearly or by chunks
    (four or three), by the compiled loops or by numpy."""
    if bulk:
        index = HashIndex.build(((i, h, keys) for i, (h, keys) in files.items()), **tuning)  # type: ignore[arg-type]
    else:
        index = HashIndex(**tuning)  # type: ignore[arg-type]
        for i, (h, keys) in files.items():
            index.add_fingerprint(i, _fingerprint(h, keys))
    limit = MatchSettings().near_distance
    stored = list(files.values())
    phash = near(stored[0][0], flips) if stored and flips else new[0]  # often near a stored one
    crop = new[1] + ((near(stored[-1][1][0], flips[:3]),) if stored and stored[-1][1] else ())
    fp = _fingerprint(phash, crop)
    expected = {
        i for i, (h, keys) in files.items()
        if any((h ^ p).bit_count() <= limit for p in (phash, *crop))
        or any((k ^ phash).bit_count() <= limit for k in keys)
    }
    assert index.candidates(fp, MatchSettings(rotations=False)) == expected


@pytest.mark.parametrize("wide_from", [None, 0])
def test_multi_index_is_used_at_scale_and_stays_exact(wide_from: int | None) -> None:
    """At 50,000 random hashes the lookup goes through the chunk buckets (not
    the linear fallback), in four chunks (the default at this size) or three,
    visits a small share of the table, and still finds every planted
    neighbour at the full distance of 10 bits."""
    rng = random.Random(3)
    values = {fid: rng.getrandbits(64) for fid in range(50_000)}
    index = HashIndex.build(values.items(), **({} if wide_from is None else {"wide_from": wide_from}))
    table = index._main
    assert len(table.layout) == (4 if wide_from is None else 3)
    for fid in list(values)[::2500]:
        flips = rng.sample(range(64), 10)
        probe = near(values[fid], flips)
        positions = table._multi_index(np.array([probe], dtype=np.uint64), 10)
        assert positions is not None and table.visited(np.array([probe], dtype=np.uint64), 10) < len(values) // 20
        assert (fid, 10) in index.search(probe, 10)
        assert index.search(probe, 10) == brute_force(values, probe, 10)


@settings(max_examples=200, deadline=None)
@given(layout=st.sampled_from([index_module._NARROW, index_module._WIDE]), limit=st.integers(0, 20),
       value=U64, flips=st.lists(st.integers(0, 63), max_size=20))
def test_some_chunk_is_within_its_radius(
    layout: tuple[tuple[int, int], ...], limit: int, value: int, flips: list[int]
) -> None:
    """The pigeonhole the lookup rests on: any hash within ``limit`` bits of a
    probe has at least one chunk within that chunk's radius of the probe's."""
    other = near(value, flips[:limit])
    radii = index_module._radii(layout, limit)
    assert sum(r + 1 for r in radii) == limit + 1
    distances = [(((value ^ other) >> shift) & ((1 << width) - 1)).bit_count() for shift, width in layout]
    assert any(d <= r for d, r in zip(distances, radii, strict=True))


def test_file_ids_outside_the_range_are_refused() -> None:
    """A negative id or one past 32 bits is an error, not a silent wrap-around;
    a sparse large id is fine (ids index dense arrays: SQLite's rowids are dense)."""
    index = HashIndex()
    for bad in (-1, 2**32):
        try:
            index.add(bad, 1)
        except ValueError:
            continue
        raise AssertionError(f"id {bad} was accepted")
    index.add(3_000_000, 5)
    assert index.search(5, 0) == [(3_000_000, 0)]


def test_bulk_load_from_a_real_store_equals_adding_file_by_file(tmp_path: Path) -> None:
    """HashIndex.load over the store's batches (signed pHashes, packed crop keys,
    batches smaller than the store) indexes exactly what add_fingerprint does."""
    from dedupd.models import FileStat
    from dedupd.store import Store

    rng = random.Random(11)
    store = Store.open(tmp_path / "s.db")
    by_hand = HashIndex()
    fps = {}
    for n in range(40):
        phash = rng.getrandbits(64) | (1 << 63 if n % 2 else 0)  # half of them negative as SQLite integers
        keys = tuple(rng.getrandbits(64) for _ in range(n % 10))
        fp = _fingerprint(phash, keys)
        file_id = store.upsert_file(tmp_path / f"f{n}.jpg", FileStat(1, n + 1, 100, n), fp)
        by_hand.add_fingerprint(file_id, fp)
        fps[file_id] = fp
    loaded = HashIndex.load(store.hash_batches(size=7), linear_below=0, max_share=float("inf"))
    assert len(loaded) == len(by_hand) == 40
    settings = MatchSettings(rotations=False)
    for fp in fps.values():
        probe = _fingerprint(near(fp.hashes.phash, [1, 40]), tuple(near(k, [3]) for k in fp.crop_keys))
        assert loaded.candidates(probe, settings) == by_hand.candidates(probe, settings)
        assert loaded.candidates(probe, settings)  # itself, at least
    store.close()


# --- the compiled loops (dedupd/_near.c) ---------------------------------------

needs_compiled = pytest.mark.skipif(not index_module.COMPILED, reason="dedupd._near is not built here")


@needs_compiled
@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(1, 400),
    limit=st.integers(0, 16),
    max_share=st.sampled_from([0.0, 0.05, 0.25, 1.0, float("inf")]),
    wide=st.booleans(),
    dead=st.integers(0, 50),
)
def test_compiled_lookup_equals_numpy_and_a_linear_scan(
    seed: int, size: int, limit: int, max_share: float, wide: bool, dead: int
) -> None:
    """On tables of clustered hashes (so that buckets are uneven and hits common),
    with dead entries and a tail, the compiled loops give exactly the positions
    of a linear scan, and fall back to a scan exactly when the numpy path does,
    in the pHash table's layout (whole hashes) and the crop table's (sketches)."""
    rng = random.Random(seed)
    centres = [rng.getrandbits(64) for _ in range(5)]

    def nearby() -> int:  # the flips anywhere, or within 16 bits (a distance in one chunk or sketch)
        low = rng.choice([0, rng.randrange(49)])
        return near(rng.choice(centres), rng.sample(range(low, low + 16 if low else 64), rng.randint(0, 14)))

    values = [nearby() for _ in range(size)]
    tuning = {"seal_min": 1 << 20, "linear_below": 0, "max_share": max_share, "wide_from": 0 if wide else 1 << 22}
    index = HashIndex.build(((i + 1, v, (v ^ 1, v ^ 3)) for i, v in enumerate(values)), **tuning)  # type: ignore[arg-type]
    for fid in rng.sample(range(1, size + 1), min(dead, size)):
        index.remove(fid)
    for fid in range(size + 1, size + 6):  # unsealed: the tail
        index.add_fingerprint(fid, _fingerprint(near(rng.choice(centres), [fid % 64]), (rng.choice(centres),)))
    probes = np.array([nearby() for _ in range(4)], dtype=np.uint64)
    for table in (index._main, index._crops):
        table.compiled = True
        fast = table._multi_index(probes, limit)
        fast_all = table.within(probes, limit)
        table.compiled = False
        slow = table._multi_index(probes, limit)
        assert (fast is None) == (slow is None)
        if fast is not None and slow is not None:
            assert sorted(set(fast.tolist())) == sorted(set(slow.tolist()))
        live = np.flatnonzero(table.alive[: table.size])
        expected = {int(p) for p in live if any((int(table.hashes[p]) ^ int(q)).bit_count() <= limit for q in probes)}
        assert set(fast_all.tolist()) == expected


@needs_compiled
def test_compiled_lookup_refuses_a_layout_that_does_not_fit_its_table() -> None:
    """Offsets or a plan that point outside the arrays raise an error instead of
    reading past them (the loops trust nothing they are given)."""
    near_ = index_module._near
    assert near_ is not None
    probes = np.array([5], dtype=np.uint64)
    masks = np.array([0], dtype=np.int64)
    sketch = np.zeros(4, dtype=np.uint64)
    order = np.zeros(4, dtype=np.uint32)
    hashes = np.zeros(4, dtype=np.uint64)
    alive = np.ones(4, dtype=np.bool_)
    offsets = np.array([0, 9] * 8, dtype=np.int64)  # a bucket ending past the four entries
    plan = np.array([[0, 3, 0, 0, 1]], dtype=np.int64)
    with pytest.raises(IndexError):
        near_.near(probes, plan, masks, offsets, 8, sketch, 8, order, hashes, alive, 64, 1 << 40)
    too_wide = np.array([[0, 40, 0, 0, 1]], dtype=np.int64)
    with pytest.raises(ValueError):
        near_.near(probes, too_wide, masks, offsets, 8, sketch, 8, order, hashes, alive, 64, 1 << 40)
    huge_base = np.array([[0, 3, np.iinfo(np.int64).max, 0, 1]], dtype=np.int64)  # base + value would wrap
    with pytest.raises(ValueError):
        near_.near(probes, huge_base, masks, offsets, 8, sketch, 8, order, hashes, alive, 64, 1 << 40)
    with pytest.raises(IndexError):  # a mask wider than its 3-bit chunk reaches another chunk's buckets
        near_.near(probes, plan, np.array([8], dtype=np.int64), offsets, 8, sketch, 8, order, hashes, alive, 64, 1 << 40)
    many = np.tile(np.array([0, 1, 0, 0, 1 << 20], dtype=np.int64), (1 << 20, 1))  # 2^59 buckets: the count would wrap
    with pytest.raises(MemoryError):
        near_.near(np.zeros(1 << 19, dtype=np.uint64), many, np.zeros(1 << 20, dtype=np.int64),
                   np.zeros(3, dtype=np.int64), 8, sketch, 8, order, hashes, alive, 64, 1 << 40)  # fmt: skip
    with pytest.raises(IndexError):
        near_.scan(hashes, alive, probes, 0, 5, 64)


@pytest.mark.skipif(os.environ.get("CI") != "true", reason="checked where CI installs from a clean clone")
def test_compiled_loops_are_built_by_the_install() -> None:
    """A fresh install builds dedupd._near (a C compiler is there), so the
    lookup is not silently the numpy one, about three times slower."""
    assert index_module.COMPILED


def test_a_compiled_module_older_than_its_source_is_not_used(tmp_path: Path) -> None:
    """After the C source changes, the binary an editable install built before is
    stale: it is refused (the numpy loops run) until it is built again."""
    source, binary = tmp_path / "_near.c", tmp_path / "_near.so"
    source.write_text("/* loops */")
    binary.write_bytes(b"\x7fELF")
    os.utime(source, (1_000, 1_000))
    os.utime(binary, (2_000, 2_000))
    assert not index_module.built_from_an_older_source(binary, source)
    os.utime(source, (3_000, 3_000))
    assert index_module.built_from_an_older_source(binary, source)
    assert not index_module.built_from_an_older_source(binary, tmp_path / "absent.c")  # an install without the source
