"""What is done to a duplicate.  Placeholder until the action layer lands: log only."""

from __future__ import annotations

import collections

import structlog

from dedupd.config import Config
from dedupd.models import Action
from dedupd.pipeline import Duplicate
from dedupd.store import Store

log = structlog.get_logger()


class Actor:
    def __init__(self, store: Store, config: Config, *, dry_run: bool = False) -> None:
        self.store = store
        self.config = config
        self.dry_run = dry_run
        self.counts: collections.Counter[str] = collections.Counter()

    def handle(self, dup: Duplicate) -> None:
        action = self.config.actions.for_tier(dup.match.tier)
        if dup.tie:
            self.counts["skipped_tie"] += 1
            return
        if action is Action.LOG:
            self.counts["logged"] += 1
            return
        raise NotImplementedError(action)
