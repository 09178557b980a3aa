"""Near-duplicate lookup: which stored pHashes lie within a Hamming distance.

All stored 64-bit pHashes sit in one contiguous numpy ``uint64`` array; a
query XORs it with the probe and counts bits (``numpy.bitwise_count``) in
one vectorised pass.  At a million fingerprints that is 8 MB of hashes and
a few milliseconds a query on one core (see ``bench/`` for the figures),
with no tuning knob that could silently lose a match the way a
multi-index or tree with a wrong parameter can.

Beside the whole-picture pHashes, a second table holds each file's crop keys
(pHashes of its content box and of crop windows, ``Fingerprint.crop_keys``).
A lookup probes the whole-picture table with the new picture's pHash (and
its turned variants) and with its crop keys, and the crop table with its
pHash: a copy cropped from a stored picture, or padded around it, is
proposed either way round.  About ten keys per file: 16 bytes each (hash and
id), and about three times the work of a whole-picture-only lookup.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from dedupd.config import MatchSettings
    from dedupd.models import Fingerprint


#: hashes compared per block in a multi-probe lookup (probes x block temporaries)
_BLOCK = 32768
#: at most this many crop keys per file (ids in the crop table are id * _KEYS + k)
_KEYS = 16


class HashIndex:
    """An in-memory set of (id, 64-bit hash), searchable by Hamming distance."""

    def __init__(self, capacity: int = 1024) -> None:
        self._hashes = np.zeros(capacity, dtype=np.uint64)
        self._ids = np.zeros(capacity, dtype=np.int64)
        self._size = 0
        self._slot: dict[int, int] = {}  # id -> position in the arrays
        self._crops: HashIndex | None = None  # crop keys, under id * _KEYS + k
        self._crop_count: dict[int, int] = {}  # id -> how many crop keys it has

    def __len__(self) -> int:
        return self._size

    @classmethod
    def build(cls, items: Iterable[tuple[int, int] | tuple[int, int, tuple[int, ...]]]) -> HashIndex:
        """An index of (id, pHash) or (id, pHash, crop keys) items."""
        index = cls()
        for item in items:
            index.add(item[0], item[1])
            if len(item) == 3:
                index._add_crops(item[0], item[2])
        return index

    def add_fingerprint(self, file_id: int, fp: Fingerprint) -> None:
        """Index a fingerprinted file under the keys its lookups probe."""
        self.add(file_id, fp.hashes.phash)
        self._add_crops(file_id, fp.crop_keys)

    def candidates(self, fp: Fingerprint, settings: MatchSettings) -> set[int]:
        """Ids of stored files that may be perceptual copies of ``fp``: to be
        verified, never trusted as they are."""
        if fp.detail < settings.min_detail:
            return set()
        probes = [fp.hashes.phash, *fp.crop_keys]
        if settings.rotations:
            probes.extend(h.phash for _, h in fp.variants)
        limit = settings.near_distance
        found = self._within(probes, limit)
        if self._crops is not None:
            found.update(i // _KEYS for i in self._crops._within([fp.hashes.phash], limit))
        return found

    def _within(self, probes: list[int], limit: int) -> set[int]:
        """Ids whose hash is within ``limit`` bits of any probe: all probes in
        one pass over the array, in blocks that keep the temporaries small."""
        if self._size == 0 or not probes:
            return set()
        keys = np.array(probes, dtype=np.uint64)[:, None]
        found: set[int] = set()
        for start in range(0, self._size, _BLOCK):
            block = self._hashes[start : min(self._size, start + _BLOCK)]
            near = (np.bitwise_count(np.bitwise_xor(block[None, :], keys)) <= limit).any(axis=0)
            hits = np.flatnonzero(near)
            if hits.size:
                found.update(self._ids[start + hits].tolist())
        return found

    def _add_crops(self, file_id: int, keys: tuple[int, ...]) -> None:
        self._remove_crops(file_id)
        if not keys:
            return
        if self._crops is None:
            self._crops = HashIndex()
        for k, key in enumerate(keys[:_KEYS]):
            self._crops.add(file_id * _KEYS + k, key)
        self._crop_count[file_id] = min(len(keys), _KEYS)

    def _remove_crops(self, file_id: int) -> None:
        count = self._crop_count.pop(file_id, 0)
        if self._crops is not None:
            for k in range(count):
                self._crops.remove(file_id * _KEYS + k)

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays (the id maps come on top)."""
        own = self._hashes.nbytes + self._ids.nbytes
        return own + (self._crops.nbytes if self._crops is not None else 0)

    def add(self, file_id: int, value: int) -> None:
        """Add or replace the hash of ``file_id``."""
        slot = self._slot.get(file_id)
        if slot is None:
            if self._size == len(self._hashes):
                self._grow()
            slot = self._size
            self._size += 1
            self._slot[file_id] = slot
            self._ids[slot] = file_id
        self._hashes[slot] = np.uint64(value)

    def remove(self, file_id: int) -> None:
        self._remove_crops(file_id)
        slot = self._slot.pop(file_id, None)
        if slot is None:
            return
        last = self._size - 1
        if slot != last:  # move the last entry into the hole
            moved = int(self._ids[last])
            self._ids[slot] = moved
            self._hashes[slot] = self._hashes[last]
            self._slot[moved] = slot
        self._size = last

    def search(self, value: int, max_distance: int) -> list[tuple[int, int]]:
        """(id, distance) of every hash within ``max_distance`` bits, nearest first."""
        if self._size == 0:
            return []
        live = self._hashes[: self._size]
        distances = np.bitwise_count(np.bitwise_xor(live, np.uint64(value)))
        hits = np.flatnonzero(distances <= max_distance)
        if hits.size == 0:
            return []
        order = np.lexsort((self._ids[hits], distances[hits]))
        return [(int(self._ids[hits[i]]), int(distances[hits[i]])) for i in order]

    def _grow(self) -> None:
        capacity = max(1024, 2 * len(self._hashes))
        self._hashes = np.resize(self._hashes, capacity)
        self._ids = np.resize(self._ids, capacity)
