"""Near-duplicate lookup: which stored 64-bit hashes lie within a Hamming distance.

Two tables of (hash, file id): one holds each file's whole-picture pHash, the
other its crop keys (pHashes of its content box and of crop windows,
``Fingerprint.crop_keys``). A lookup probes the whole-picture table with the
new picture's pHash, its turned variants and its crop keys, and the crop
table with its pHash: a copy cropped from a stored picture, or padded around
it, is proposed either way round.

Each table is searched with a multi-index hash (Norouzi, Punjani and Fleet,
"Fast search in Hamming space with multi-index hashing", CVPR 2012). The
64 bits are cut into four 16-bit chunks, and for each chunk the entries are
kept sorted by that chunk's value, with an offset per value (a CSR layout).
If two hashes are at most ``r`` bits apart, the four chunk distances add up
to at most ``r``, so at least one chunk is within ``r // 4`` bits of the
probe's. A lookup therefore visits, per chunk, the buckets of every 16-bit
value within ``r // 4`` bits of the probe's chunk (137 of 65,536 at the
default ``r`` = 10), and checks the full distance of what it finds there.
The answer is exact, the same set a linear scan gives, for any ``r``: no
parameter trades recall for speed. Where the buckets would hold more than a
quarter of the table (large ``r``, or a small table), the lookup scans the
table linearly instead, since that is then cheaper.

The chunk order is built for a *sealed* prefix of the table. Entries added
later sit in a tail that is scanned linearly; removed or replaced entries
are marked dead. The table is compacted and resealed when the tail outgrows
an eighth of the sealed part or a quarter of the entries are dead, so a
lookup stays sub-linear as files arrive and leave. At a million files with
nine crop keys each (ten million entries), one table entry costs 8 bytes of
hash, 4 of file id, 1 of liveness, 16 of chunk order and 16 of sketches. File
ids map to their entries through arrays indexed by id (SQLite rowids are
dense), not through a dict of ten million Python ints. ``bench/index_bench.py`` and
``bench/store_scale.py`` measure it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from dedupd.config import MatchSettings
    from dedupd.models import Fingerprint

#: chunks per 64-bit hash, and bits per chunk
_CHUNKS = 4
_CHUNK_BITS = 16
_CHUNK_VALUES = 1 << _CHUNK_BITS
#: largest per-chunk radius the multi-index probes (r // 4 <= 3, so r <= 15);
#: beyond it the neighbourhoods are too wide and a linear scan is cheaper
_MAX_CHUNK_RADIUS = 3
#: file ids are kept as 32-bit numbers, and map to entries through arrays indexed by id
_MAX_ID = 1 << 32
#: hashes compared per block in a linear scan (probes x block temporaries)
_BLOCK = 32768

#: rows per batch of a bulk load
_BATCH = 65536

U64 = npt.NDArray[np.uint64]
#: (file ids, signed pHashes, packed crop keys) of a batch of files
Batch = tuple[list[int], list[int], list["bytes | None"]]
I64 = npt.NDArray[np.int64]


def _chunk_masks(radius: int) -> npt.NDArray[np.int64]:
    """Every 16-bit XOR mask with at most ``radius`` bits set."""
    values = np.arange(_CHUNK_VALUES, dtype=np.uint16)
    return np.flatnonzero(np.bitwise_count(values) <= radius).astype(np.int64)


_MASKS = [_chunk_masks(r) for r in range(_MAX_CHUNK_RADIUS + 1)]


def _chunk(hashes: U64, c: int) -> I64:
    """Chunk ``c`` (16 bits) of each hash."""
    return ((hashes >> np.uint64(_CHUNK_BITS * c)) & np.uint64(_CHUNK_VALUES - 1)).astype(np.int64)


def _sketch(hashes: U64, c: int) -> npt.NDArray[np.uint32]:
    """The 32 bits of chunks c+1 and c+2 (wrapping) of each hash."""
    shift = _CHUNK_BITS * ((c + 1) % _CHUNKS)
    turned = (hashes >> np.uint64(shift)) | (hashes << np.uint64(64 - shift)) if shift else hashes
    return (turned & np.uint64(0xFFFF_FFFF)).astype(np.uint32)


def _gather(starts: I64, ends: I64) -> I64:
    """The concatenation of ``range(s, e)`` for every pair, without a Python loop."""
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    keep = lengths > 0
    starts, lengths = starts[keep], lengths[keep]
    shift: I64 = starts - (np.cumsum(lengths) - lengths)
    positions: I64 = np.arange(total, dtype=np.int64) + np.repeat(shift, lengths)
    return positions


class _Table:
    """(hash, owner id) entries, searchable by Hamming distance; an owner has
    one or more entries, appended together and removed together."""

    def __init__(self, capacity: int, seal_min: int, linear_below: int, max_share: float) -> None:
        self.hashes: U64 = np.zeros(capacity, dtype=np.uint64)
        self.owners: npt.NDArray[np.uint32] = np.zeros(capacity, dtype=np.uint32)  # file ids
        self.alive = np.zeros(capacity, dtype=np.bool_)
        self.size = 0  # entries appended, dead ones included
        self.live = 0
        self.sealed = 0  # entries [0, sealed) are in the chunk order
        # The buckets of all four chunks in one layout: bucket (c, v) is
        # order[offsets[b]:offsets[b + 1]] with b = c * 65536 + v, and holds the
        # positions of the entries whose chunk c is v.  Beside each, in the
        # same order, its sketch: the 32 bits of chunks c+1 and c+2, so that
        # most candidates are ruled out without a random read of the table.
        self.offsets: I64 = np.zeros(_CHUNKS * _CHUNK_VALUES + 1, dtype=np.int64)
        self.order: npt.NDArray[np.uint32] = np.zeros(0, dtype=np.uint32)
        self.sketch: npt.NDArray[np.uint32] = np.zeros(0, dtype=np.uint32)
        # owner id -> its first entry (-1: none) and how many it has
        self.first: I64 = np.full(0, -1, dtype=np.int64)
        self.count = np.zeros(0, dtype=np.uint16)
        self.seal_min = seal_min
        self.linear_below = linear_below
        self.max_share = max_share

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

    def load(self, owners: I64, values: U64) -> None:
        """Append many entries at once (owners' entries contiguous), then seal."""
        n = len(values)
        self._reserve(self.size + n)
        if n:
            self._reserve_owner(int(owners.min()))  # checks the range
            self._reserve_owner(int(owners.max()))
        start = self.size
        self.hashes[start : start + n] = values
        self.owners[start : start + n] = owners
        self.alive[start : start + n] = True
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
        if tail > max(self.seal_min, self.sealed // 8) or dead > max(self.seal_min, self.size // 4):
            self.seal()

    def seal(self) -> None:
        """Compact out dead entries and build the chunk order over all of them."""
        if self.live != self.size:
            keep = np.flatnonzero(self.alive[: self.size])
            n = len(keep)
            self.hashes[:n] = self.hashes[keep]
            self.owners[:n] = self.owners[keep]
            self.alive[:n] = True
            self.alive[n : self.size] = False
            self.size = n
            self.first[:] = -1
            self.count[:] = 0
            self._index_owners(0, n)
        self.sealed = self.size
        live = self.hashes[: self.size]
        orders, sketches, counts = [], [], []
        for c in range(_CHUNKS):
            chunk = _chunk(live, c).astype(np.uint16)
            order = np.argsort(chunk, kind="stable")  # a radix sort on 16-bit keys
            orders.append(order.astype(np.uint32))
            sketches.append(_sketch(live[order], c))
            counts.append(np.bincount(chunk, minlength=_CHUNK_VALUES))
        self.order, self.sketch = np.concatenate(orders), np.concatenate(sketches)
        self.offsets = np.zeros(_CHUNKS * _CHUNK_VALUES + 1, dtype=np.int64)
        np.cumsum(np.concatenate(counts), out=self.offsets[1:])

    # --- lookups ---------------------------------------------------------

    def within(self, probes: U64, limit: int) -> I64:
        """Positions of live entries within ``limit`` bits of any probe (a
        position may come more than once)."""
        if self.live == 0 or probes.size == 0:
            return np.zeros(0, dtype=np.int64)
        found = [self._linear(probes, limit, self.sealed, self.size)]
        if self.sealed:
            sealed = self._multi_index(probes, limit)
            found.append(self._linear(probes, limit, 0, self.sealed) if sealed is None else sealed)
        return np.concatenate(found)

    def _multi_index(self, probes: U64, limit: int) -> I64 | None:
        """Positions in the sealed part within ``limit`` bits of a probe, found
        through the chunk buckets; None where a linear scan is the cheaper way.

        Per chunk: the buckets within ``limit // 4`` bits of each probe's chunk
        value; of their entries, those whose sketch (32 more bits, read in
        bucket order, so in runs) is within ``limit`` bits of the probe's; of
        those, the ones whose full hash is. Each entry is only checked against
        the probe whose bucket held it.
        """
        radius = limit // _CHUNKS
        if self.sealed < self.linear_below or radius > _MAX_CHUNK_RADIUS:
            return None
        masks = _MASKS[radius]
        count = len(probes)
        starts, ends = self._buckets(probes, radius)
        lengths = ends - starts
        if int(lengths.sum()) > self.max_share * count * self.sealed:  # a scan is cheaper
            return None
        at = _gather(starts, ends)  # places in the bucket layout, in runs
        key = np.repeat(np.repeat(np.arange(_CHUNKS * count, dtype=np.intp), len(masks)), lengths)
        sketches = np.stack([_sketch(probes, c) for c in range(_CHUNKS)]).ravel()  # (chunk, probe)
        # a lower bound of the distance from 32 of the other 48 bits: a cheap,
        # sequential read that rules out nearly every candidate
        close = np.bitwise_count(self.sketch[at] ^ sketches[key]) <= limit
        positions = self.order[at[close]].astype(np.intp)
        probe = key[close] % count
        near = np.bitwise_count(self.hashes[positions] ^ probes[probe]) <= limit
        near &= self.alive[positions]
        hits: I64 = positions[near]
        return hits

    def _buckets(self, probes: U64, radius: int) -> tuple[I64, I64]:
        """Where each (chunk, probe, mask) bucket starts and ends in the layout:
        every bucket within ``radius`` bits of a probe's chunk, all at once."""
        chunks = np.stack([_chunk(probes, c) for c in range(_CHUNKS)])  # (chunk, probe)
        base = (np.arange(_CHUNKS, dtype=np.int64) * _CHUNK_VALUES)[:, None, None]
        buckets = ((chunks[:, :, None] ^ _MASKS[radius][None, None, :]) + base).ravel()
        return self.offsets[buckets], self.offsets[buckets + 1]

    def visited(self, probes: U64, limit: int) -> int:
        """How many sealed entries a multi-index lookup reads (for benchmarks)."""
        starts, ends = self._buckets(probes, limit // _CHUNKS)
        return int((ends - starts).sum())

    def _linear(self, probes: U64, limit: int, start: int, end: int) -> I64:
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

    ``seal_min``, ``linear_below`` and ``max_share`` tune when the tables are
    resealed and when a lookup scans linearly; they change the cost of a
    lookup, never its answer (the tests turn them down to exercise every path).
    """

    def __init__(
        self, capacity: int = 1024, *, seal_min: int = 4096, linear_below: int = 4096, max_share: float = 0.25
    ) -> None:
        self._tuning = (seal_min, linear_below, max_share)
        self._main = _Table(capacity, *self._tuning)
        self._crops = _Table(0, *self._tuning)

    def __len__(self) -> int:
        return self._main.live

    @classmethod
    def build(
        cls,
        items: Iterable[tuple[int, int] | tuple[int, int, tuple[int, ...]]],
        *,
        seal_min: int = 4096,
        linear_below: int = 4096,
        max_share: float = 0.25,
    ) -> HashIndex:
        """An index of (id, pHash) or (id, pHash, crop keys) items, each id once."""

        def batches() -> Iterator[Batch]:
            it = iter(items)
            while chunk := list(itertools.islice(it, _BATCH)):
                ids = [item[0] for item in chunk]
                phashes = [item[1] - (1 << 64) if item[1] >= 1 << 63 else item[1] for item in chunk]
                crops = [b"".join(k.to_bytes(8, "big") for k in item[2]) if len(item) == 3 else None for item in chunk]
                yield ids, phashes, crops

        return cls.load(batches(), seal_min=seal_min, linear_below=linear_below, max_share=max_share)

    @classmethod
    def load(
        cls, batches: Iterable[Batch], *, seal_min: int = 4096, linear_below: int = 4096, max_share: float = 0.25
    ) -> HashIndex:
        """An index of the rows the store gives for it (``hash_batches``): each a
        list of file ids, of their pHashes as signed 64-bit numbers (SQLite's
        integers), and of their crop keys packed big-endian, 8 bytes each.

        Column-wise, a batch at a time, so that a million files take seconds
        and no Python object per crop key is ever made.
        """
        ids_parts, hash_parts, owner_parts, key_parts = [], [], [], []
        for ids, phashes, crops in batches:
            ids_array = np.array(ids, dtype=np.int64)
            ids_parts.append(ids_array)
            hash_parts.append(np.array(phashes, dtype=np.int64).view(np.uint64))
            counts = np.array([len(c) // 8 if c else 0 for c in crops], dtype=np.int64)
            owner_parts.append(np.repeat(ids_array, counts))
            key_parts.append(np.frombuffer(b"".join(c for c in crops if c), dtype=">u8").astype(np.uint64))
        all_ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, dtype=np.int64)
        ascending = bool(np.all(all_ids[1:] > all_ids[:-1]))  # the store reads in rowid order
        if not ascending and len(np.unique(all_ids)) != len(all_ids):
            raise ValueError("an index is loaded with each file id once")
        index = cls(capacity=len(all_ids), seal_min=seal_min, linear_below=linear_below, max_share=max_share)
        index._main.load(all_ids, np.concatenate(hash_parts) if hash_parts else np.zeros(0, dtype=np.uint64))
        if owner_parts:
            index._crops.load(np.concatenate(owner_parts), np.concatenate(key_parts))
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
        main = self._main.within(np.array(probes, dtype=np.uint64), limit)
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
