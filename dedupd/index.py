"""Near-duplicate lookup: which stored 64-bit hashes lie within a Hamming distance.

Two tables of (hash, file id): one holds each file's whole-picture pHash, the
other its crop keys (pHashes of its content box and of crop windows,
``Fingerprint.crop_keys``). A lookup probes the whole-picture table with the
new picture's pHash, its turned variants and its crop keys, and the crop
table with its pHash: a copy cropped from a stored picture, or padded around
it, is proposed either way round.

Each table is searched with a multi-index hash (Norouzi, Punjani and Fleet,
"Fast search in Hamming space with multi-index hashing", CVPR 2012). The
64 bits are cut into chunks (four of 16 bits, or three of 21-22 bits for a
table of millions of entries), and for each chunk the entries are kept
sorted by that chunk's value, with an offset per value (a CSR layout). If
two hashes are at most ``r`` bits apart, the chunk distances add up to at
most ``r``, so some chunk ``c`` is within its radius ``t_c`` of the probe's,
for any radii with ``sum(t_c + 1) = r + 1`` (:func:`_radii`): at the
default ``r`` = 10 and four chunks, 2, 2, 2 and 1 bits. A lookup therefore
visits, per chunk, the buckets of every value within ``t_c`` bits of the
probe's chunk (137 of 65,536 at 2 bits, 17 at 1), and checks the full
distance of what it finds there. The answer is exact, the same set a
linear scan gives, for any ``r``: no parameter trades recall for speed.
Where the buckets would hold more than a quarter of the table (large
``r``, or a small table), the lookup scans the table linearly instead,
since that is then cheaper.

The chunk order is built for a *sealed* prefix of the table. Entries added
later sit in a tail that is scanned linearly; removed or replaced entries
are marked dead. The table is compacted and resealed when the tail outgrows
a share of the sealed part (a 64th of the pHashes, an eighth of the crop
keys) or a quarter of the entries are dead, so a lookup stays sub-linear
as files arrive and leave. One table entry costs 8
bytes of hash, 4 of file id, 1 of liveness and, per chunk, 4 of order and
4 of sketch (45 bytes in four chunks, 37 in three), or 8 of hash copy in
the pHash table, which a lookup probes 17 times (61 bytes). File ids map to their
entries through arrays indexed by id (SQLite rowids are dense), not through
a dict of ten million Python ints. ``bench/index_bench.py`` and
``bench/store_scale.py`` measure it.

What a lookup costs at a million files is memory latency: thousands of
buckets, each a short run somewhere in tens of MiB. The loops that visit
them are compiled (``_near.c``, an optional extension built at install):
the same buckets and the same tests, with each bucket's cache lines asked
for several buckets before it is tested, so that the misses overlap. Where
it is not built, numpy does the same, about three times slower.
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

try:
    from dedupd import _near
except ImportError:  # not built (no C compiler at install): the numpy loops, same answers
    _near = None  # type: ignore[assignment]


def built_from_an_older_source(binary: Path, source: Path) -> bool:
    """Is the compiled module ``binary`` older than its C ``source``?  An editable
    install builds it once; after a change to the source (a pull, an edit) the
    old binary would keep loading until ``pip install -e .`` runs again."""
    return source.is_file() and binary.is_file() and source.stat().st_mtime > binary.stat().st_mtime


if _near is not None and built_from_an_older_source(
    Path(getattr(_near, "__file__", "") or ""), Path(__file__).with_name("_near.c")
):
    warnings.warn(
        "dedupd/_near.c is newer than its compiled module: the numpy loops run instead until "
        "it is rebuilt (pip install -e .)",
        RuntimeWarning,
        stacklevel=1,
    )
    _near = None  # type: ignore[assignment]

#: whether the compiled loops of ``_near.c`` are there
COMPILED = _near is not None

if TYPE_CHECKING:
    from dedupd.config import MatchSettings
    from dedupd.models import Fingerprint

#: How the 64 bits are cut into chunks, as (shift, width) of each. Theory
#: wants about log2(N) bits a chunk (Norouzi et al.), but what a lookup costs
#: here is cache misses: one per bucket visited, and three chunks of 21 bits
#: visit 3,378 buckets a probe (mostly empty) against 428 for four of 16.
#: Measured on random hashes (CPU time, under load, 2026-11-30), four chunks
#: were the cheaper on a million pHashes probed 17 times (2.3 against 3.7 ms),
#: three on ten million crop keys probed once (0.77 against 0.96 ms, and 45
#: MiB less), where a 16-bit bucket holds 150 entries.
_NARROW = ((0, 16), (16, 16), (32, 16), (48, 16))
_WIDE = ((0, 21), (21, 21), (42, 22))
#: sealed entries from which a table takes the wide layout
_WIDE_FROM = 1 << 22
#: most buckets a lookup visits per chunk and probe; past it, a linear scan
_MAX_MASKS = 1 << 15
#: file ids are kept as 32-bit numbers, and map to entries through arrays indexed by id
_MAX_ID = 1 << 32
#: hashes compared per block in a linear scan (probes x block temporaries)
_BLOCK = 32768
#: entries handled per block while sealing (bounds the temporaries)
_SEAL_BLOCK = 1 << 20

#: rows per batch of a bulk load
_BATCH = 65536

U64 = npt.NDArray[np.uint64]
U32 = npt.NDArray[np.uint32]
#: (file ids, signed pHashes, packed crop keys) of a batch of files
Batch = tuple[list[int], list[int], list["bytes | None"]]
I64 = npt.NDArray[np.int64]
Layout = tuple[tuple[int, int], ...]


def _volume(width: int, radius: int) -> int:
    """How many ``width``-bit values lie within ``radius`` bits of one."""
    return sum(math.comb(width, k) for k in range(radius + 1))


@functools.cache
def _masks(width: int, radius: int) -> I64:
    """Every ``width``-bit XOR mask with at most ``radius`` bits set, ascending."""
    masks = [sum(1 << b for b in bits) for k in range(radius + 1) for bits in itertools.combinations(range(width), k)]
    return np.sort(np.array(masks, dtype=np.int64))


def _radii(layout: Layout, limit: int) -> tuple[int, ...]:
    """Per chunk, how far from the probe's chunk value its buckets are visited.

    The generalised pigeonhole (Qin, Wang and Xiao, "GPH", 2018): when the
    radii plus one add up to ``limit + 1``, a hash within ``limit`` bits has
    at least one chunk within its radius, since otherwise the chunk
    distances alone would add up to more than ``limit``. With four chunks
    and ``limit`` 10 that is 2, 2, 2, 1 rather than 2 in every chunk; with
    three, 3, 3, 2. A radius of -1 means the chunk is not visited.
    """
    base, extra = divmod(limit + 1, len(layout))
    radii = [base - 1] * len(layout)
    for c in sorted(range(len(layout)), key=lambda c: layout[c][1])[:extra]:  # narrowest chunks first
        radii[c] += 1
    return tuple(radii)


@functools.cache
def _plan(layout: Layout, limit: int) -> tuple[I64, I64] | None:
    """Which buckets a lookup visits in a layout at a distance, for both the
    numpy and the compiled loops: per chunk (shift, width, first bucket, first
    mask, end of its masks), and the masks one after another; None where some
    chunk would visit too many buckets (a linear scan is cheaper)."""
    radii = _radii(layout, limit)
    if any(_volume(width, r) > _MAX_MASKS for (_, width), r in zip(layout, radii, strict=True)):
        return None
    rows: list[tuple[int, int, int, int, int]] = []
    masks: list[I64] = []
    base = start = 0
    for (shift, width), radius in zip(layout, radii, strict=True):
        chunk = _masks(width, radius) if radius >= 0 else np.zeros(0, dtype=np.int64)
        rows.append((shift, width, base, start, start + len(chunk)))
        start += len(chunk)
        masks.append(chunk)
        base += 1 << width
    return np.array(rows, dtype=np.int64).reshape(-1, 5), np.concatenate(masks)


def _chunk(hashes: U64, shift: int, width: int) -> I64:
    """The ``width`` bits of each hash from bit ``shift`` up."""
    return ((hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)


def _sketch(hashes: U64, shift: int, width: int) -> U32:
    """The 32 bits that follow a chunk (wrapping round): a lower bound of the
    distance, read beside the chunk's buckets."""
    turn = (shift + width) % 64
    turned = (hashes >> np.uint64(turn)) | (hashes << np.uint64(64 - turn)) if turn else hashes
    return (turned & np.uint64(0xFFFF_FFFF)).astype(np.uint32)


def _gather(starts: I64, lengths: I64) -> I64:
    """The concatenation of ``range(s, s + n)`` for every pair (all n > 0), without a Python loop."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    shift: I64 = starts - (np.cumsum(lengths) - lengths)
    positions: I64 = np.arange(total, dtype=np.int64) + np.repeat(shift, lengths)
    return positions


def _headroom(n: int) -> int:
    """Room left after a bulk load of ``n`` entries, so that the files added
    next do not copy the whole table (a 10-million-key table takes 0.6 s)."""
    return n // 8 + 1024


def _joined(parts: list[npt.NDArray[Any]], dtype: type[np.generic]) -> tuple[npt.NDArray[Any], int]:
    """The parts one after another in one new array with room to grow, and their length."""
    n = sum(len(p) for p in parts)
    joined = np.zeros(n + _headroom(n), dtype=dtype)
    if parts:
        np.concatenate(parts, out=joined[:n])
    return joined, n


class _Table:
    """(hash, owner id) entries, searchable by Hamming distance; an owner has
    one or more entries, appended together and removed together."""

    def __init__(
        self,
        capacity: int,
        seal_min: int,
        linear_below: int,
        max_share: float,
        wide_from: int,
        *,
        copies: bool,
        tail_share: int,
        compiled: bool,
    ) -> None:
        self.hashes: U64 = np.zeros(capacity, dtype=np.uint64)
        self.owners: U32 = np.zeros(capacity, dtype=np.uint32)  # file ids
        self.alive = np.zeros(capacity, dtype=np.bool_)
        self.size = 0  # entries appended, dead ones included
        self.live = 0
        self.sealed = 0  # entries [0, sealed) are in the chunk order
        # The buckets of all chunks in one layout: bucket (c, v) is
        # order[offsets[b]:offsets[b + 1]] with b = bases[c] + v, and holds the
        # positions of the entries whose chunk c is v.  Beside each, in the
        # same order, the whole hash or its sketch, the 32 bits after chunk c:
        # candidates are tested, or most of them ruled out, without a random
        # read of the table.
        self.layout: Layout = _NARROW
        self.bases: I64 = np.zeros(len(self.layout), dtype=np.int64)
        self.offsets: npt.NDArray[np.integer[Any]] = np.zeros(1, dtype=np.int64)
        self.order: U32 = np.zeros(0, dtype=np.uint32)
        self.sketch: npt.NDArray[np.unsignedinteger[Any]] = np.zeros(0, dtype=np.uint32)
        # owner id -> its first entry (-1: none) and how many it has
        self.first: I64 = np.full(0, -1, dtype=np.int64)
        self.count = np.zeros(0, dtype=np.uint16)
        self.seal_min = seal_min
        self.linear_below = linear_below
        self.max_share = max_share
        self.wide_from = wide_from
        self.copies = copies
        self.tail_share = tail_share
        self.compiled = compiled and COMPILED

    @property
    def nbytes(self) -> int:
        arrays: list[npt.NDArray[Any]] = [self.hashes, self.owners, self.alive, self.first, self.count, self.offsets, self.order, self.sketch]
        return sum(a.nbytes for a in arrays)

    # --- changes ---------------------------------------------------------

    def put(self, owner: int, values: list[int]) -> None:
        """Give ``owner`` exactly these entries (none: remove it)."""
        self.drop(owner)
        if not values:
            return
        n = len(values)
        self._reserve(self.size + n)
        self._reserve_owner(owner)
        start = self.size
        self.hashes[start : start + n] = np.array(values, dtype=np.uint64)
        self.owners[start : start + n] = owner
        self.alive[start : start + n] = True
        self.first[owner] = start
        self.count[owner] = n
        self.size += n
        self.live += n
        self._maybe_seal()

    def drop(self, owner: int) -> None:
        if not 0 <= owner < len(self.first) or self.first[owner] < 0:
            return
        start, n = int(self.first[owner]), int(self.count[owner])
        self.alive[start : start + n] = False
        self.first[owner] = -1
        self.count[owner] = 0
        self.live -= n
        self._maybe_seal()

    def load(self, owners: npt.NDArray[Any], values: U64, n: int | None = None) -> None:
        """Append the first ``n`` (default: all) of these entries (owners'
        entries contiguous), then seal. An empty table takes the arrays as
        they are, without a copy, and their length past ``n`` as room to grow."""
        n = len(values) if n is None else n
        if n:
            self._reserve_owner(int(owners[:n].min()))  # checks the range
            self._reserve_owner(int(owners[:n].max()) + _headroom(n))
        if self.size == 0:
            self.hashes = np.ascontiguousarray(values, dtype=np.uint64)
            self.owners = np.ascontiguousarray(owners, dtype=np.uint32)
            self.alive = np.zeros(len(values), dtype=np.bool_)
            self.alive[:n] = True
        else:
            self._reserve(self.size + n)
            self.hashes[self.size : self.size + n] = values[:n]
            self.owners[self.size : self.size + n] = owners[:n]
            self.alive[self.size : self.size + n] = True
        start = self.size
        self.size += n
        self.live += n
        self._index_owners(start, self.size)
        self.seal()

    def _index_owners(self, start: int, end: int) -> None:
        """Set ``first``/``count`` for the (contiguous) owners of entries [start, end)."""
        owners = self.owners[start:end][self.alive[start:end]]
        positions = np.flatnonzero(self.alive[start:end]) + start
        if owners.size == 0:
            return
        # an owner's entries are contiguous: a run starts where the owner changes
        starts = np.flatnonzero(np.concatenate([[True], owners[1:] != owners[:-1]]))
        counts = np.diff(np.append(starts, owners.size))
        self.first[owners[starts]] = positions[starts]
        self.count[owners[starts]] = counts

    def _reserve(self, size: int) -> None:
        if size > len(self.hashes):
            capacity = max(1024, size, 2 * len(self.hashes))
            self.hashes = np.resize(self.hashes, capacity)
            self.owners = np.resize(self.owners, capacity)
            alive = np.zeros(capacity, dtype=np.bool_)
            alive[: self.size] = self.alive[: self.size]
            self.alive = alive

    def _reserve_owner(self, owner: int) -> None:
        if not 0 <= owner < _MAX_ID:  # SQLite gives rowids from 1 up, one more each time
            raise ValueError(f"file id out of the index's range: {owner}")
        if owner >= len(self.first):
            capacity = max(1024, owner + 1, 2 * len(self.first))
            first = np.full(capacity, -1, dtype=np.int64)
            first[: len(self.first)] = self.first
            count = np.zeros(capacity, dtype=np.uint16)
            count[: len(self.count)] = self.count
            self.first, self.count = first, count

    def _maybe_seal(self) -> None:
        tail = self.size - self.sealed
        dead = self.size - self.live
        if tail > max(self.seal_min, self.sealed // self.tail_share) or dead > max(self.seal_min, self.size // 4):
            self.seal()

    def seal(self) -> None:
        """Compact out dead entries and build the chunk order over all of them.

        One chunk at a time, into arrays allocated once, with the temporaries
        of each step bounded by ``_SEAL_BLOCK`` entries: at ten million
        entries the peak stays near what the table keeps.
        """
        if self.live != self.size:
            keep = np.flatnonzero(self.alive[: self.size])
            n = len(keep)
            self.hashes[:n] = self.hashes[keep]
            self.owners[:n] = self.owners[keep]
            del keep
            self.alive[:n] = True
            self.alive[n : self.size] = False
            self.size = n
            self.first[:] = -1
            self.count[:] = 0
            self._index_owners(0, n)
        n = self.sealed = self.size
        layout = self.layout = _WIDE if n >= self.wide_from else _NARROW
        widths = [1 << width for _, width in layout]
        self.bases = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
        chunks = len(layout)
        big = chunks * n >= 1 << 32
        self.order = self.sketch = np.zeros(0, dtype=np.uint32)  # free the old layout first
        self.offsets = np.zeros(0, dtype=np.int64)
        offsets: npt.NDArray[np.integer[Any]] = np.zeros(sum(widths) + 1, dtype=np.int64 if big else np.uint32)
        order = np.empty(chunks * n, dtype=np.uint32)
        # a table probed many times a lookup, in four chunks: a copy of each
        # hash in bucket order (one exact test, no random read of the table
        # for a candidate that fails); otherwise its 32-bit sketch, half the
        # memory, and a random read for the 2.5% of candidates it lets through
        full = self.copies and layout is _NARROW
        sketch: npt.NDArray[np.unsignedinteger[Any]] = np.empty(chunks * n, dtype=np.uint64 if full else np.uint32)
        live = self.hashes[:n]
        keys = np.empty(n, dtype=np.uint64)
        for c, (shift, width) in enumerate(layout):
            # sort (chunk value, position) pairs packed in 64 bits: one sort of
            # plain integers, faster than a stable argsort and half its memory
            for lo in range(0, n, _SEAL_BLOCK):
                block = live[lo : lo + _SEAL_BLOCK]
                keys[lo : lo + len(block)] = (_chunk(block, shift, width).astype(np.uint64) << np.uint64(32)) | np.arange(
                    lo, lo + len(block), dtype=np.uint64
                )
            keys.sort()
            here = order[c * n : (c + 1) * n]
            counts = np.zeros(1 << width, dtype=np.int64)
            for lo in range(0, n, _SEAL_BLOCK):
                block = keys[lo : lo + _SEAL_BLOCK]
                here[lo : lo + len(block)] = block.astype(np.uint32)  # the low 32 bits: the position
                counts += np.bincount((block >> np.uint64(32)).astype(np.int64), minlength=1 << width)
                ahead = live[here[lo : lo + len(block)]]
                sketch[c * n + lo : c * n + lo + len(block)] = ahead if full else _sketch(ahead, shift, width)
            base = int(self.bases[c])
            offsets[base + 1 : base + 1 + (1 << width)] = np.cumsum(counts) + c * n
            del counts
        del keys
        self.order, self.sketch, self.offsets = order, sketch, offsets

    # --- lookups ---------------------------------------------------------

    def within(self, probes: U64, limit: int) -> I64:
        """Positions of live entries within ``limit`` bits of any probe (a
        position may come more than once)."""
        if self.live == 0 or probes.size == 0:
            return np.zeros(0, dtype=np.int64)
        found = [self._linear(probes, limit, self.sealed, self.size)] if self.size > self.sealed else []
        if self.sealed:
            sealed = self._multi_index(probes, limit)
            found.append(self._linear(probes, limit, 0, self.sealed) if sealed is None else sealed)
        return np.concatenate(found)

    def _multi_index(self, probes: U64, limit: int) -> I64 | None:
        """Positions in the sealed part within ``limit`` bits of a probe, found
        through the chunk buckets; None where a linear scan is the cheaper way.

        All probes and chunks at once: the buckets within each chunk's radius
        (:func:`_radii`) of each probe's chunk value; of their entries (read
        in bucket order, so in runs), those whose hash copy is within
        ``limit`` bits of the probe; or, in three chunks, those whose sketch
        (32 more bits) is, and of those the ones whose full hash is. Each
        entry is only checked against the probe whose bucket held it.
        """
        if self.compiled:
            return self._compiled(probes, limit)
        found = self._buckets(probes, limit)
        if found is None:
            return None
        starts, lengths, which = found
        count = len(probes)
        at = _gather(starts, lengths)  # places in the bucket layout, in runs
        if self.sketch.dtype == np.uint64:  # whole hashes in bucket order: the exact test at once
            keys = np.tile(probes, len(self.layout))  # (chunk, probe)
            exact = np.flatnonzero(np.bitwise_count(self.sketch[at] ^ np.repeat(keys[which], lengths)) <= limit)
            entries = self.order[at[exact]].astype(np.intp)
            exact_hits: I64 = entries[self.alive[entries]]
            return exact_hits
        sketches = np.concatenate([_sketch(probes, shift, width) for shift, width in self.layout])  # (chunk, probe)
        # a lower bound of the distance from 32 other bits: a cheap,
        # sequential read that rules out nearly every candidate
        close = np.flatnonzero(np.bitwise_count(self.sketch[at] ^ np.repeat(sketches[which], lengths)) <= limit)
        positions = self.order[at[close]].astype(np.intp)
        bucket = np.searchsorted(np.cumsum(lengths), close, side="right")  # few: the survivors only
        probe = which[bucket] % count
        near = np.bitwise_count(self.hashes[positions] ^ probes[probe]) <= limit
        near &= self.alive[positions]
        hits: I64 = positions[near]
        return hits

    def _compiled(self, probes: U64, limit: int) -> I64 | None:
        """:meth:`_multi_index` by the compiled loops: the same buckets, the same
        tests and the same fallback to a linear scan, in one call that asks
        for each bucket's entries several buckets before it tests them."""
        planned = _plan(self.layout, limit)
        if planned is None or self.sealed < self.linear_below:
            return None
        plan, masks = planned
        count = len(probes)
        # the numpy path's test, buckets plus entries against a share of a scan
        share = self.max_share * count * self.sealed - count * len(masks)
        budget = min(share, float(1 << 62))
        assert _near is not None
        found = _near.near(
            np.ascontiguousarray(probes, dtype=np.uint64), plan, masks, self.offsets, self.offsets.itemsize,
            self.sketch, self.sketch.itemsize, self.order, self.hashes, self.alive, limit, math.floor(budget),
        )
        return None if found is None else np.frombuffer(found, dtype=np.int64)

    def _buckets(self, probes: U64, limit: int) -> tuple[I64, I64, I64] | None:
        """The non-empty buckets to visit: where each starts in the layout, its
        length, and which (chunk, probe) it is for (``chunk * len(probes) +
        probe``); None when a linear scan is cheaper."""
        planned = _plan(self.layout, limit)
        if planned is None or self.sealed < self.linear_below:
            return None
        plan, all_masks = planned
        count = len(probes)
        buckets, which = [], []
        for c, (shift, width, base, first, end) in enumerate(plan.tolist()):
            if first == end:  # a chunk not visited (radius -1)
                continue
            masks = all_masks[first:end]
            values = _chunk(probes, shift, width)
            buckets.append(((values[:, None] ^ masks[None, :]) + base).ravel())
            which.append(np.repeat(np.arange(c * count, (c + 1) * count, dtype=np.int64), len(masks)))
        b = np.concatenate(buckets)
        starts = self.offsets[b].astype(np.int64)
        lengths = self.offsets[b + 1].astype(np.int64) - starts
        if len(b) + int(lengths.sum()) > self.max_share * count * self.sealed:  # a scan is cheaper
            return None
        full = np.flatnonzero(lengths)
        return starts[full], lengths[full], np.concatenate(which)[full]

    def visited(self, probes: U64, limit: int) -> int:
        """How many sealed entries a multi-index lookup reads (for benchmarks)."""
        found = self._buckets(probes, limit)
        return self.sealed * len(probes) if found is None else int(found[1].sum())

    def _linear(self, probes: U64, limit: int, start: int, end: int) -> I64:
        if self.compiled:
            assert _near is not None
            scanned = _near.scan(self.hashes, self.alive, np.ascontiguousarray(probes, dtype=np.uint64), start, end, limit)
            return np.frombuffer(scanned, dtype=np.int64)
        keys = probes[:, None]
        found = []
        for lo in range(start, end, _BLOCK):
            hi = min(end, lo + _BLOCK)
            near = (np.bitwise_count(self.hashes[None, lo:hi] ^ keys) <= limit).any(axis=0)
            near &= self.alive[lo:hi]
            hits = np.flatnonzero(near)
            if hits.size:
                found.append(hits + lo)
        return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


class HashIndex:
    """An in-memory set of (id, 64-bit hash), searchable by Hamming distance,
    with each id's crop keys beside it.

    ``seal_min``, ``linear_below``, ``max_share`` and ``wide_from`` tune when
    the tables are resealed, when a lookup scans linearly and from what size
    a table is cut into three chunks rather than four; ``compiled=False``
    takes the numpy loops where the compiled ones (``_near.c``) are built.
    They change the cost of a lookup, never its answer (the tests turn them
    down to exercise every path).
    """

    def __init__(
        self,
        capacity: int = 1024,
        *,
        seal_min: int = 4096,
        linear_below: int = 4096,
        max_share: float = 0.25,
        wide_from: int = _WIDE_FROM,
        compiled: bool = True,
    ) -> None:
        self._tuning = (seal_min, linear_below, max_share, wide_from)
        # The pHashes take the 17 probes of a lookup, the crop keys one. The
        # tail, scanned linearly by every probe, is resealed at a 64th of the
        # pHashes (at a million: 0.2 s of sorting every 15,600 files, against
        # up to 3.1 ms a lookup for a tail of an eighth), and at an eighth of
        # the crop keys (at ten million: 2.2 s every 139,000 files, a pause in
        # the ingest, against up to 1.9 ms a lookup).
        self._main = _Table(capacity, *self._tuning, copies=True, tail_share=64, compiled=compiled)
        self._crops = _Table(0, *self._tuning, copies=False, tail_share=8, compiled=compiled)

    def __len__(self) -> int:
        return self._main.live

    @classmethod
    def build(
        cls, items: Iterable[tuple[int, int] | tuple[int, int, tuple[int, ...]]], **tuning: Any
    ) -> HashIndex:
        """An index of (id, pHash) or (id, pHash, crop keys) items, each id once."""

        def batches() -> Iterator[Batch]:
            it = iter(items)
            while chunk := list(itertools.islice(it, _BATCH)):
                ids = [item[0] for item in chunk]
                phashes = [item[1] - (1 << 64) if item[1] >= 1 << 63 else item[1] for item in chunk]
                crops = [b"".join(k.to_bytes(8, "big") for k in item[2]) if len(item) == 3 else None for item in chunk]
                yield ids, phashes, crops

        return cls.load(batches(), **tuning)

    @classmethod
    def load(cls, batches: Iterable[Batch], **tuning: Any) -> HashIndex:
        """An index of the rows the store gives for it (``hash_batches``): each a
        list of file ids, of their pHashes as signed 64-bit numbers (SQLite's
        integers), and of their crop keys packed big-endian, 8 bytes each.
        ``tuning``: the keywords of the constructor.

        Column-wise, a batch at a time, so that a million files take seconds
        and no Python object per crop key is ever made; the columns become
        the tables' arrays without another copy.
        """
        ids_parts: list[I64] = []
        hash_parts: list[U64] = []
        owner_parts: list[U32] = []
        key_parts: list[U64] = []
        for ids, phashes, crops in batches:
            ids_array = np.array(ids, dtype=np.int64)
            ids_parts.append(ids_array)
            hash_parts.append(np.array(phashes, dtype=np.int64).view(np.uint64))
            counts = np.array([len(c) // 8 if c else 0 for c in crops], dtype=np.int64)
            owner_parts.append(np.repeat(ids_array.astype(np.uint32), counts))  # range checked below
            key_parts.append(np.frombuffer(b"".join(c for c in crops if c), dtype=">u8").astype(np.uint64))
        all_ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, dtype=np.int64)
        del ids_parts
        if len(all_ids) and not 0 <= int(all_ids.min()) <= int(all_ids.max()) < _MAX_ID:
            raise ValueError(f"file id out of the index's range: {int(all_ids.min())}..{int(all_ids.max())}")
        ascending = bool(np.all(all_ids[1:] > all_ids[:-1]))  # the store reads in rowid order
        if not ascending and len(np.unique(all_ids)) != len(all_ids):
            raise ValueError("an index is loaded with each file id once")
        index = cls(capacity=0, **tuning)
        hashes, n = _joined(hash_parts, np.uint64)
        del hash_parts
        file_ids, _ = _joined([all_ids.astype(np.uint32)], np.uint32)
        del all_ids
        index._main.load(file_ids, hashes, n)
        del file_ids, hashes
        owners, n = _joined(owner_parts, np.uint32)
        del owner_parts
        keys, _ = _joined(key_parts, np.uint64)
        del key_parts
        index._crops.load(owners, keys, n)
        return index

    def add_fingerprint(self, file_id: int, fp: Fingerprint) -> None:
        """Index a fingerprinted file under the keys its lookups probe."""
        self.add(file_id, fp.hashes.phash)
        self._crops.put(file_id, list(fp.crop_keys[:255]))

    def candidates(self, fp: Fingerprint, settings: MatchSettings) -> set[int]:
        """Ids of stored files that may be perceptual copies of ``fp``: to be
        verified, never trusted as they are."""
        if fp.detail < settings.min_detail:
            return set()
        probes = [fp.hashes.phash, *fp.crop_keys]
        if settings.rotations:
            probes.extend(h.phash for _, h in fp.variants)
        limit = settings.near_distance
        main = self._main.within(np.unique(np.array(probes, dtype=np.uint64)), limit)  # a key twice: once
        crops = self._crops.within(np.array([fp.hashes.phash], dtype=np.uint64), limit)
        owners = np.concatenate([self._main.owners[main], self._crops.owners[crops]])
        return set(owners.tolist())

    @property
    def nbytes(self) -> int:
        """Memory held by the index's arrays."""
        return self._main.nbytes + self._crops.nbytes

    def add(self, file_id: int, value: int) -> None:
        """Add or replace the hash of ``file_id``."""
        self._main.put(file_id, [value])

    def remove(self, file_id: int) -> None:
        """Forget ``file_id`` and its crop keys (nothing if it is not there)."""
        self._main.drop(file_id)
        self._crops.drop(file_id)

    def search(self, value: int, max_distance: int) -> list[tuple[int, int]]:
        """(id, distance) of every hash within ``max_distance`` bits, nearest first."""
        table = self._main
        positions = np.unique(table.within(np.array([value], dtype=np.uint64), max_distance))
        if positions.size == 0:
            return []
        ids = table.owners[positions]
        distances = np.bitwise_count(table.hashes[positions] ^ np.uint64(value))
        order = np.lexsort((ids, distances))
        return [(int(ids[i]), int(distances[i])) for i in order]
