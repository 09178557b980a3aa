"""Accuracy: recall per transform and false positives, at the default settings.

    python bench/dataset.py --photos ../shared/photos --out /tmp/dedupd-eval   # once
    python bench/accuracy.py --data /tmp/dedupd-eval [--workers 2] [--json out.json]
    python bench/accuracy.py --lookalikes ../shared/lookalikes               # real look-alikes

Every file of the dataset is fingerprinted once (``fingerprint_batch``, as the
daemon does). Then:

* pairwise: each transformed copy is compared with its source by the matcher
  with the pixel verifier (``dedupd.matching.compare`` with both pictures
  re-read, as ``verdict_for`` does): recall per transform, "near or better"
  (the actionable tiers) and "found" (near or similar).
* false positives: the fingerprints go into the real index
  (``HashIndex.add_fingerprint``); every pair it proposes (``candidates``:
  whole-picture and crop keys, every orientation) whose ground truth
  (labels.json rules, ``bench/dataset.py``) is "distinct" is judged the same
  way, and each one in an actionable tier is a false positive; distinct pairs
  judged ``similar`` are counted apart (reported for review, never acted on).
* grouped: the fingerprints are ingested in sorted path order through the real
  pipeline into a fresh store, exactly as ``dedupd scan`` does; a copy counts
  as found when it ends in its source's group in an actionable tier, and any
  two files in one actionable group whose truth is "distinct" are a false
  positive.

With ``--lookalikes DIR`` the same candidate and grouped evaluation runs over a
folder of real pictures with a labels.json (``../shared/lookalikes``,
``../shared/photos``) and prints the false positives per family (top folder).

Pairs inside an ambiguous set of labels.json, and copies of the ``strong``
category, are not scored.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures as cf
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from dataset import Manifest, Relation, expected_relation  # noqa: E402

from dedupd import errors, logs  # noqa: E402
from dedupd.config import Config  # noqa: E402
from dedupd.hashing import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, verification_pixels  # noqa: E402
from dedupd.index import HashIndex  # noqa: E402
from dedupd.matching import compare  # noqa: E402
from dedupd.models import Fingerprint, Tier  # noqa: E402
from dedupd.pipeline import Fingerprinted, Pipeline, fingerprint_batch  # noqa: E402
from dedupd.store import Store  # noqa: E402

CORE = ("reencode", "resize", "format", "photometric_mild", "metadata", "exif_rotated")
ACTIONABLE = {Tier.EXACT, Tier.PIXEL, Tier.NEAR}


def fingerprint_all(root: Path, paths: list[str], workers: int) -> tuple[dict[str, Fingerprint], list[Any]]:
    ctx = multiprocessing.get_context("forkserver")
    chunks = [[root / p for p in paths[i : i + 8]] for i in range(0, len(paths), 8)]
    results: dict[str, Fingerprint] = {}
    failed = []
    with cf.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        n = len(chunks)
        for batch in pool.map(fingerprint_batch, chunks, [DEFAULT_MAX_PIXELS] * n, [DEFAULT_MAX_BYTES] * n):
            for r in batch:
                rel = str(r.path.relative_to(root))
                if isinstance(r, Fingerprinted):
                    results[rel] = r.fingerprint
                else:
                    failed.append((rel, r.reason, r.detail))
    return results, failed


# --- judging pairs in worker processes -----------------------------------------

_FPS: dict[str, Fingerprint] = {}
_ROOT = Path()


def _init(root: Path, fps: dict[str, Fingerprint]) -> None:
    global _ROOT, _FPS
    _ROOT, _FPS = root, fps
    logs.configure("console", "warning")


def judge(pairs: list[tuple[str, str]]) -> list[tuple[str, str, str | None, str, float]]:
    """(new, old, tier or None, reason, seconds) for each pair, the verifier
    run as ``verdict_for`` runs it (both files re-read)."""
    config = Config()
    cache: dict[str, Any] = {}
    out = []
    for new, old in pairs:
        t0 = time.perf_counter()
        try:
            px = tuple(cache[p] if p in cache else cache.setdefault(p, verification_pixels(_ROOT / p)) for p in (new, old))

            def closer(side: int, new: str = new, old: str = old) -> tuple[Any, Any]:  # the second look
                return verification_pixels(_ROOT / new, side=side), verification_pixels(_ROOT / old, side=side)

            v = compare(_FPS[new], _FPS[old], config.match, (px[0], px[1]), closer)
        except errors.FileSkipped as exc:
            v = compare(_FPS[new], _FPS[old], config.match)
            v = type(v)(None, f"unreadable: {exc}", v.distances)
        if len(cache) > 16:
            cache.clear()
        out.append((new, old, v.match.tier.value if v.match else None, v.match.reason if v.match else v.reason, time.perf_counter() - t0))
    return out


def judge_all(root: Path, fps: dict[str, Fingerprint], pairs: list[tuple[str, str]], workers: int) -> list[tuple[str, str, str | None, str, float]]:
    chunks = [pairs[i : i + 16] for i in range(0, len(pairs), 16)]
    ctx = multiprocessing.get_context("forkserver")
    out = []
    with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(root, fps)) as pool:
        for batch in pool.map(judge, chunks):
            out.extend(batch)
    return out


def candidate_pairs(fps: dict[str, Fingerprint]) -> list[tuple[str, str]]:
    """Every pair the real index proposes, each once (new = the later path)."""
    config = Config()
    names = sorted(fps)
    index = HashIndex()
    pairs = []
    for i, p in enumerate(names):
        for j in index.candidates(fps[p], config.match):
            pairs.append((p, names[j]))
        index.add_fingerprint(i, fps[p])
    return pairs


def grouped(
    root: Path, fps: dict[str, Fingerprint], paths: list[str]
) -> tuple[dict[str, tuple[str, str]], set[frozenset[str]]]:
    """After a scan through the real pipeline: path -> (its group's original,
    tier), and the pairs (original, file) listed ``similar`` for review.

    Only duplicates are members: a file listed ``similar`` under a group is
    not in it (it may be another group's original, and that is its group)."""
    from dedupd.models import FileStat

    config = Config()
    out: dict[str, tuple[str, str]] = {}
    similar: set[frozenset[str]] = set()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "eval.db")
        pipeline = Pipeline(store, config)
        for p in paths:
            if p in fps:
                pipeline.ingest(Fingerprinted(root / p, FileStat.from_path(root / p), fps[p]))
        for original, members in store.groups():
            o = str(original.relative_to(root))
            for path, match, _ in members:
                if match.tier is Tier.SIMILAR:
                    similar.add(frozenset((o, str(path.relative_to(root)))))
                else:
                    out[str(path.relative_to(root))] = (o, match.tier.value)
        store.close()
    return out, similar


def family(path: str) -> str:
    parts = Path(path).parts
    return "/".join(parts[:2]) if parts[0] == "true-duplicates" else parts[0]


# --- the two modes ------------------------------------------------------------


def lookalikes(root: Path, workers: int, json_out: Path | None) -> None:
    manifest_like = json.loads((root / "labels.json").read_text())
    paths = sorted(
        str(p.relative_to(root)) for p in root.rglob("*")
        if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp"}
        and p.name != "contact.png" and "licenses" not in p.parts
    )  # fmt: skip
    dup_sets = [set(s) for s in manifest_like.get("duplicates", [])]
    ambiguous = [set(s["files"]) for s in manifest_like.get("ambiguous", {}).get("sets", [])]

    def truth(a: str, b: str) -> str:
        if any(a in s and b in s for s in ambiguous):
            return "ambiguous"
        if any(a in s and b in s for s in dup_sets):
            return "duplicate"
        return "distinct"

    fps, failed = fingerprint_all(root, paths, workers)
    pairs = candidate_pairs(fps)
    t0 = time.perf_counter()
    judged = judge_all(root, fps, pairs, workers)
    t_judge = time.perf_counter() - t0
    per_family: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    fps_list = []
    for new, old, tier, reason, _ in judged:
        rel = truth(new, old)
        fam = family(new) if family(new) == family(old) else f"{family(new)} x {family(old)}"
        per_family[fam]["pairs"] += 1
        if rel == "distinct":
            per_family[fam][f"distinct_{tier or 'different'}"] += 1
            if tier in {t.value for t in ACTIONABLE}:
                fps_list.append((new, old, tier, reason))
        else:
            per_family[fam][f"{rel}_{tier or 'different'}"] += 1
    groups, similar_pairs = grouped(root, fps, paths)
    group_fp = []
    by_root = collections.defaultdict(list)
    for p, (o, tier) in groups.items():
        if Tier(tier) in ACTIONABLE:
            by_root[o].append(p)
    for o, members in by_root.items():
        everyone = [o, *members]
        for i, a in enumerate(everyone):
            for b in everyone[i + 1 :]:
                if truth(a, b) == "distinct":
                    group_fp.append((a, b))
    dup_found = []
    for s in dup_sets:
        for a in sorted(s):
            for b in sorted(s):
                if a < b:
                    ga = groups.get(a, (a, ""))[0]
                    gb = groups.get(b, (b, ""))[0]
                    tiers = {groups.get(a, ("", "original"))[1], groups.get(b, ("", "original"))[1]}
                    dup_found.append((a, b, ga == gb, sorted(tiers)))
    print(f"{len(fps)} files, {len(failed)} unreadable; {len(pairs)} candidate pairs judged in {t_judge:.1f}s")
    print(f"\n{'family':<48} {'pairs':>5}  verdicts on distinct pairs")
    for fam in sorted(per_family):
        c = per_family[fam]
        rest = ", ".join(f"{k} {v}" for k, v in sorted(c.items()) if k != "pairs")
        print(f"{fam:<48} {c['pairs']:>5}  {rest}")
    print(f"\nfalse positives (actionable tiers): candidate pairs {len(fps_list)}, grouped {len(group_fp)}")
    for fp in fps_list:
        print("  FP", *fp)
    for fp in group_fp:
        print("  FP(group)", *fp)
    print("\ntrue duplicates (same group after a scan):")
    for a, b, same, tiers in dup_found:
        listed = "" if same else " (listed similar, for review)" if frozenset((a, b)) in similar_pairs else ""
        print(f"  {'found' if same else 'MISSED':<6} {a}  {b}  {'/'.join(t for t in tiers if t)}{listed}")
    if json_out:
        json_out.write_text(json.dumps({
            "families": {k: dict(v) for k, v in per_family.items()}, "false_positives": fps_list,
            "false_positives_grouped": group_fp, "true_duplicates": dup_found,
        }, indent=2))  # fmt: skip


def dataset(
    data: Path, workers: int, json_out: Path | None, full: bool = True, pairs: bool = True, only: list[str] | None = None,
    scan: bool = True,
) -> None:
    manifest = Manifest.load(data)
    by_path = {f["path"]: f for f in manifest.raw["files"]}
    if only:  # a few sources and their copies, for a quicker grouped pass
        keep = {f["source"] for f in by_path.values() if any(w in Path(f["source"]).stem for w in only)}
        by_path = {p: f for p, f in by_path.items() if f["source"] in keep or p in keep}
    paths = sorted(by_path)
    t0 = time.perf_counter()
    fps, failed = fingerprint_all(data, paths, workers)
    t_fp = time.perf_counter() - t0
    print(f"fingerprinted {len(fps)} files in {t_fp:.0f}s; {len(failed)} unreadable: {failed[:5]}")

    copies = [
        (p, by_path[p]["source"]) for p in paths
        if by_path[p]["transform"] not in ("original", "downscale_2_5mp") and p in fps and by_path[p]["source"] in fps
    ]  # fmt: skip
    t1 = time.perf_counter()
    judged_copies = judge_all(data, fps, copies, workers) if pairs else []
    verdicts = {(n, o): (tier, why, sec) for n, o, tier, why, sec in judged_copies}
    t_pairs = time.perf_counter() - t1
    seconds = sorted(sec for _, _, sec in verdicts.values())

    if not full or not pairs:
        proposed, distinct, judged, t_cand = [], [], [], 0.0
    else:
        # only a distinct pair can be a false positive: judge those (copies of
        # one source propose each other by the thousand and are scored above)
        proposed = candidate_pairs(fps)
        distinct = [(n, o) for n, o in proposed if expected_relation(manifest, n, o) is Relation.DISTINCT]
        t2 = time.perf_counter()
        judged = judge_all(data, fps, distinct, workers)
        t_cand = time.perf_counter() - t2
    fp_pairs, similar_distinct = [], 0
    for new, old, tier, reason, _ in judged:
        if tier in {t.value for t in ACTIONABLE}:
            fp_pairs.append((new, old, tier, reason))
        elif tier == Tier.SIMILAR.value:
            similar_distinct += 1

    t3 = time.perf_counter()
    groups = grouped(data, fps, paths)[0] if full and scan else {}
    t_grouped = time.perf_counter() - t3

    near: dict[str, list[bool]] = collections.defaultdict(list)
    found: dict[str, list[bool]] = collections.defaultdict(list)
    in_group: dict[str, list[bool]] = collections.defaultdict(list)
    category: dict[str, str] = {}
    misses: dict[str, list[str]] = collections.defaultdict(list)
    grouped_misses: dict[str, list[str]] = collections.defaultdict(list)
    for p in paths:
        f = by_path[p]
        t = f["transform"]
        if t in ("original", "downscale_2_5mp"):
            continue
        category[t] = f["category"]
        tier, why, _ = verdicts.get((p, f["source"]), (None, "unreadable", 0.0))
        near[t].append(tier in {x.value for x in ACTIONABLE})
        found[t].append(tier is not None)
        if tier not in {x.value for x in ACTIONABLE}:
            misses[t].append(f"{p}: {tier or 'different'}: {why}")
        o_p = groups.get(p, (p, ""))
        o_s = groups.get(f["source"], (f["source"], ""))[0]
        # found: in its source's group in an actionable tier, or the group's
        # original itself (a larger copy is kept) with its source a member
        tier_s = groups.get(f["source"], ("", ""))[1]
        in_group[t].append(o_p[0] == o_s and (o_p[1] or tier_s) in {x.value for x in ACTIONABLE})
        if full and not in_group[t][-1]:
            grouped_misses[t].append(f"{p}: in the group of {o_p[0]} ({o_p[1] or 'its own original'}); source in the group of {o_s}")
    members_by_root = collections.defaultdict(list)
    for p, (o, tier) in groups.items():
        if Tier(tier) in ACTIONABLE:
            members_by_root[o].append(p)
    group_fp = []
    for o, members in members_by_root.items():
        everyone = [o, *members]
        for i, a in enumerate(everyone):
            for b in everyone[i + 1 :]:
                if expected_relation(manifest, a, b) is Relation.DISTINCT:
                    group_fp.append((a, b))

    report: dict[str, Any] = {
        "files": len(paths), "fingerprint_seconds": round(t_fp, 1), "pairs_seconds": round(t_pairs, 1),
        "verify_ms_median": round(1000 * seconds[len(seconds) // 2], 1) if seconds else None,
        "verify_ms_p95": round(1000 * seconds[int(len(seconds) * 0.95)], 1) if seconds else None,
        "grouped_seconds": round(t_grouped, 1),
        "candidate_pairs": len(proposed), "distinct_candidate_pairs": len(distinct), "candidate_seconds": round(t_cand, 1),
        "false_positives_pairwise": fp_pairs, "false_positives_grouped": group_fp,
        "distinct_pairs_similar": similar_distinct, "transforms": {},
    }  # fmt: skip
    print(f"\n{'transform':<22} {'category':<17} {'n':>4} {'near+':>6} {'found':>6} {'grouped':>7}")
    per_cat: dict[str, list[bool]] = collections.defaultdict(list)
    for t in sorted(near, key=lambda t: (category[t], t)):
        n = len(near[t])
        rn, rf, rg = sum(near[t]) / n, sum(found[t]) / n, sum(in_group[t]) / n
        per_cat[category[t]].extend(near[t])
        report["transforms"][t] = {"category": category[t], "n": n, "recall_near": round(rn, 3),
                                   "found_near_or_similar": round(rf, 3), "recall_grouped": round(rg, 3)}
        print(f"{t:<22} {category[t]:<17} {n:>4} {rn:>6.3f} {rf:>6.3f} {rg:>7.3f}")
    print()
    for c, v in sorted(per_cat.items()):
        print(f"category {c:<17} recall {sum(v) / len(v):.3f} ({sum(v)}/{len(v)})")
    core = [x for c in CORE for x in per_cat.get(c, [])]
    report["recall_core"] = round(sum(core) / len(core), 3)
    print(f"\nverifier time per copy pair: median {report['verify_ms_median']} ms, p95 {report['verify_ms_p95']} ms (re-read of both files included)")
    print(f"grouped pass (a scan through the pipeline): {t_grouped:.0f}s")
    print(f"candidate pairs proposed by the index: {len(proposed)}, of them distinct by the labels: {len(distinct)}, judged in {t_cand:.0f}s")
    print(f"false positives: pairwise {len(fp_pairs)}, grouped {len(group_fp)}; distinct pairs judged similar {similar_distinct}")
    for a, b, *why in fp_pairs[:20]:
        print("  FP", a, b, *why)
    for a, b in group_fp[:20]:
        print("  FP(group)", a, b)
    report["misses"] = misses
    report["grouped_misses"] = grouped_misses
    if json_out:
        json_out.write_text(json.dumps(report, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("/tmp/dedupd-eval"))
    ap.add_argument("--lookalikes", type=Path, help="a folder of real pictures with labels.json")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--pairs-only", action="store_true", help="only each copy against its source: skip the candidate and grouped passes")
    ap.add_argument("--grouped-only", action="store_true", help="only the grouped pass (a scan through the pipeline): skip the pairwise and candidate passes")
    ap.add_argument("--no-grouped", action="store_true", help="the pairwise and candidate passes only: skip the grouped pass (the longest)")
    ap.add_argument("--sources", help="comma-separated words: only the sources whose name contains one, and their copies")
    args = ap.parse_args()
    logs.configure("console", "warning")  # one duplicate_found line per pair would drown the report
    if args.lookalikes:
        lookalikes(args.lookalikes.resolve(), args.workers, args.json)
    else:
        only = args.sources.split(",") if args.sources else None
        dataset(
            args.data, args.workers, args.json, full=not args.pairs_only, pairs=not args.grouped_only, only=only,
            scan=not args.no_grouped,
        )


if __name__ == "__main__":
    main()
