"""End-to-end tests of `dedupd scan`, `groups` and `compare` through the real command line."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

import helpers as H
from helpers import RunCli

from dedupd import faults

# --- a tree with one duplicate of each tier ---------------------------------------


def make_tree(root: Path) -> dict[str, Path]:
    """A small photo tree: an exact copy, a metadata-only copy, a resized re-encode, singletons, and noise."""
    p: dict[str, Path] = {}
    p["a"] = H.save(H.photo(50), root / "a.jpg")
    p["a_copy"] = root / "a_copy.jpg"
    p["a_copy"].write_bytes(p["a"].read_bytes())
    p["a_tagged"] = root / "a_tagged.jpg"
    p["a_tagged"].write_bytes(H.jpeg_with_comment(p["a"].read_bytes(), b"tagged"))
    p["b"] = H.save(H.photo(51), root / "b.png")
    p["b_small"] = H.save(H.photo(51).resize((192, 144), Image.Resampling.LANCZOS), root / "b_small.jpg", quality=80)
    p["c"] = H.save(H.photo(52), root / "c.png")
    p["d"] = H.save(H.photo(53), root / "sub" / "d.webp")
    # excluded by the default patterns: never seen
    (root / "a.jpg.part").write_bytes(p["a"].read_bytes())
    H.save(H.photo(50), root / "@eaDir" / "a.jpg")
    (root / "notes.txt").write_text("not an image name")
    return p


EXPECTED_GROUPS = [
    ("a.jpg", [("a_copy.jpg", "exact"), ("a_tagged.jpg", "pixel")]),
    ("b.png", [("b_small.jpg", "near")]),
]


def groups_json(run_cli: RunCli, **kw: object) -> list[dict[str, object]]:
    proc = run_cli("groups", "--format", "json", **kw)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert isinstance(data, list)
    return data


def shape(groups: list[dict[str, object]], root: Path) -> list[tuple[str, list[tuple[str, str]]]]:
    """Groups reduced to (original, [(duplicate, tier)]) with paths relative to ``root``."""
    rel = lambda p: str(Path(p).relative_to(root))  # noqa: E731
    return [(rel(g["original"]), [(rel(d["path"]), d["tier"]) for d in g["duplicates"]]) for g in groups]  # type: ignore[index, union-attr, arg-type]


def summary_numbers(stdout: str) -> dict[str, int]:
    """The counts in the first summary line: seen, fingerprinted, unchanged, renamed, removed, errors."""
    line = stdout.splitlines()[0]
    return {word: int(n) for n, word in re.findall(r"(\d+) (seen|fingerprinted|unchanged|renamed|removed|errors)", line.replace("files seen", "seen"))}


def assert_store_consistent(db: Path) -> None:
    """Every match points at two existing files, and groups are stars (an original is no one's duplicate)."""
    dangling = H.db_rows(
        db,
        "SELECT m.file_id, m.original_id FROM matches m LEFT JOIN files f ON f.id = m.file_id"
        " LEFT JOIN files o ON o.id = m.original_id WHERE f.id IS NULL OR o.id IS NULL",
    )
    assert dangling == []
    chained = H.db_rows(db, "SELECT file_id FROM matches WHERE original_id IN (SELECT file_id FROM matches)")
    assert chained == []
    errors_matched = H.db_rows(
        db, "SELECT m.file_id FROM matches m JOIN files f ON f.id IN (m.file_id, m.original_id) WHERE f.error IS NOT NULL"
    )
    assert errors_matched == []


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """A fresh photo tree under tmp_path/photos."""
    return make_tree(tmp_path / "photos")


# --- the first scan ---------------------------------------------------------------


def test_scan_finds_each_tier_and_groups_json_has_the_documented_shape(
    run_cli: RunCli, tree: dict[str, Path], tmp_path: Path, db_path: Path
) -> None:
    """A first scan finds one duplicate per tier; `groups` lists them exactly as JSON, CSV and a table."""
    root = tmp_path / "photos"
    proc = run_cli("scan", root, "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert summary_numbers(proc.stdout) == {"seen": 7, "fingerprinted": 7, "unchanged": 0, "renamed": 0, "removed": 0, "errors": 0}
    assert "duplicates found: exact: 1, near: 1, pixel: 1" in proc.stdout
    events = [e["event"] for e in H.log_events(proc.stderr)]
    assert events.count("duplicate_found") == 3 and "scan_finished" in events

    groups = groups_json(run_cli)
    assert shape(groups, root) == EXPECTED_GROUPS
    for group in groups:
        assert set(group) == {"original", "duplicates"}
        assert isinstance(group["original"], str) and Path(group["original"]).is_absolute()
        for dup in group["duplicates"]:  # type: ignore[union-attr]
            assert set(dup) == {"path", "tier", "distance", "similarity", "reason"}
            assert isinstance(dup["path"], str)
            assert dup["tier"] in {"exact", "pixel", "near"}
            assert isinstance(dup["distance"], int) and 0 <= dup["distance"] <= 64
            assert isinstance(dup["similarity"], float) and 0 <= dup["similarity"] <= 100
            assert isinstance(dup["reason"], str) and dup["reason"]
    exact, pixel = groups[0]["duplicates"]  # type: ignore[misc]
    assert (exact["distance"], exact["similarity"]) == (0, 100.0)
    assert "identical bytes" in exact["reason"] and "metadata" in pixel["reason"]
    assert "the same picture" in groups[1]["duplicates"][0]["reason"]  # type: ignore[index]
    assert H.db_rows(db_path, "SELECT COUNT(*) FROM files WHERE error IS NULL") == [(7,)]
    assert_store_consistent(db_path)

    # the same groups as CSV: a header, then one row per duplicate
    proc = run_cli("groups", "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.reader(io.StringIO(proc.stdout)))
    assert rows[0] == ["original", "path", "tier", "distance", "similarity", "reason"]
    assert rows[1:] == [
        [g["original"], d["path"], d["tier"], str(d["distance"]), str(d["similarity"]), d["reason"]]
        for g in groups
        for d in g["duplicates"]  # type: ignore[attr-defined]
    ]
    # and as a table: every path, then the totals
    proc = run_cli("groups")
    assert proc.returncode == 0, proc.stderr
    for g in groups:
        assert str(g["original"]) in proc.stdout
        for d in g["duplicates"]:  # type: ignore[attr-defined]
            assert d["path"] in proc.stdout
    assert proc.stdout.rstrip().endswith("2 groups, 3 duplicates")


def test_groups_without_a_store_is_a_store_error(run_cli: RunCli, tmp_path: Path) -> None:
    """`groups` on a store that does not exist exits 74 and creates nothing."""
    proc = run_cli("groups", db=tmp_path / "none" / "dedupd.db")
    assert proc.returncode == 74
    assert not (tmp_path / "none").exists()


def test_default_store_lives_under_xdg_state_home(tree: dict[str, Path], tmp_path: Path) -> None:
    """Without --db the store is $XDG_STATE_HOME/dedupd/dedupd.db; a single file argument is indexed on its own."""
    proc = H.run_dedupd("scan", tree["c"], db=None, env=H.cli_environment(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert summary_numbers(proc.stdout)["fingerprinted"] == 1
    assert (tmp_path / "xdg-state" / "dedupd" / "dedupd.db").is_file()


# --- re-scans: unchanged, renamed, deleted, changed ------------------------------------


def test_rescan_of_an_unchanged_tree_reads_nothing_and_writes_nothing(
    run_cli: RunCli, tree: dict[str, Path], tmp_path: Path, db_path: Path
) -> None:
    """A second scan of the same tree fingerprints nothing and leaves every row as it was."""
    root = tmp_path / "photos"
    assert run_cli("scan", root).returncode == 0
    files_before = H.db_rows(db_path, "SELECT * FROM files ORDER BY id")
    matches_before = H.db_rows(db_path, "SELECT * FROM matches ORDER BY file_id")
    groups_before = groups_json(run_cli)

    proc = run_cli("scan", root)
    assert proc.returncode == 0, proc.stderr
    assert summary_numbers(proc.stdout) == {"seen": 7, "fingerprinted": 0, "unchanged": 7, "renamed": 0, "removed": 0, "errors": 0}
    assert "duplicates found: none" in proc.stdout
    assert H.db_rows(db_path, "SELECT * FROM files ORDER BY id") == files_before
    assert H.db_rows(db_path, "SELECT * FROM matches ORDER BY file_id") == matches_before
    assert len(matches_before) == 3
    assert groups_json(run_cli) == groups_before


def test_rename_is_followed_without_rehashing(run_cli: RunCli, tree: dict[str, Path], tmp_path: Path, db_path: Path) -> None:
    """A renamed duplicate and a renamed original keep their records and their group, and nothing is read again."""
    root = tmp_path / "photos"
    assert run_cli("scan", root).returncode == 0
    key = lambda p: os.fsencode(p)  # noqa: E731
    before = dict(H.db_rows(db_path, "SELECT path, id FROM files"))
    stamps = dict(H.db_rows(db_path, "SELECT id, indexed_at FROM files"))

    moved_dup = root / "sub" / "b_moved.jpg"
    moved_orig = root / "z_original.jpg"
    os.rename(tree["b_small"], moved_dup)
    os.rename(tree["a"], moved_orig)
    proc = run_cli("scan", root)
    assert proc.returncode == 0, proc.stderr
    numbers = summary_numbers(proc.stdout)
    assert (numbers["renamed"], numbers["fingerprinted"], numbers["removed"]) == (2, 0, 0)

    after = dict(H.db_rows(db_path, "SELECT path, id FROM files"))
    assert after[key(moved_dup)] == before[key(tree["b_small"])]
    assert after[key(moved_orig)] == before[key(tree["a"])]
    assert key(tree["a"]) not in after
    assert dict(H.db_rows(db_path, "SELECT id, indexed_at FROM files")) == stamps
    assert shape(groups_json(run_cli), root) == [
        ("b.png", [("sub/b_moved.jpg", "near")]),
        ("z_original.jpg", [("a_copy.jpg", "exact"), ("a_tagged.jpg", "pixel")]),
    ]
    assert_store_consistent(db_path)


def test_deleted_original_hands_its_group_on(run_cli: RunCli, tree: dict[str, Path], tmp_path: Path, db_path: Path) -> None:
    """Deleting an original re-matches its duplicates to each other, or leaves a singleton; nothing dangles."""
    root = tmp_path / "photos"
    assert run_cli("scan", root).returncode == 0
    tree["a"].unlink()
    tree["b"].unlink()
    proc = run_cli("scan", root)
    assert proc.returncode == 0, proc.stderr
    assert summary_numbers(proc.stdout)["removed"] == 2
    # a_copy (seen before a_tagged) becomes the original of a_tagged; b_small is alone
    assert shape(groups_json(run_cli), root) == [("a_copy.jpg", [("a_tagged.jpg", "pixel")])]
    assert H.db_rows(db_path, "SELECT COUNT(*) FROM files") == [(5,)]
    assert_store_consistent(db_path)


def test_changed_file_is_fingerprinted_again(run_cli: RunCli, tree: dict[str, Path], tmp_path: Path, db_path: Path) -> None:
    """A rewritten file is fingerprinted again: a singleton rewritten as b joins b's group, a rewritten original releases its group."""
    root = tmp_path / "photos"
    assert run_cli("scan", root).returncode == 0
    (old_sha,) = H.db_rows(db_path, "SELECT sha256 FROM files WHERE path = ?", (os.fsencode(tree["c"]),))[0]
    H.save(H.photo(51).resize((256, 192)), tree["c"])  # same path, new content
    proc = run_cli("scan", root)
    assert proc.returncode == 0, proc.stderr
    numbers = summary_numbers(proc.stdout)
    assert (numbers["fingerprinted"], numbers["unchanged"]) == (1, 6)
    (new_sha,) = H.db_rows(db_path, "SELECT sha256 FROM files WHERE path = ?", (os.fsencode(tree["c"]),))[0]
    assert new_sha != old_sha
    assert shape(groups_json(run_cli), root)[1] == ("b.png", [("b_small.jpg", "near"), ("c.png", "near")])
    assert_store_consistent(db_path)

    # an original rewritten with another picture releases its duplicates, which regroup without it
    H.save(H.photo(60), tree["a"])
    proc = run_cli("scan", root)
    assert summary_numbers(proc.stdout)["fingerprinted"] == 1
    assert shape(groups_json(run_cli), root) == [
        ("a_copy.jpg", [("a_tagged.jpg", "pixel")]),
        ("b.png", [("b_small.jpg", "near"), ("c.png", "near")]),
    ]
    assert_store_consistent(db_path)


# --- determinism ---------------------------------------------------------------


def test_groups_are_deterministic_across_runs_and_worker_counts(run_cli: RunCli, tmp_path: Path) -> None:
    """Scanning one tree into fresh stores with 1 and 2 workers gives identical groups."""
    root = tmp_path / "photos"
    make_tree(root)
    # more near copies, so that the order of arrival matters
    for seed in (70, 71, 72):
        picture = H.photo(seed, (320, 240))
        H.save(picture, root / f"n{seed}" / "master.png")
        H.save(picture.resize((160, 120)), root / f"n{seed}" / "small.jpg", quality=70)
        H.save(picture.transpose(Image.Transpose.ROTATE_90), root / f"n{seed}" / "turned.webp")
        H.save(picture.resize((480, 360)), root / f"n{seed}" / "big.jpg")
    results = []
    for name, workers in (("one", "1"), ("two", "2")):
        proc = run_cli("scan", root, "--workers", workers, db=tmp_path / name / "dedupd.db")
        assert proc.returncode == 0, proc.stderr
        results.append(groups_json(run_cli, db=tmp_path / name / "dedupd.db"))
    assert results[0] == results[1]
    assert len(results[0]) == 5


# --- bad input in the tree ---------------------------------------------------------


def test_bad_files_are_counted_by_reason_and_the_scan_carries_on(
    run_cli: RunCli, tree: dict[str, Path], tmp_path: Path, db_path: Path
) -> None:
    """Empty, non-image, truncated and bomb files are skipped, counted by reason, recorded, and exit 3."""
    root = tmp_path / "photos"
    bad = root / "bad"
    bad.mkdir()
    (bad / "empty.jpg").touch()
    (bad / "text.jpg").write_text("hello\n" * 50)
    data = tree["a"].read_bytes()
    (bad / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (bad / "bomb.png").write_bytes(H.png_bomb(20_000, 20_000))
    (bad / "link.jpg").symlink_to(tree["a"])  # symlinks are never followed: not even seen
    os.mkfifo(bad / "fifo.jpg")  # nor is anything that is not a regular file
    (bad / "dir.jpg").mkdir()

    proc = run_cli("scan", root)
    assert proc.returncode == 3, proc.stderr
    numbers = summary_numbers(proc.stdout)
    assert numbers == {"seen": 11, "fingerprinted": 7, "unchanged": 0, "renamed": 0, "removed": 0, "errors": 4}
    assert "(corrupt: 1, empty: 1, not_an_image: 1, too_many_pixels: 1)" in proc.stdout.splitlines()[0]
    skipped = [e for e in H.log_events(proc.stderr) if e["event"] == "file_skipped"]
    assert sorted(Path(str(e["path"])).name for e in skipped) == ["bomb.png", "empty.jpg", "text.jpg", "truncated.jpg"]
    assert shape(groups_json(run_cli), root) == EXPECTED_GROUPS
    rows = dict(H.db_rows(db_path, "SELECT path, error FROM files WHERE error IS NOT NULL"))
    assert {Path(os.fsdecode(p)).name: e for p, e in rows.items()} == {
        "empty.jpg": "empty",
        "text.jpg": "not_an_image",
        "truncated.jpg": "corrupt",
        "bomb.png": "too_many_pixels",
    }
    assert_store_consistent(db_path)

    # the truncated copy is completed: the next scan reads it again, and it joins a's group
    (bad / "truncated.jpg").write_bytes(data)
    proc = run_cli("scan", root)
    assert summary_numbers(proc.stdout)["fingerprinted"] == 1
    assert ("bad/truncated.jpg", "exact") in shape(groups_json(run_cli), root)[0][1]
    assert_store_consistent(db_path)


def without_dac_override() -> tuple[str, ...]:
    """A command prefix under which mode bits apply even to root (skips the test if that is impossible)."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE as root")
    return (setpriv, "--bounding-set", "-dac_override,-dac_read_search")


def test_unreadable_file_is_counted_and_skipped(run_cli: RunCli, tree: dict[str, Path], tmp_path: Path) -> None:
    """A mode-000 file, scanned by a process without CAP_DAC_OVERRIDE, is counted as unreadable (exit 3)."""
    prefix = without_dac_override()
    tree["c"].chmod(0)
    proc = run_cli("scan", tmp_path / "photos", prefix=prefix)
    if proc.returncode != 3 and proc.stderr.startswith("setpriv"):
        pytest.skip(f"cannot drop capabilities here: {proc.stderr.strip()}")
    assert proc.returncode == 3, proc.stderr
    assert "errors (unreadable: 1)" in proc.stdout.splitlines()[0]
    assert summary_numbers(proc.stdout)["fingerprinted"] == 6


def test_unreadable_directory_does_not_forget_its_files(
    run_cli: RunCli, tree: dict[str, Path], tmp_path: Path, db_path: Path
) -> None:
    """A directory that cannot be listed keeps its files' records, and the scan reports an error (exit 3)."""
    root = tmp_path / "photos"
    assert run_cli("scan", root).returncode == 0
    prefix = without_dac_override()
    (root / "sub").chmod(0)
    try:
        proc = run_cli("scan", root, prefix=prefix)
    finally:
        (root / "sub").chmod(0o755)
    if proc.stderr.startswith("setpriv"):
        pytest.skip(f"cannot drop capabilities here: {proc.stderr.strip()}")
    assert H.db_rows(db_path, "SELECT COUNT(*) FROM files") == [(7,)]
    assert summary_numbers(proc.stdout)["removed"] == 0
    assert proc.returncode == 3


# --- keep policy and reference directories -------------------------------------------


def test_keep_policy_from_config_prefers_the_larger_file_seen_second(run_cli: RunCli, tmp_path: Path) -> None:
    """With `keep: [highest_resolution, first_seen]` the bigger copy is the original though it was indexed second."""
    root = tmp_path / "photos"
    picture = H.photo(80)
    H.save(picture.resize((192, 144)), root / "a_small.jpg")
    H.save(picture, root / "b_large.png")
    conf = tmp_path / "dedupd.yaml"
    conf.write_text("keep: [highest_resolution, first_seen]\n")
    assert run_cli("scan", root, "--config", conf).returncode == 0
    assert shape(groups_json(run_cli), root) == [("b_large.png", [("a_small.jpg", "near")])]
    # so does the default policy (the best copy first) ...
    assert run_cli("scan", root, db=tmp_path / "default.db").returncode == 0
    assert shape(groups_json(run_cli, db=tmp_path / "default.db"), root) == [("b_large.png", [("a_small.jpg", "near")])]
    # ... and `first_seen` alone decides the other way
    first = tmp_path / "first.yaml"
    first.write_text("keep: [first_seen]\n")
    assert run_cli("scan", root, "--config", first, db=tmp_path / "first.db").returncode == 0
    assert shape(groups_json(run_cli, db=tmp_path / "first.db"), root) == [("a_small.jpg", [("b_large.png", "near")])]


def test_reference_dir_holds_the_original_even_when_seen_second(run_cli: RunCli, tmp_path: Path) -> None:
    """A copy under reference_dirs is the original; the reference dir is indexed even when not on the command line."""
    inbox, reference = tmp_path / "inbox", tmp_path / "zz-archive"
    picture = H.photo(81)
    H.save(picture, inbox / "new.png")
    H.save(picture.resize((200, 150)), reference / "kept.jpg")
    conf = tmp_path / "dedupd.yaml"
    conf.write_text(f"reference_dirs: [{reference}]\n")
    proc = run_cli("scan", inbox, "--config", conf)
    assert proc.returncode == 0, proc.stderr
    assert summary_numbers(proc.stdout)["seen"] == 2
    groups = groups_json(run_cli)
    assert [(g["original"], [d["path"] for d in g["duplicates"]]) for g in groups] == [  # type: ignore[attr-defined]
        (str(reference / "kept.jpg"), [str(inbox / "new.png")])
    ]


def test_reference_dir_works_with_a_relative_config_path(run_cli: RunCli, tmp_path: Path) -> None:
    """`--config dedupd.yaml` (relative) with `reference_dirs: [zz-archive]` still protects the archive copy."""
    inbox, reference = tmp_path / "inbox", tmp_path / "zz-archive"
    picture = H.photo(81)
    H.save(picture, inbox / "new.png")
    H.save(picture.resize((200, 150)), reference / "kept.jpg")
    (tmp_path / "dedupd.yaml").write_text("reference_dirs: [zz-archive]\n")
    assert run_cli("scan", "inbox", "--config", "dedupd.yaml", cwd=tmp_path).returncode == 0
    assert groups_json(run_cli)[0]["original"] == str(reference / "kept.jpg")


# --- dry run -----------------------------------------------------------------


def test_dry_run_changes_no_file_and_no_store(run_cli: RunCli, tree: dict[str, Path], tmp_path: Path, db_path: Path) -> None:
    """`scan --dry-run` with quarantine actions reports duplicates but moves no file and records nothing."""
    root = tmp_path / "photos"
    quarantine = tmp_path / "quarantine"
    conf = tmp_path / "dedupd.yaml"
    conf.write_text(
        f"quarantine_dir: {quarantine}\nactions:\n  exact: quarantine\n  pixel: quarantine\n  near: symlink\n"
    )
    before = H.file_state(root)
    proc = run_cli("scan", root, "--config", conf, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "duplicates found: exact: 1, near: 1, pixel: 1" in proc.stdout
    assert H.file_state(root) == before
    assert not quarantine.exists() or not any(quarantine.rglob("*"))
    assert H.db_rows(db_path, "SELECT COUNT(*) FROM matches") == [(0,)]


# --- compare -------------------------------------------------------------------


def test_compare_exits_0_for_duplicates_and_1_for_different_pictures(run_cli: RunCli, tree: dict[str, Path]) -> None:
    """`compare A B` says DUPLICATE and exits 0 for a copy, NOT duplicates and exits 1 for another picture."""
    same = run_cli("compare", tree["b"], tree["b_small"])
    assert same.returncode == 0, same.stderr
    assert "DUPLICATE (near" in same.stdout
    different = run_cli("compare", tree["b"], tree["c"])
    assert different.returncode == 1, different.stderr
    assert "NOT duplicates: different pictures" in different.stdout


def test_compare_json(run_cli: RunCli, tree: dict[str, Path], tmp_path: Path) -> None:
    """`compare --format json` gives the verdict, tier, orientation, distances and both files."""
    turned = H.save(H.photo(51).transpose(Image.Transpose.ROTATE_90), tmp_path / "turned.png")
    proc = run_cli("compare", tree["b"], turned, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["duplicate"] is True and out["tier"] == "near"
    assert out["orientation"] == "rot270"
    assert set(out["distances"]) == {"phash", "dhash", "colour"}
    assert [f["path"] for f in out["files"]] == [str(tree["b"]), str(turned)]
    assert [(f["width"], f["height"], f["format"]) for f in out["files"]] == [(384, 288, "PNG"), (288, 384, "PNG")]

    proc = run_cli("compare", tree["a"], tree["a_tagged"], "--format", "json")
    out = json.loads(proc.stdout)
    assert (proc.returncode, out["tier"], out["similarity"]) == (0, "pixel", 100.0)

    proc = run_cli("compare", tree["a"], tree["d"], "--format", "json")
    out = json.loads(proc.stdout)
    assert (proc.returncode, out["duplicate"], out["tier"]) == (1, False, None)
    assert out["reason"].startswith("different pictures")


@pytest.mark.parametrize("which", ["missing", "not_an_image"])
def test_compare_with_an_unusable_file_exits_66(run_cli: RunCli, tree: dict[str, Path], tmp_path: Path, which: str) -> None:
    """`compare` with a missing or non-image file exits 66 with one error log line naming it."""
    bad = tmp_path / "nope.jpg"
    if which == "not_an_image":
        bad.write_text("plain text")
    proc = run_cli("compare", tree["a"], bad)
    assert proc.returncode == 66
    errors = [e for e in H.log_events(proc.stderr) if e["level"] == "error"]
    assert len(errors) == 1 and str(bad) in str(errors[0]["error"])
    assert "Traceback" not in proc.stderr


# --- exit codes for bad input ----------------------------------------------------


def test_scan_of_a_missing_path_exits_66(run_cli: RunCli, tmp_path: Path) -> None:
    """`scan` of a path that does not exist exits 66 with the path in the error line."""
    missing = tmp_path / "no-such-dir"
    proc = run_cli("scan", missing)
    assert proc.returncode == 66
    (event,) = [e for e in H.log_events(proc.stderr) if e["level"] == "error"]
    assert event["exit_code"] == 66 and str(missing) in str(event["error"])


@pytest.mark.parametrize("workers", [1, 2])
def test_a_bug_on_one_file_is_logged_and_skipped_and_the_scan_finishes_with_exit_70(
    tree: dict[str, Path], run_cli: RunCli, tmp_path: Path, db_path: Path, cli_env: dict[str, str], workers: int
) -> None:
    """An unexpected exception on one file (in a worker, or in-process with --workers 1) is
    logged with its traceback, skipped as internal_error and counted against the file in the
    store's crash table (not yet recorded as skipped: see test_daemon_crashes); the other
    files are grouped; exit 70."""
    root = tmp_path / "photos"
    poison = H.save(H.photo(54), root / "poison.jpg")  # sorted among the good files: in one batch with them
    env = {**cli_env, faults.ENV: "worker.fingerprint:bug:poison*"}
    proc = H.run_dedupd("scan", "--workers", str(workers), root, db=db_path, env=env, cwd=tmp_path)
    assert proc.returncode == 70, proc.stderr
    numbers = summary_numbers(proc.stdout)
    assert numbers == {"seen": 8, "fingerprinted": 7, "unchanged": 0, "renamed": 0, "removed": 0, "errors": 1}
    assert "(internal_error: 1)" in proc.stdout.splitlines()[0]
    assert "1 file skipped because of an internal error" in proc.stdout
    events = H.log_events(proc.stderr)
    bugs = [e for e in events if e["event"] == "worker_error"]
    assert [Path(str(e["path"])).name for e in bugs] == ["poison.jpg"]
    assert "Traceback" in str(bugs[0]["exception"]) and "TypeError: injected bug" in str(bugs[0]["exception"])
    assert "please report it" in str(bugs[0]["note"])
    assert [e for e in events if e["event"] == "internal_error"] == []  # not the last-resort handler
    assert H.db_rows(db_path, "SELECT path FROM files WHERE error IS NOT NULL") == []
    counted = H.db_rows(db_path, "SELECT path, count, cause FROM crashes")
    assert [(Path(os.fsdecode(p)).name, n) for p, n, _ in counted] == [("poison.jpg", 1)]  # type: ignore[arg-type]
    assert "TypeError: injected bug at worker.fingerprint" in str(counted[0][2])
    assert shape(groups_json(run_cli), root) == EXPECTED_GROUPS
    assert_store_consistent(db_path)
    assert poison.exists()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("frobnicate: 1\n", "'frobnicate'"),
        ("match:\n  near_distance: 40\n", "'match.near_distance'"),
        ("match:\n  near_distance: '30%'\n", "'match.near_distance'"),
        ("match:\n  colour_distance: 85%\n", "'match.colour_distance'"),
        ("keep: [biggest]\n", "'keep'"),
        ("match: {near_distance: 5\n", "not valid YAML"),
        ("- just\n- a list\n", "mapping"),
    ],
    ids=["unknown-key", "out-of-range", "percent-out-of-range", "percent-for-a-float", "bad-enum", "bad-yaml", "non-mapping"],
)
def test_config_errors_exit_78_naming_the_key(run_cli: RunCli, tmp_path: Path, text: str, needle: str) -> None:
    """A bad config file stops `scan` with exit 78, no output, and one log line naming the file and the key."""
    conf = tmp_path / "bad.yaml"
    conf.write_text(text)
    proc = run_cli("scan", tmp_path, "--config", conf)
    assert proc.returncode == 78, (proc.stdout, proc.stderr)
    (event,) = [e for e in H.log_events(proc.stderr) if e["level"] == "error"]
    assert event["exit_code"] == 78 and event["event"] == "dedupd_error"
    assert str(conf) in str(event["error"]) and needle in str(event["error"])
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_compare_with_a_bad_config_exits_78(run_cli: RunCli, tree: dict[str, Path], tmp_path: Path) -> None:
    """`compare` reads the config too, and refuses a bad one with exit 78 naming the key."""
    conf = tmp_path / "bad.yaml"
    conf.write_text("match:\n  near_distanse: 5\n")
    proc = run_cli("compare", tree["a"], tree["a_copy"], "--config", conf)
    assert proc.returncode == 78
    assert "'match.near_distanse'" in proc.stderr


def test_missing_config_file_exits_78(run_cli: RunCli, tmp_path: Path) -> None:
    """A --config path with no file behind it is a configuration error (78)."""
    assert run_cli("scan", tmp_path, "--config", tmp_path / "nope.yaml").returncode == 78


def test_groups_are_stars(run_cli: RunCli, tmp_path: Path, db_path: Path) -> None:
    """An exact copy of a duplicate joins the group's original, never the duplicate it copies."""
    root = tmp_path / "photos"
    picture = H.photo(92)
    H.save(picture, root / "a.png")
    small = H.save(picture.resize((192, 144)), root / "b_small.jpg", quality=80)
    (root / "c_copy_of_small.jpg").write_bytes(small.read_bytes())
    assert run_cli("scan", root).returncode == 0
    assert shape(groups_json(run_cli), root) == [("a.png", [("b_small.jpg", "near"), ("c_copy_of_small.jpg", "near")])]
    assert_store_consistent(db_path)


def test_second_writer_is_refused_with_exit_75(run_cli: RunCli, tree: dict[str, Path], tmp_path: Path, db_path: Path) -> None:
    """While another process holds the store's writer lock, `scan` exits 75 (try again) and changes nothing."""
    import fcntl

    assert run_cli("scan", tree["c"]).returncode == 0
    lock = db_path.with_name(db_path.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = run_cli("scan", tmp_path / "photos")
    finally:
        os.close(fd)
    assert proc.returncode == 75, proc.stderr
    assert H.db_rows(db_path, "SELECT COUNT(*) FROM files") == [(1,)]


def test_control_characters_in_names_are_escaped_in_output(run_cli: RunCli, tmp_path: Path) -> None:
    """A file name with a newline and an escape cannot forge a line in the groups table or the log."""
    root = tmp_path / "photos"
    a = H.save(H.photo(93), root / "a.png")
    evil = root / "evil\nFAKE\x1b[31m.png"
    evil.write_bytes(a.read_bytes())
    proc = run_cli("scan", root)
    assert proc.returncode == 0, proc.stderr
    for line in proc.stderr.splitlines():
        json.loads(line)  # every log line is still one JSON object
    table = run_cli("groups").stdout
    assert "\x1b" not in table
    assert not any(line.startswith("FAKE") for line in table.splitlines())
    assert "evil\\u000aFAKE\\u001b[31m.png" in table
    assert json.loads(run_cli("groups", "--format", "json").stdout)[0]["duplicates"][0]["path"] == str(evil)


# --- known bugs, found by these tests --------------------------------------------


def test_rename_over_a_grouped_file(run_cli: RunCli, tree: dict[str, Path], tmp_path: Path, db_path: Path) -> None:
    """`mv c.png a_copy.jpg` (replacing an indexed duplicate) is followed like any rename."""
    root = tmp_path / "photos"
    assert run_cli("scan", root).returncode == 0
    os.replace(tree["c"], tree["a_copy"])
    proc = run_cli("scan", root)
    assert proc.returncode == 0, proc.stderr
    assert shape(groups_json(run_cli), root) == [
        ("a.jpg", [("a_tagged.jpg", "pixel")]),
        ("b.png", [("b_small.jpg", "near")]),
    ]
    assert_store_consistent(db_path)


def _turned_tree(root: Path) -> Image.Image:
    picture = H.photo(90, (320, 240))
    H.save(picture, root / "a.png")
    H.save(picture.transpose(Image.Transpose.ROTATE_90), root / "b_rot90.png")
    H.save(picture.transpose(Image.Transpose.ROTATE_180), root / "c_rot180.png")
    return picture


def test_turned_copies_stay_grouped_when_their_original_is_deleted(run_cli: RunCli, tmp_path: Path, db_path: Path) -> None:
    """Deleting the original of two turned copies leaves those copies grouped with each other."""
    root = tmp_path / "photos"
    _turned_tree(root)
    assert run_cli("scan", root).returncode == 0
    assert len(groups_json(run_cli)[0]["duplicates"]) == 2  # type: ignore[arg-type]
    (root / "a.png").unlink()
    assert run_cli("scan", root).returncode == 0
    # same resolution: the default keep order takes the larger file
    big, small = sorted(["b_rot90.png", "c_rot180.png"], key=lambda n: -(root / n).stat().st_size)
    assert shape(groups_json(run_cli), root) == [(big, [(small, "near")])]


def test_turned_copy_follows_its_group_to_a_better_original(run_cli: RunCli, tmp_path: Path) -> None:
    """When a larger copy arrives and becomes the original, a rotated member stays in the group."""
    root = tmp_path / "photos"
    picture = _turned_tree(root)
    (root / "c_rot180.png").unlink()
    conf = tmp_path / "dedupd.yaml"
    conf.write_text("keep: [highest_resolution, first_seen]\n")
    assert run_cli("scan", root, "--config", conf).returncode == 0
    H.save(picture.resize((640, 480)), root / "d_big.png")
    assert run_cli("scan", root, "--config", conf).returncode == 0
    assert shape(groups_json(run_cli), root) == [("d_big.png", [("a.png", "near"), ("b_rot90.png", "near")])]


def test_walk_skips_symlinks_and_ignores_case(run_cli: RunCli, tmp_path: Path) -> None:
    """Symlinks (to a directory or a file) are not followed, and IMG.JPG counts as much as img.jpg."""
    root = tmp_path / "photos"
    H.save(H.photo(91), root / "real" / "x.png")
    (root / "loop").symlink_to(root)
    (root / "x-link.png").symlink_to(root / "real" / "x.png")
    H.save(H.photo(94), root / "IMG.JPG")  # include patterns ignore case
    H.save(H.photo(95), root / "photo.Png")
    proc = run_cli("scan", root)
    assert proc.returncode == 0, proc.stderr
    assert summary_numbers(proc.stdout)["seen"] == 3
    assert groups_json(run_cli) == []


def test_cli_help_lists_exit_codes(run_cli: RunCli) -> None:
    """`dedupd --help` documents the exit codes the tests above rely on."""
    proc = run_cli("--help")
    assert proc.returncode == 0
    for line in ("3   scan finished", "66  a path given does not exist", "78  invalid configuration"):
        assert line in proc.stdout
