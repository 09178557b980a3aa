"""What the re-hash before every action costs: time per quarantine, with and without it.

    python bench/action_cost.py [--sizes 1 16 64] [--pairs 6]

Before a move takes a duplicate from its path, the Actor hashes (SHA-256)
the copy it placed in quarantine (a hard link: the duplicate itself) and the
original, every tier, so that a file rewritten in place since it was
fingerprinted is never moved (docs/safety.md, reproduction 4).  This times
real quarantines through ``Actor.handle`` (a real store, real files, the
intent, the record beside the copy, the audit row), in the same run:

* ``re-hash``: the Actor as it is;
* ``no re-hash``: the same Actor with the two hashes left out of its check
  (inode and stat checks kept), the baseline.

Each size is timed on the same filesystem (a hard link: the re-hash is the
only full read) and, when /dev/shm is another filesystem, with the
quarantine there (a copy, verified by hashing it as it is placed: the
re-hash adds the original only).  The files were just written, so they are
read from the page cache, as the duplicate usually is (a worker has just
read it); an original that fell out of the cache costs a disk read more.
The two variants alternate pair by pair, so both see the same cache.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path

from dedupd import fileops, logs
from dedupd.actions import Actor
from dedupd.config import from_mapping
from dedupd.models import Distances, Duplicate, FileStat, Fingerprint, Hashes, Match, Orientation, Tier
from dedupd.store import Store


class NoRehash(Actor):
    """The Actor without the content re-hash: the copy's inode and the original's stat only."""

    def _check_copy(self, dest: Path, linked: bool, dup: Duplicate) -> str | None:
        if linked and FileStat.from_path(dest) != dup.duplicate.stat:
            return "a different file was at the path"
        return None


def fingerprint(sha: str) -> Fingerprint:
    return Fingerprint(sha256=sha, pixel_digest="bench:" + sha, hashes=Hashes(0, 0, bytes(48)),
                       width=1, height=1, format="JPEG", detail=10.0)


MATCH = Match(Tier.EXACT, Distances(0, 0, 0.0), 100.0, Orientation.IDENTITY, "byte-identical")


def one(actor: Actor, store: Store, root: Path, name: str, data: bytes) -> float:
    """Write an original and its copy, store both, and time the quarantine of the copy."""
    sha = hashlib.sha256(data).hexdigest()
    paths = [root / f"{name}-original.bin", root / name / "copy.bin"]
    records = []
    for seq, p in enumerate(paths):
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(data)
        st = FileStat.from_path(p)
        with store.atomic():
            file_id = store.upsert_file(p, st, fingerprint(sha), seq=seq)
        records.append(store.record(file_id))
    original, copy = records
    assert original is not None and copy is not None
    started = time.perf_counter()
    outcome = actor.handle(Duplicate(copy, original, MATCH, False, "bench"))
    took = time.perf_counter() - started
    assert outcome == "done", outcome
    return took


def run(sizes: list[int], pairs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        shm = Path("/dev/shm")
        places = [("same filesystem (hard link)", base / "q")]
        if shm.is_dir() and os.stat(shm).st_dev != os.stat(base).st_dev:
            places.append(("quarantine on another filesystem (copy)", Path(tempfile.mkdtemp(dir=shm))))
        print(f"{'size':>6} {'where':<42} {'no re-hash':>11} {'re-hash':>9} {'ratio':>6} {'added':>9}")
        for n, (where, quarantine) in enumerate(places):
            quarantine.mkdir(exist_ok=True)
            for size in sizes:
                root = base / f"root-{n}-{size}"
                root.mkdir()
                config = from_mapping({"roots": [str(root)], "quarantine_dir": str(quarantine),
                                       "actions": {"exact": "quarantine"}, "max_actions_per_minute": 100_000})
                store = Store.open(base / f"db-{n}-{size}")
                actors = {"re-hash": Actor(store, config), "no re-hash": NoRehash(store, config)}
                times: dict[str, list[float]] = {k: [] for k in actors}
                data = os.urandom(size << 20)
                for i in range(pairs):
                    for kind, actor in actors.items():
                        times[kind].append(one(actor, store, root, f"{kind[:2]}{i}", data))
                store.close()
                for p in list(quarantine.rglob("*")):
                    if p.is_file():
                        p.unlink()
                fileops.fsync_dir(quarantine)
                a, b = statistics.median(times["no re-hash"]), statistics.median(times["re-hash"])
                print(f"{size:>4}MB {where:<42} {a * 1000:>9.1f}ms {b * 1000:>7.1f}ms {b / a:>6.2f} {(b - a) * 1000:>7.1f}ms")
            if quarantine.parent == shm:
                for p in sorted(quarantine.rglob("*"), reverse=True):
                    p.rmdir() if p.is_dir() else p.unlink()
                quarantine.rmdir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 16, 64], help="file sizes in MiB")
    parser.add_argument("--pairs", type=int, default=6, help="quarantines per size and variant")
    args = parser.parse_args()
    logs.configure(level="warning")
    run(args.sizes, args.pairs)


if __name__ == "__main__":
    main()
