"""A copy of another host's picture: verified on shared pixels, against one host.

    python bench/exchange.py --photos ../shared/photos [--sources 20]

For each of ``--sources`` real photos (the first in name order), the photo is
the original (PNG) and two copies are made of it, JPEG q85: half size (a
near duplicate) and one with a patch of another part pasted on it
(``tests/helpers.pasted``: a changed picture, similar at most).  Each pair is
placed twice, in one run:

- **one host** (the baseline): both files in one SQLite store, both read here;
  the time is the copy's placement (``Grouping.changed``: lookup, the
  verifier's reads and checks, the match);
- **two hosts**: a throwaway PostgreSQL cluster (``tests/pg_cluster.py``) and
  two stores on it, alpha with the photo, beta with the copy.  Timed apart:
  beta's first placement (judged on hashes, pixels asked of alpha), alpha's
  answer (``Exchange.share``: the photo read as the verifier reads it, a PNG
  written to the store), and beta's placement again on them
  (``Grouping.take_answers``).

Printed: the verdicts of both (they must agree), the median time of each step
and of the whole exchange against the baseline (a ratio), and the size of the
shared PNGs.  The processes and the server share this machine: on two
machines alpha's part runs on alpha's CPUs.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import structlog
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import helpers as H  # noqa: E402
from dedupd.config import Config  # noqa: E402
from dedupd.grouping import Grouping  # noqa: E402
from dedupd.hashing import fingerprint_file  # noqa: E402
from dedupd.models import PostgresUrl  # noqa: E402
from dedupd.store.postgres import PostgresStore  # noqa: E402
from dedupd.store.sqlite import Store  # noqa: E402

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def place(store: object, grouping: Grouping, path: Path) -> tuple[int, float]:
    """Store ``path`` and place it; its id and the seconds the placement took."""
    st, fp = fingerprint_file(path)
    with store.atomic():  # type: ignore[attr-defined]
        file_id = store.upsert_file(path, st, fp)  # type: ignore[attr-defined]
        record = store.record(file_id)  # type: ignore[attr-defined]
        started = time.perf_counter()
        grouping.changed(record, None)
        return file_id, time.perf_counter() - started


def tier_of(store: object, file_id: int, original_id: int) -> str:
    known = store.match_of(file_id)  # type: ignore[attr-defined]
    if known is not None and known[0] == original_id:
        return known[1].tier.value
    similar = [m for other, m in store.similar_of(file_id) if other == original_id]  # type: ignore[attr-defined]
    return similar[0].tier.value if similar else "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--sources", type=int, default=20)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    import pg_cluster  # noqa: PLC0415

    sources = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in SUFFIXES)[: args.sources]
    bin_dir = pg_cluster.binaries()
    if bin_dir is None:
        sys.exit("PostgreSQL binaries not found under /usr/lib/postgresql")
    cluster = pg_cluster.Cluster.start(bin_dir)
    config = Config()
    local, asked, shared, again, pngs = [], [], [], [], []
    agree, verdicts = 0, []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            for n, source in enumerate(sources):
                with Image.open(source) as opened:
                    im = opened.convert("RGB")
                    copies = {
                        "half": im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS),
                        "patched": H.pasted(im),
                    }
                for kind, edited in copies.items():
                    pair = work / f"{n}-{kind}"
                    (pair / "alpha").mkdir(parents=True)
                    (pair / "beta").mkdir()
                    photo = pair / "alpha" / "photo.png"
                    im.save(photo)
                    copy = pair / "beta" / "copy.jpg"
                    edited.save(copy, quality=85)
                    # one host: both files here
                    store = Store.open(pair / "one.db")
                    try:
                        grouping = Grouping(store, config)
                        a_id, _ = place(store, grouping, photo)
                        c_id, seconds = place(store, grouping, copy)
                        local.append(seconds)
                        one = tier_of(store, c_id, a_id)
                    finally:
                        store.close()
                    # two hosts on one PostgreSQL store
                    url = PostgresUrl(cluster.new_database())
                    alpha, beta = (PostgresStore.open(url, host=h) for h in ("alpha", "beta"))
                    try:
                        ga, gb = Grouping(alpha, config), Grouping(beta, config)
                        a_id, _ = place(alpha, ga, photo)
                        c_id, seconds = place(beta, gb, copy)
                        asked.append(seconds)
                        started = time.perf_counter()
                        ga.exchange.share()
                        shared.append(time.perf_counter() - started)
                        pngs.append(int(alpha._one("SELECT COALESCE(SUM(LENGTH(pixels)), 0) FROM pixels_shared")[0]))
                        started = time.perf_counter()
                        gb.take_answers()
                        again.append(time.perf_counter() - started)
                        two = tier_of(beta, c_id, a_id)
                    finally:
                        alpha.close()
                        beta.close()
                    agree += one == two
                    verdicts.append((f"{source.name} {kind}", one, two))
    finally:
        cluster.stop()

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:7.1f} ms"

    for name, one, two in verdicts:
        print(f"{name:48s} one host: {one:8s} two hosts: {two}")
    # the pairs where pixels were asked and shared (a copy the hashes did not
    # propose, or judged different on them, asks nothing)
    exchanged = [i for i, size in enumerate(pngs) if size]
    asked, shared, again, local_x = ([v[i] for i in exchanged] for v in (asked, shared, again, local))
    pngs = [pngs[i] for i in exchanged]
    whole = [a + s + g for a, s, g in zip(asked, shared, again)]
    print(f"{len(verdicts)} pairs; the same verdict on one host and across two: {agree}/{len(verdicts)}")
    print(f"{len(exchanged)} pairs exchanged pixels; medians over them:")
    print(f"one host, the copy's placement (baseline):   {ms(local_x)}")
    print(f"two hosts, beta's first placement (asks):    {ms(asked)}")
    print(f"           alpha's answer (read, PNG):       {ms(shared)}")
    print(f"           beta's placement on the pixels:   {ms(again)}")
    print(f"           the whole exchange:               {ms(whole)}  "
          f"({statistics.median(whole) / statistics.median(local_x):.2f}x the baseline)")
    print(f"shared PNG: median {statistics.median(pngs) / 1024:.0f} KiB, largest {max(pngs) / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
