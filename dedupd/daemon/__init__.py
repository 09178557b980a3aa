"""The daemon (``dedupd run``), in parts that can be tested alone.

- ``loop.py``: the loop that pings the systemd watchdog, and the wiring:
  signals, reload, status, the worker pool;
- ``settling.py``: when a file is complete enough to read (pure);
- ``reconcile.py``: catch-up walks, the sweeps that forget what they did not
  find, deleted paths;
- ``breakers.py``: the circuit breakers on the watched roots;
- ``acting.py``: the actions, their file work off the loop on an action thread.

Crash tracking (which file kills workers, counted in the store) is
``dedupd.crashes``.
"""

from __future__ import annotations

from dedupd.daemon.loop import Daemon, run

__all__ = ["Daemon", "run"]
