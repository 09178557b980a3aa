"""The compiled inner loops of dedupd.index (``_near.c``): C-contiguous arrays in."""

from typing import Any

import numpy.typing as npt

def near(
    probes: npt.NDArray[Any],
    plan: npt.NDArray[Any],
    masks: npt.NDArray[Any],
    offsets: npt.NDArray[Any],
    offset_size: int,
    sketch: npt.NDArray[Any],
    sketch_size: int,
    order: npt.NDArray[Any],
    hashes: npt.NDArray[Any],
    alive: npt.NDArray[Any],
    limit: int,
    budget: int,
    /,
) -> bytes | None: ...
def scan(
    hashes: npt.NDArray[Any], alive: npt.NDArray[Any], probes: npt.NDArray[Any], start: int, end: int, limit: int, /
) -> bytes: ...
