"""Circuit breakers on the watched roots.

A root that vanished, moved to another device, was replaced by another
directory, or looks empty while files under it are indexed (a share
unmounted, a directory mounted over it) is not a storm of deletions to
forget nor a place to act in: its breaker trips, and actions and forgetting
stop there until a reload or a restart (a reload is a person saying "go on").
The rate breaker on actions is :class:`dedupd.actions.RateBreaker`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog

from dedupd.watcher import Watch

log = structlog.get_logger()


@dataclass
class RootState:
    """A watched root: its identity when it was watched, its observer and its breaker."""

    root: Path
    dev: int
    ino: int
    watch: Watch | None = None
    tripped: str | None = None
    #: after a reload a person vouched for the root as it is: an empty root is
    #: not a breaker until the catch-up walk has forgotten what is gone
    vouched: bool = False


def problem(state: RootState, count_under: Callable[[Path], int]) -> str | None:
    """Why the root's breaker should trip now, or None.  ``count_under(root)``: indexed files."""
    try:
        st = os.stat(state.root)
        if st.st_dev != state.dev:
            return "the root is on a different device now (unmounted or remounted?)"
        if not state.vouched and not any(True for _ in os.scandir(state.root)) and (
            indexed := count_under(state.root)
        ):
            return f"the root is empty but {indexed} files are indexed (unmounted?)"
        if st.st_ino != state.ino:
            return "the root was replaced by another directory (its watch is gone)"
    except OSError as exc:
        return f"the root is not accessible: {exc.strerror}"
    return None


def check(states: Iterable[RootState], count_under: Callable[[Path], int], paused: dict[Path, str]) -> None:
    """Trip the breaker of each root that has a problem; ``paused`` (the Actor's) learns why."""
    for state in states:
        why = problem(state, count_under)
        if why and state.tripped is None:
            state.tripped = why
            paused[state.root] = why
            log.error("circuit_breaker_tripped", root=state.root, cause=why,
                      note="actions and forgetting paused on this root until reload or restart")
