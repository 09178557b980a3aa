"""Groups of copies: which file is the original of which, and the index that finds them.

Every change to matches and to the near-duplicate index goes through
:class:`Grouping`, which keeps these invariants after each operation
(``tests/test_grouping_state.py`` checks them after every step of random
sequences):

1. **Stars.** A group is one original (its root) and its duplicates; an
   original is never itself a duplicate, so there are no chains.
2. **Twins together.** Files with the same bytes (SHA-256) or the same
   picture data (pixel digest) are in one group, unless a person said a pair
   among them and their originals is not to be deduplicated (``decisions``).
3. **The index is the store.** The index holds an entry exactly for each
   stored, fingerprinted file.
4. **Every match is reported.** Each operation returns a
   :class:`~dedupd.models.Duplicate` for every match it made or moved,
   re-matches included, so that the Actor sees all of them.

A new file joins the group whose original it is closest to (strongest tier,
then most similar, then senior).  When no candidate original is near it,
it may still join a group through one member that is near both it and the
original, with what both show compared with that member (see
:meth:`Grouping._through_member`): without that, a copy near its source but
not near a larger copy that became the original (by ``highest_resolution``)
would found a group of its own, and one picture would end in several groups.
The match points at the original all the same, so groups stay stars.

Seniority (``Record.seq``) belongs to the path: the store keeps it when a
path gets a new version, and a rename keeps it, so touching, re-tagging or a
remount never changes which file is the original.

Callers hold ``store.atomic()`` around an operation when it is part of a
larger write; each operation also opens its own (nested) transaction.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Iterable
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

import structlog
from PIL import Image

from dedupd.config import Config, MatchSettings
from dedupd.errors import display_path
from dedupd.hashing import VARIANT_TRANSPOSES
from dedupd.index import HashIndex
from dedupd.matching import INVERSE, UNREAD, Decision, choose_original, closeness, compare, verdict_for
from dedupd.models import Distances, Duplicate, Match, Orientation, Record, Tier, Verdict
from dedupd.backend import StoreBackend
from dedupd.exchange import Exchange

log = structlog.get_logger()

_TIER_RANK = {Tier.EXACT: 0, Tier.PIXEL: 1, Tier.NEAR: 2, Tier.SIMILAR: 3}

#: placements in one operation at most; far above what any real group needs,
#: it only stops a bug from looping forever
MAX_PLACEMENTS = 100_000

#: the rule named when a person's choice decided which file is the original
CHOSEN_RULE = "chosen by a person in dedupd review"

#: candidate groups whose original is verified on pixels for one new file at
#: most, the closest by their hashes first.  Each costs a read of the original
#: and a verification (tens of milliseconds); a burst of look-alikes (video
#: frames, a photo series) can propose hundreds, and a copy is almost always
#: among the closest few.  Reaching it is logged (``candidates_capped``).
MAX_GROUPS_VERIFIED = 32

#: members of candidate groups verified for one new file at most, when no
#: candidate group's original is near it (see :meth:`Grouping._through_member`),
#: the closest by their hashes first.  Each costs one verification, and one
#: more for the member that passes; most files never get here.
MAX_MEMBERS_VERIFIED = 8

#: files placed again on shared pixels in one call of :meth:`Grouping.take_answers` at most
#: (each a verification: a pass of the daemon's loop stays short)
ANSWERS_AT_ONCE = 16

#: seconds between two reads of the other hosts' reference_dirs (they change
#: when a host reloads its config)
REFERENCES_EVERY = 5.0

#: files still to place: (file id, None) to find its group, (file id, root id)
#: to bring it into that group (a twin of one of its files)
Todo = collections.deque[tuple[int, int | None]]


def inverse(match: Match) -> Match:
    """The same match seen from the other file."""
    return Match(
        match.tier,
        match.distances,
        match.similarity,
        INVERSE.get(match.orientation, match.orientation),
        match.reason,
    )


class Grouping:
    """Owns the ``matches`` of the store and the in-memory near-duplicate index."""

    def __init__(self, store: StoreBackend, config: Config, index: HashIndex | None = None) -> None:
        self.store = store
        self.config = config
        self._index = index
        self._building: threading.Thread | None = None
        self._built: list[HashIndex] = []
        #: where the feed of other hosts' writes stood when the index was read
        #: (a store several hosts share; see :meth:`catch_up`)
        self._mark = 0
        #: the pixels of other hosts' files, asked of them (a store several hosts share)
        self.exchange = Exchange(store)
        #: when the other hosts' reference_dirs were read, and what they were
        self._references: tuple[float, dict[str, tuple[Path, ...]]] | None = None

    def build_index_in_background(self) -> None:
        """Start building the index from a read-only snapshot of the store, beside
        whatever the caller does next (a daemon's start, a scan's walk), which
        mostly needs no index: at a million files the build takes seconds.

        Safe because every change to an indexed file after the snapshot is
        followed by an index call (:meth:`changed`, :meth:`forget`...), and the
        first index call waits for the build to finish.
        """
        if self._index is not None or self._building is not None:
            return
        self._mark = self.store.feed_mark()  # before the snapshot: what comes during it comes again
        reader = self.store.reader()

        def build() -> None:
            started = time.monotonic()
            try:
                self._built.append(HashIndex.load(reader.hash_batches()))
                log.info("index_built", files=len(self._built[0]), seconds=round(time.monotonic() - started, 2))
            finally:
                reader.close()

        self._building = threading.Thread(target=build, name="dedupd-index-build", daemon=True)
        self._building.start()

    @property
    def index(self) -> HashIndex:
        """The index: waits for a background build, or builds it on first use."""
        if self._index is None:
            if self._building is not None:
                self._building.join()
                self._building = None
                if not self._built:  # the build failed: its error is in the log; build here
                    log.error("index_build_failed", note="building it again in the foreground")
            if not self._built:
                self._mark = self.store.feed_mark()
            self._index = self._built.pop() if self._built else HashIndex.load(self.store.hash_batches())
        return self._index

    def catch_up(self, *, wait: bool = True) -> list[Duplicate]:
        """Take in what other hosts sharing the store wrote since the last look.

        Their files go into (or out of) this host's index, so that its lookups
        find them; matches they made or moved on this host's files come back
        as Duplicates, whose actions are this host's.  Called at the start of
        every placement, inside the transaction and so under the store's
        write lock: no other host writes in between, so the index is the store
        when a file is placed, and two hosts placing copies of one picture at
        once take turns and see each other's (one group, one original).  The
        daemon also calls it between files, so that the index learns of
        other hosts' files within a pass of its loop (``wait=False``: not while
        the index is still being read).  One range of the feed when nothing
        changed; nothing at all in a store of one host."""
        if self._index is None and (self._building is None or not wait):
            return []  # not read yet (read whole, after the mark, when first used), or not waited for
        self.index  # noqa: B018 - waits for the build, which took the mark
        assert self._index is not None
        found = self.store.changes_after(self._mark)
        if found is None:
            log.warning("index_reread", reason="other hosts' writes since this index was read are no longer kept")
            self._mark = self.store.feed_mark()
            self._index = HashIndex.load(self.store.hash_batches())
            return self._report(dict.fromkeys(self.store.unacted_matches(), "grouped by another host"))
        self._mark, changes = found
        if not changes:
            return []
        here = self.store.host
        theirs = {file_id for file_id, host, _ in changes if host != here}
        records = self.store.records(theirs)
        for file_id in theirs:
            rec = records.get(file_id)
            if rec is None or rec.fingerprint is None:
                self._index.remove(file_id)
            else:
                self._index.add_fingerprint(file_id, rec.fingerprint)
        ours = {file_id for file_id, host, kind in changes if host == here and kind == "match"}
        return self._report(dict.fromkeys(sorted(ours), "grouped by another host"))

    def take_answers(self, at_most: int = ANSWERS_AT_ONCE) -> list[Duplicate]:
        """Place again the files that waited for pixels of another host's files,
        now that it shared them: verified on pixels this time (see
        :mod:`dedupd.exchange`), at most ``at_most`` files (the rest at the next
        call).  What their first placement found similar is judged again.

        The answers are taken off the list in a transaction of their own first:
        should placing fail, the next call does not meet the same answers again
        (the files stay as they were: similar, never acted on)."""
        if self._index is None and self._building is not None:
            return []  # the index is still being built: not waited for here
        if not self.store.answered():
            return []  # a read, no write lock taken: most passes of the daemon's loop
        with self.store.atomic():
            answers = self.store.answered()
            waiting = list(dict.fromkeys(waiting_id for _, _, waiting_id in answers))[:at_most]
            self.store.drop_answered([row for row in answers if row[2] in waiting])
        with self.store.atomic():
            found = self.store.records(waiting)
            ids = [
                file_id for file_id in waiting
                if file_id in found and found[file_id].fingerprint is not None and found[file_id].original_id is None
            ]  # fmt: skip
            for file_id in ids:
                self.store.clear_similar(file_id, placed_only=True)
            log.info("placed_again_on_shared_pixels", count=len(ids))
            return self._settle(ids)

    def regroup(self, ids: list[int]) -> list[Duplicate]:
        """Place these originals again among every file of the store: files copied
        into a store other hosts share (``dedupd migrate``) were grouped among
        their own host's only.  Each joins a group of another host's file it is
        a copy of, its own duplicates with it (each verified again)."""
        with self.store.atomic():
            return self._settle(ids)

    # --- operations ---------------------------------------------------------

    def changed(self, record: Record, previous: Record | None) -> list[Duplicate]:
        """``record`` was just stored (fingerprinted) at a path that held ``previous`` (None: new)."""
        fp = record.fingerprint
        assert fp is not None
        with self.store.atomic():
            self.index.add_fingerprint(record.id, fp)
            old = previous.fingerprint if previous is not None else None
            if previous is not None and previous.id == record.id and old is not None and old.sha256 == fp.sha256:
                # the same bytes (touched, copied back, seen on a remounted
                # device): its group holds; a duplicate is reported again so
                # that an action skipped on the old version is retried
                return self._report({record.id: "unchanged content: kept in its group"})
            queue = self._detach(previous.id) if previous is not None else []
            return self._settle([record.id, *queue])

    def unreadable(self, file_id: int) -> list[Duplicate]:
        """A stored file cannot be fingerprinted any more: out of its group and the index."""
        with self.store.atomic():
            self.index.remove(file_id)
            return self._settle(self._detach(file_id))

    def forget(self, file_id: int) -> list[Duplicate]:
        """A file is gone: drop its record; its duplicates look for a new original."""
        with self.store.atomic():
            self.index.remove(file_id)
            orphans = self._detach(file_id)
            self.store.delete_file(file_id)
            return self._settle(orphans)

    def renamed(self, file_id: int, new_path: Path) -> list[Duplicate]:
        """A stored file was seen at ``new_path``; whatever was stored there is gone."""
        out: list[Duplicate] = []
        with self.store.atomic():
            replaced = self.store.record_for_path(new_path)
            if replaced is not None and replaced.id != file_id:
                out += self.forget(replaced.id)
            self.store.move_file(file_id, new_path)
            # path rules (reference directories) may now prefer another member
            out += self._recheck_root(file_id)
            # files placed while this one was missing from its old name were judged on
            # hashes alone (similar at most): placed again, now that it can be read
            stale = [other for other, reason in self.store.similar_against(file_id) if UNREAD in reason]
            found = self.store.records(stale)
            stale = [i for i in stale if i in found and found[i].original_id is None and found[i].fingerprint]
            for other in stale:
                self.store.clear_similar(other, placed_only=True)
            if stale:
                out += self._settle(stale)
        return out

    def rerooted(self, file_id: int) -> list[Duplicate]:
        """A person chose ``file_id`` as its group's original (its content is
        already recorded as chosen): it becomes the root, the former original
        and the other members its duplicates, each verified against it (one
        that does not match it leaves and is placed again)."""
        with self.store.atomic():
            known = self.store.match_of(file_id)
            if known is None:
                return []  # already an original (or gone)
            root = self.store.record(known[0])
            self.store.clear_match(file_id)
            best = self.store.record(file_id)  # read again: an original now
            assert root is not None and best is not None
            changed: dict[int, str] = {}
            todo: Todo = collections.deque()
            self._merge(root, best, inverse(known[1]), False, CHOSEN_RULE, changed, todo)
            out = self._report(changed)
            return out + self._settle([i for i, _ in todo], regrouped=list(changed))

    def removed(self, file_ids: list[int]) -> list[Duplicate]:
        """Records deleted by someone else (an action moved the file away): keep the index in step."""
        out: list[Duplicate] = []
        with self.store.atomic():
            for file_id in file_ids:
                if self.store.record(file_id) is None:
                    self.index.remove(file_id)
                    # a duplicate is never an original, so this is normally empty
                    out += self._settle(self.store.duplicates_of(file_id))
        return out

    def ignored(self, sha_a: str, path_a: Path, sha_b: str, path_b: Path) -> list[Duplicate]:
        """A person said these two files (content at path) are not duplicates: undo their pairing."""
        with self.store.atomic():
            freed = self.store.matched_between(sha_a, sha_b, path_a=path_a, path_b=path_b)
            for file_id in freed:
                self.store.clear_match(file_id)
            return self._settle(freed)

    def unpaired(self, file_id: int, other_id: int) -> list[Duplicate]:
        """A person said these two files (by id: one may be another host's) are
        not duplicates: undo their pairing, whichever is the duplicate."""
        with self.store.atomic():
            freed = []
            for a, b in ((file_id, other_id), (other_id, file_id)):
                known = self.store.match_of(a)
                if known is not None and known[0] == b:
                    self.store.clear_match(a)
                    freed.append(a)
            return self._settle(freed)

    def unignored(self, paths: list[Path]) -> list[Duplicate]:
        """A decision about these files was removed: each one that is an original
        looks for a group again (a duplicate already has one)."""
        with self.store.atomic():
            ids = [r.id for p in paths if (r := self.store.record_for_path(p)) is not None and r.original_id is None]
            return self._settle(ids)

    # --- placing ------------------------------------------------------------

    def _detach(self, file_id: int) -> list[int]:
        """Take a file out of its group; returns its former duplicates, now ungrouped.

        Its similar pairs go too: they were verdicts on a version that is gone."""
        self.store.clear_match(file_id)
        self.store.clear_similar(file_id)
        orphans = self.store.duplicates_of(file_id)
        for orphan in orphans:
            self.store.clear_match(orphan)
        return orphans

    def _settle(self, ids: list[int], regrouped: Iterable[int] = ()) -> list[Duplicate]:
        """Place each file (and whatever a placement splits off) in its group.

        A file that joins a group pulls its twins (same bytes or picture
        data) into that group after it, so that a twin class never ends up
        spread over groups, whatever order its files are placed in.
        ``regrouped``: files whose group the caller has already changed (a new
        original chosen), whose twins are pulled the same way.
        """
        theirs = self.catch_up()
        try:
            return theirs + self._place_all(ids, regrouped)
        finally:
            self.exchange.waiting = None

    def _place_all(self, ids: list[int], regrouped: Iterable[int]) -> list[Duplicate]:
        changed: dict[int, str] = {}
        todo: collections.deque[tuple[int, int | None]] = collections.deque((i, None) for i in ids)
        for file_id in regrouped:
            self._pull_twins_of(file_id, todo)
        placements = 0
        # files placed that joined nothing, and the placement count then: a file
        # kept out of its twins' group (a person said it is not a copy of that
        # group's original) may find a group of them it can join formed by a
        # later placement of this same settle, and is placed again then
        alone: dict[int, int] = {}
        tried_again: collections.Counter[int] = collections.Counter()
        while todo:
            while todo:
                placements += 1
                if placements > MAX_PLACEMENTS:  # pragma: no cover - a bug guard
                    log.error("grouping_gave_up", left=len(todo))
                    todo.clear()
                    break
                file_id, target = todo.popleft()
                before = len(changed)
                self.exchange.waiting = file_id  # what another host's pixels are asked for
                if target is None:
                    self._place(file_id, changed, todo)
                    if len(changed) == before:
                        alone[file_id] = placements
                else:
                    self._pull(file_id, target, changed, todo)
                for moved in list(changed)[before:]:
                    self._pull_twins_of(moved, todo)
            for file_id, when in list(alone.items()):
                if when < placements and tried_again[file_id] < 3 and self._twins_elsewhere(file_id):
                    tried_again[file_id] += 1
                    todo.append((file_id, None))
            alone.clear()
        return self._report(changed)

    def _twins_elsewhere(self, file_id: int) -> bool:
        """Is ``file_id`` an original of nothing that has a group of twins it may join?"""
        rec = self.store.record(file_id)
        if rec is None or rec.fingerprint is None or rec.original_id is not None or self.store.duplicates_of(file_id):
            return False
        return self._twin_root(rec, {file_id}) is not None

    def _place(self, file_id: int, changed: dict[int, str], todo: Todo) -> None:
        rec = self.store.record(file_id)
        if rec is None or rec.fingerprint is None or rec.original_id is not None:
            return  # gone, unreadable, or already in a group
        exclude = {file_id, *self.store.duplicates_of(file_id)}
        twin = self._twin_root(rec, exclude)
        others: list[Record] = []
        chosen = (*twin, None) if twin is not None else self._best_root(rec, exclude, others)
        if chosen is None:
            return  # an original of its own
        root, match, reverse = chosen
        self._join(rec, root, match, changed, todo, reverse)
        # Other originals this file is near head groups of the same picture
        # that could not be joined before it came (a crop and a padded copy:
        # neither frame inside the other).  Each is placed again now that a
        # group holds this file: it joins when it is near that group's
        # original, or through a member (this file among them), as any file
        # does; otherwise it stays apart (the group stays a star).
        for other in others:
            log.info("group_placed_again", path=other.path, near=rec.path)
            todo.append((other.id, None))

    def _join(
        self, rec: Record, root: Record, match: Match, changed: dict[int, str], todo: Todo, reverse: Match | None = None
    ) -> None:
        """``rec`` (a root) and ``root`` are copies (``match``: rec seen from root): one group.

        ``reverse``: the match seen from ``root``, when it is not just the
        inverse of ``match`` (a match through a member names its ends)."""
        decision, rule = self._choose(rec, root)
        if decision is Decision.KEEP_NEW:
            self._merge(root, rec, reverse or inverse(match), False, rule, changed, todo)
        else:
            self._merge(rec, root, match, decision is Decision.TIE, rule, changed, todo)

    def _pull_twins_of(self, file_id: int, todo: Todo) -> None:
        rec = self.store.record(file_id)
        if rec is None or rec.fingerprint is None:
            return
        home = rec.original_id or rec.id
        root = rec if home == rec.id else self.store.record(home)
        if root is None or root.fingerprint is None:
            return
        for twin in self._twins(rec, {file_id}).values():
            # the pair a pull makes is (twin, the group's original): a decision
            # against ``rec`` alone (another member) does not keep the twin out
            if (twin.original_id or twin.id) != home and not self._is_ignored(twin, root):
                todo.append((twin.id, home))

    def _pull(self, file_id: int, target: int, changed: dict[int, str], todo: Todo) -> None:
        """Bring ``file_id`` (and its group, if it is an original) into the group of ``target``."""
        rec = self.store.record(file_id)
        root = self.store.record(target)
        if rec is None or rec.fingerprint is None or root is None or root.fingerprint is None:
            return
        if root.original_id is not None:  # the target group got a new original meanwhile
            root = self.store.record(root.original_id)
            assert root is not None and root.fingerprint is not None
        if (rec.original_id or rec.id) == root.id or self._is_ignored(rec, root):
            return
        match = _grouping(self._verdict(rec, root).match)
        if match is None:
            match = self._twin_match(rec, root)
            if match is None:
                return  # cannot be justified: left where it is
        if rec.original_id is not None:
            self.store.clear_match(rec.id)  # leaves its group for its twins' group
            rec = self.store.record(rec.id)
            assert rec is not None
        self._join(rec, root, match, changed, todo)

    def _twin_match(self, rec: Record, root: Record) -> Match | None:
        """The match of a twin of ``rec`` in ``root``'s group: what held for the twin holds for ``rec``."""
        for twin in self._twins(rec, {rec.id}).values():
            if twin.original_id == root.id:
                known = self.store.match_of(twin.id)
                if known is not None:
                    return known[1]
        return None

    def _twins(self, rec: Record, exclude: set[int]) -> dict[int, Record]:
        fp = rec.fingerprint
        assert fp is not None
        twins = set(self.store.ids_with("sha256", fp.sha256))
        twins.update(self.store.ids_with("pixel_digest", fp.pixel_digest))
        return self.store.records(twins - exclude)

    def _twin_root(self, rec: Record, exclude: set[int]) -> tuple[Record, Match] | None:
        """The group of a file with the same bytes or picture data, if any: twins
        always share a group, whichever arrived first and whoever its original is."""
        fp = rec.fingerprint
        assert fp is not None
        found = self._twins(rec, exclude)
        if not found:
            return None

        def preference(twin: Record) -> tuple[bool, bool, int, int]:
            # a twin already in a group first, then exact twins, then the senior one
            grouped = twin.original_id is not None or bool(self.store.duplicates_of(twin.id))
            return (not grouped, _sha(twin) != fp.sha256, twin.seq, twin.id)

        for twin in sorted(found.values(), key=preference):
            root_id = twin.original_id or twin.id
            if root_id in exclude:
                continue
            root = twin if root_id == twin.id else self.store.record(root_id)
            if root is None or root.fingerprint is None:
                continue
            if self._is_ignored(rec, root) or self._is_ignored(rec, twin):
                continue
            match = _grouping(self._verdict(rec, root).match)
            if match is not None:
                return root, match
            known = self.store.match_of(twin.id)
            if known is not None:
                # the same picture data as a file that matched this original:
                # what held for the twin holds for this file
                return root, known[1]
        return None

    def _best_root(
        self, rec: Record, exclude: set[int], others: list[Record] | None = None
    ) -> tuple[Record, Match, Match | None] | None:
        """The original this file is closest to: strongest tier, then most similar, then senior.

        When no candidate original is near it, a member of a candidate group
        may be (:meth:`_through_member`).  Returns the original, the match
        seen from it, and the match seen from the original when that is not
        its inverse.  ``others`` receives the other originals it is near
        (actionable verdicts), best first."""
        fp = rec.fingerprint
        assert fp is not None
        candidates = self.index.candidates(fp, self.config.match) - exclude
        if not candidates:
            return None
        found = self.store.records(candidates)
        roots = {r.original_id or r.id for r in found.values()} - exclude
        best: tuple[tuple[int, float, int, int], Record, Match] | None = None
        alike: list[tuple[Record, Match]] = []
        settings = self.config.match
        ordered = sorted(
            ((closeness(fp, r.fingerprint, settings), r.seq, r.id, r)
             for r in self.store.records(roots).values() if r.fingerprint is not None),
            key=lambda entry: entry[:3],
        )  # fmt: skip
        verified = 0
        not_near: dict[int, Record] = {}
        near: list[tuple[tuple[int, float, int, int], Record]] = []
        for n, (_, _, _, root) in enumerate(ordered):
            if self._is_ignored(rec, root):
                log.info("pair_ignored", path=rec.path, original=root.path)
                continue
            if verified == MAX_GROUPS_VERIFIED:
                log.warning("candidates_capped", path=rec.path, groups=len(ordered),
                            verified=verified, skipped=len(ordered) - n)
                break
            verified += 1
            verdict = self._verdict(rec, root)
            if verdict.match is None or verdict.framing_only:
                # an original the pixels saw differ from this file (in a region, in colour, in
                # motion: similar) is never joined through a member; one not aligned with it
                # (a turn the hashes did not propose) or only framed otherwise may be
                not_near[root.id] = root
            if verdict.match is None:
                continue
            if not verdict.match.tier.actionable:
                alike.append((root, verdict.match))
                continue
            key = (_TIER_RANK[verdict.match.tier], -verdict.match.similarity, root.seq, root.id)
            near.append((key, root))
            if best is None or key < best[0]:
                best = (key, root, verdict.match)
        if best is None:
            through = self._through_member(rec, found, not_near)
            if through is not None:
                return through
            # Similar pairs are recorded for review beside the groups, never as
            # membership: the file stays an original, so its own copies are
            # still verified against it and not against a look-alike.
            for root, match in alike:
                self.store.set_similar(rec.id, root.id, match)
                log.info("similar_found", path=rec.path, other=root.path,
                         similarity=match.similarity, reason=match.reason)
        if best is None:
            return None
        if others is not None:
            others.extend(r for _, r in sorted(near, key=lambda entry: entry[0]) if r.id != best[1].id)
        return best[1], best[2], None

    def _through_member(
        self, rec: Record, found: dict[int, Record], roots: dict[int, Record]
    ) -> tuple[Record, Match, Match] | None:
        """A group of ``roots`` (candidate originals not near ``rec``) that
        ``rec`` belongs to through one of its members.

        A group is a star: a member was verified against the original only.
        When a larger copy (upscaled, padded, bordered) became the original,
        a copy that is near the source it was made from but not near that
        larger copy (a pad against a border: neither frame is inside the
        other; a turned copy against a bordered one: the hashes do not
        propose the turn) would found a group of its own, and one picture
        would end in two or three groups.  So the members the index proposed
        for ``rec`` are tried, closest first, at most
        :data:`MAX_MEMBERS_VERIFIED`: ``rec`` joins the group of the first
        member ``M`` for which, verified now on pixels,

        * ``rec`` is near ``M`` (or closer: exact, pixel);
        * ``M`` is near its original ``R``;
        * ``rec``'s content or ``R``'s (uniform borders trimmed) lies inside
          ``M``'s frame.

        Whatever ``rec`` and ``R`` both show then lies inside ``M``, so it was
        compared with ``M`` in both steps and found the same: they are one
        picture (one may be a crop of the other).  Without the third
        condition a crop would bridge what it cut away (``M`` the top of a
        screenshot, ``R`` the screenshot, ``rec`` the same screenshot with
        its last line changed: neither lies inside ``M``).  The chain is one member long and both
        steps are verified when it is made, never taken from stored
        matches; ``similar`` verdicts never bridge; a pair a person marked
        as not duplicates is never used.  The match still points at ``R``
        (the group stays a star) and its reason names ``M``.

        The other design, verifying later arrivals against a demoted
        original as well, is the special case where ``M`` was the original;
        this one also covers a group whose original changed more than once
        or whose source arrived after its larger copy.
        """
        fp = rec.fingerprint
        assert fp is not None
        settings = self.config.match
        members = sorted(
            ((closeness(fp, m.fingerprint, settings), m.seq, m.id, m) for m in found.values()
             if m.original_id in roots and m.fingerprint is not None),
            key=lambda entry: entry[:3],
        )  # fmt: skip
        verified = 0
        for n, (_, _, _, member) in enumerate(members):
            assert member.original_id is not None
            root = roots[member.original_id]
            known = self.store.match_of(member.id)
            if known is None or known[0] != root.id or not known[1].tier.actionable:
                continue
            if self._is_ignored(rec, member) or self._is_ignored(member, root):
                continue
            if verified == MAX_MEMBERS_VERIFIED:
                log.info("members_capped", path=rec.path, members=len(members), verified=verified,
                         skipped=len(members) - n)
                break
            verified += 1
            first = self._verdict(rec, member)
            if _grouping(first.match) is None:
                continue
            second = self._verdict(member, root)
            if _grouping(second.match) is None or not (first.new_inside or second.old_inside):
                continue
            assert first.match is not None and second.match is not None
            log.info("joined_through_member", path=rec.path, member=member.path, original=root.path)
            return root, *_through(rec, member, root, first.match, second.match, settings)
        return None

    def _merge(
        self,
        loser: Record,
        winner: Record,
        match: Match,
        tie: bool,
        rule: str,
        changed: dict[int, str],
        todo: Todo,
    ) -> None:
        """``loser`` (a root) and its duplicates join ``winner``'s group.

        Each duplicate is verified against its new original; one that does
        not match it leaves the group and is placed again.
        """
        members = self.store.duplicates_of(loser.id)
        self.store.set_match(loser.id, winner.id, match, tie=tie)
        changed[loser.id] = rule
        for member_id in members:
            member = self.store.record(member_id)
            if member is None or member.fingerprint is None:
                self.store.clear_match(member_id)
                continue
            verdict = None if self._is_ignored(member, winner) else self._verdict(member, winner)
            if verdict is None or _grouping(verdict.match) is None:
                self.store.clear_match(member_id)
                todo.append((member_id, None))
                log.info("group_split", path=member.path, original=winner.path,
                         reason=verdict.reason if verdict else "a person marked the pair as not duplicates")
                continue
            assert verdict.match is not None
            decision, member_rule = self._choose(member, winner)
            # keep rules are not transitive between pixel twins (largest_file
            # does not decide there): a member that would beat the new original
            # is recorded as a tie, which no action touches
            self.store.set_match(member_id, winner.id, verdict.match, tie=decision is not Decision.KEEP_OLD)
            changed[member_id] = member_rule

    def _recheck_root(self, file_id: int) -> list[Duplicate]:
        """After a path changed: does the keep order still put the same file first?"""
        rec = self.store.record(file_id)
        if rec is None or rec.fingerprint is None:
            return []
        root = rec if rec.original_id is None else self.store.record(rec.original_id)
        assert root is not None
        best = root
        for member in self.store.records(self.store.duplicates_of(root.id)).values():
            if member.fingerprint is not None and self._choose(member, best)[0] is Decision.KEEP_NEW:
                best = member
        if best.id == root.id:
            return []
        known = self.store.match_of(best.id)
        assert known is not None
        self.store.clear_match(best.id)
        changed: dict[int, str] = {}
        todo: Todo = collections.deque()
        _, rule = self._choose(best, root)
        self._merge(root, best, inverse(known[1]), False, rule, changed, todo)
        out = self._report(changed)
        # the files whose group changed pull their twins, as in any placement
        return out + self._settle([file_id for file_id, _ in todo], regrouped=[best.id, *changed])

    def _choose(self, new: Record, old: Record) -> tuple[Decision, str]:
        """Which of two files is the original: the one a person chose, if only one
        was; otherwise the configured keep rules."""
        assert new.fingerprint is not None and old.fingerprint is not None
        a, b = self.store.is_chosen(new.fingerprint.sha256), self.store.is_chosen(old.fingerprint.sha256)
        if a != b:
            return (Decision.KEEP_NEW if a else Decision.KEEP_OLD), CHOSEN_RULE
        return choose_original(new, old, self.config, self._references_elsewhere())

    def _references_elsewhere(self) -> dict[str, tuple[Path, ...]]:
        """The other hosts' ``reference_dirs`` (a store several hosts share), read
        again at most every :data:`REFERENCES_EVERY` seconds."""
        now = time.monotonic()
        if self._references is None or now - self._references[0] >= REFERENCES_EVERY:
            self._references = (now, self.store.references_elsewhere())
        return self._references[1]

    # --- helpers ------------------------------------------------------------

    def _verdict(self, new: Record, old: Record) -> Verdict:
        """:func:`~dedupd.matching.verdict_for`, another host's pixels asked of it."""
        return verdict_for(new, old, self.config.match, self.exchange)

    def _is_ignored(self, a: Record, b: Record) -> bool:
        assert a.fingerprint is not None and b.fingerprint is not None
        return self.store.is_ignored(
            a.fingerprint.sha256, b.fingerprint.sha256, path_a=a.path, path_b=b.path, host_a=a.host, host_b=b.host
        )

    def _report(self, changed: dict[int, str]) -> list[Duplicate]:
        """The matches as they stand after the operation, one per file whose match changed."""
        out = []
        records = self.store.records(changed)
        for file_id, rule in changed.items():
            rec = records.get(file_id)
            known = self.store.match_of(file_id)
            if rec is None or known is None or rec.fingerprint is None:
                continue
            original_id, match, tie = known
            original = self.store.record(original_id)
            if original is None or original.fingerprint is None:  # pragma: no cover - a star's root exists
                continue
            out.append(_found(Duplicate(rec, original, match, tie, rule)))
        return out


def _through(
    rec: Record, member: Record, root: Record, first: Match, second: Match, settings: MatchSettings
) -> tuple[Match, Match]:
    """The match of ``rec`` with ``root`` made through ``member`` (``first``:
    rec seen from member, ``second``: member seen from root), seen from the
    root and from ``rec``: the weaker tier, the lower similarity, the two
    turns composed, and a reason that names the member (paths as safe text:
    a reason is stored as UTF-8 and shown on terminals)."""
    tier = max(first.tier, second.tier, key=_TIER_RANK.__getitem__)
    similarity = min(first.similarity, second.similarity)
    assert rec.fingerprint is not None and root.fingerprint is not None
    distances = compare(rec.fingerprint, root.fingerprint, settings).distances
    assert distances is not None
    orientation = _compose(first.orientation, second.orientation)
    there = Match(
        tier, distances, similarity, orientation,
        f"near {display_path(member.path)} ({first.reason}), which is a near copy of {display_path(root.path)}"
        f" ({second.reason})",
    )  # fmt: skip
    back = replace(
        inverse(there),
        reason=f"near {display_path(member.path)} ({second.reason}), which is a near copy of"
        f" {display_path(rec.path)} ({first.reason})",
    )
    return there, back


@functools.cache
def _compositions() -> dict[tuple[Orientation, Orientation], Orientation]:
    """(first, then) -> the one orientation that does both, worked out on a
    small asymmetric picture with the transposes the verifier turns by."""

    def turn(im: Image.Image, o: Orientation) -> Image.Image:
        return im if o is Orientation.IDENTITY else im.transpose(VARIANT_TRANSPOSES[o])

    probe = Image.fromarray(np.arange(6, dtype=np.uint8).reshape(2, 3))
    seen = {np.asarray(turn(probe, o)).tobytes() + bytes(turn(probe, o).size): o for o in Orientation}
    out = {}
    for a in Orientation:
        for b in Orientation:
            done = turn(turn(probe, a), b)
            out[(a, b)] = seen[np.asarray(done).tobytes() + bytes(done.size)]
    return out


def _compose(first: Orientation, then: Orientation) -> Orientation:
    """The orientation that turns a picture as ``first`` and then ``then`` do."""
    return _compositions()[(first, then)]


def _grouping(match: Match | None) -> Match | None:
    """A verdict that may put two files in one group: an actionable tier only."""
    return match if match is not None and match.tier.actionable else None


def _sha(rec: Record) -> str | None:
    return rec.fingerprint.sha256 if rec.fingerprint is not None else None


def _found(dup: Duplicate) -> Duplicate:
    log.info(
        "duplicate_found",
        path=dup.duplicate.path,
        original=dup.original.path,
        tier=dup.match.tier.value,
        distance=dup.match.distances.phash,
        similarity=dup.match.similarity,
        orientation=dup.match.orientation.value,
        tie=dup.tie,
        reason=dup.match.reason,
        rule=dup.rule,
    )
    return dup
