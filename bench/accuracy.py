"""Accuracy: precision and recall per transform, at the default settings.

    python bench/dataset.py --photos ../shared/photos --out /tmp/dedupd-eval   # once
    python bench/accuracy.py --data /tmp/dedupd-eval [--workers 2] [--json out.json]

Every file of the dataset is fingerprinted once (``fingerprint_job``, as the
daemon does). Two evaluations follow from those fingerprints:

* pairwise: each transformed copy is compared with its source by the matcher
  (``dedupd.matching.compare``): recall per transform. Every pair the index
  can propose (pHash within near_distance, in any orientation) is judged by
  the matcher too, and each accepted pair whose ground truth (labels.json
  rules, ``bench/dataset.py``) is "distinct" is a false positive.
* grouped: the fingerprints are ingested in sorted path order through the real
  pipeline into a fresh store, exactly as ``dedupd scan`` does; a copy counts
  as found when it ends in its source's group, and any two files in one group
  whose truth is "distinct" are a false positive.

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

sys.path.insert(0, str(Path(__file__).parent))

from dataset import Manifest, Relation, expected_relation  # noqa: E402

from dedupd import logs  # noqa: E402
from dedupd.config import Config  # noqa: E402
from dedupd.hashing import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS  # noqa: E402
from dedupd.matching import compare  # noqa: E402
from dedupd.pipeline import Fingerprinted, Pipeline, fingerprint_batch  # noqa: E402
from dedupd.store import Store  # noqa: E402

CORE = ("reencode", "resize", "format", "photometric_mild", "metadata", "exif_rotated")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("/tmp/dedupd-eval"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    logs.configure("console", "warning")  # one duplicate_found line per pair would drown the report
    manifest = Manifest.load(args.data)
    files = manifest.raw["files"]
    by_path = {f["path"]: f for f in files}
    paths = sorted(by_path)
    config = Config()

    t0 = time.perf_counter()
    ctx = multiprocessing.get_context("forkserver")
    chunks = [[args.data / p for p in paths[i : i + 8]] for i in range(0, len(paths), 8)]
    results: dict[str, Fingerprinted] = {}
    errors = []
    with cf.ProcessPoolExecutor(args.workers, mp_context=ctx) as pool:
        for batch in pool.map(fingerprint_batch, chunks, [DEFAULT_MAX_PIXELS] * len(chunks), [DEFAULT_MAX_BYTES] * len(chunks)):
            for r in batch:
                rel = str(r.path.relative_to(args.data))
                if isinstance(r, Fingerprinted):
                    results[rel] = r
                else:
                    errors.append((rel, r.reason, r.detail))
    t_fp = time.perf_counter() - t0
    print(f"fingerprinted {len(results)} files in {t_fp:.0f}s; {len(errors)} unreadable: {errors[:5]}")

    def truth(a: str, b: str) -> Relation:
        return expected_relation(manifest, a, b)

    # --- pairwise recall per transform --------------------------------------
    found: dict[str, list[bool]] = collections.defaultdict(list)
    category = {}
    for p in paths:
        f = by_path[p]
        if f["transform"] in ("original", "downscale_2_5mp"):
            continue
        category[f["transform"]] = f["category"]
        src = f["source"]
        if p not in results or src not in results:
            found[f["transform"]].append(False)
            continue
        v = compare(results[p].fingerprint, results[src].fingerprint, config.match)
        found[f["transform"]].append(v.match is not None)

    # --- pairwise false positives: every pair the index can propose ---------
    from dedupd.index import HashIndex

    ids = {p: i for i, p in enumerate(sorted(results))}
    names = {i: p for p, i in ids.items()}
    index = HashIndex.build((ids[p], r.fingerprint.hashes.phash) for p, r in results.items())
    fp_pairs = []
    judged = 0
    for p, r in results.items():
        fp = r.fingerprint
        probes = [fp.hashes.phash] + [h.phash for _, h in fp.variants]
        cands = {i for probe in probes for i, _ in index.search(probe, config.match.near_distance)}
        for i in cands:
            q = names[i]
            if q <= p:
                continue
            judged += 1
            v = compare(fp, results[q].fingerprint, config.match)
            if v.match is not None and truth(p, q) is Relation.DISTINCT:
                fp_pairs.append((p, q, v.match.reason))

    # --- grouped, through the real pipeline -----------------------------------
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "eval.db")
        pipeline = Pipeline(store, config)
        for p in paths:
            if p in results:
                pipeline.ingest(results[p])
        root_of = {}
        for original, members in store.groups():
            o = str(original.relative_to(args.data))
            root_of[o] = o
            for path, _, _ in members:
                root_of[str(path.relative_to(args.data))] = o
        store.close()
    t_group = time.perf_counter() - t1
    group_found: dict[str, list[bool]] = collections.defaultdict(list)
    for p in paths:
        f = by_path[p]
        if f["transform"] in ("original", "downscale_2_5mp"):
            continue
        group_found[f["transform"]].append(root_of.get(p, p) == root_of.get(f["source"], f["source"]) and p in root_of)
    members_by_root = collections.defaultdict(list)
    for p, o in root_of.items():
        members_by_root[o].append(p)
    group_fp = []
    group_pairs = 0
    for members in members_by_root.values():
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                rel = truth(a, b)
                if rel is Relation.AMBIGUOUS:
                    continue
                group_pairs += 1
                if rel is Relation.DISTINCT:
                    group_fp.append((a, b))

    # --- report ---------------------------------------------------------------
    report = {"files": len(paths), "fingerprint_seconds": round(t_fp, 1), "group_seconds": round(t_group, 1),
              "pairs_judged": judged, "false_positives_pairwise": fp_pairs, "false_positives_grouped": group_fp,
              "grouped_scored_pairs": group_pairs, "transforms": {}}
    print(f"\n{'transform':<22} {'category':<17} {'n':>4} {'pairwise recall':>15} {'grouped recall':>14}")
    per_cat: dict[str, list[bool]] = collections.defaultdict(list)
    for t in sorted(found, key=lambda t: (category[t], t)):
        n = len(found[t])
        rp = sum(found[t]) / n
        rg = sum(group_found[t]) / n
        per_cat[category[t]].extend(found[t])
        report["transforms"][t] = {"category": category[t], "n": n, "recall_pairwise": round(rp, 3), "recall_grouped": round(rg, 3)}
        print(f"{t:<22} {category[t]:<17} {n:>4} {rp:>15.3f} {rg:>14.3f}")
    print()
    for c, v in sorted(per_cat.items()):
        print(f"category {c:<17} recall {sum(v) / len(v):.3f} ({sum(v)}/{len(v)})")
    core = [x for c in CORE for x in per_cat.get(c, [])]
    gate = [x for c in ("reencode", "resize", "format", "photometric_mild") for x in per_cat.get(c, [])]
    report["recall_core"] = round(sum(core) / len(core), 3)
    report["recall_gate"] = round(sum(gate) / len(gate), 3)
    print(f"\nrecall over re-encode, resize, format change, mild photometric: {report['recall_gate']:.3f}")
    print(f"false positives: pairwise {len(fp_pairs)} of {judged} candidate pairs judged; grouped {len(group_fp)} of {group_pairs} scored pairs in groups")
    grouped_tp = group_pairs - len(group_fp)
    report["precision_grouped"] = round(grouped_tp / group_pairs, 4) if group_pairs else 1.0
    print(f"grouped precision {report['precision_grouped']}")
    for a, b, *why in fp_pairs[:20]:
        print("  FP", a, b, *why)
    for a, b in group_fp[:20]:
        print("  FP(group)", a, b)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
