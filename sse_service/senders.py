"""Who may send us events: admission by the role of the notifying backend.

Any role that can connect to the database can ``NOTIFY`` on our channel, so
the payload alone proves nothing. Every notification carries the process id
of the backend that sent it, and ``pg_stat_activity`` (readable by any role)
maps a pid to its role. The policy (``SSE_NOTIFY_ROLES``, comma-separated):

- unset or empty: any role (no look-ups at all; the database's CONNECT
  privilege is then the only control, see docs/threat-model.md);
- role names: those roles;
- ``@writers``: roles that may write one of the core tables (INSERT, UPDATE
  or DELETE; superusers and owners included): the core API's role, whose
  writes fire the triggers, and usually the installing role. It combines
  with names (``@writers,ops``).

A pid seen before is decided by one dict look-up on the hot path. A pid not
seen before is looked up on a second connection; meanwhile its notification,
and every one after it, is held in arrival order (commit order must survive)
up to ``limit`` notifications, and at most an eighth of that from any one
backend (so that one flooding backend leaves room for the others). Beyond
that, arrivals are dropped, and their senders remembered: once their roles
are known, a drop from a refused role costs nothing, a drop from an admitted
one is announced as a gap at that point (``sync:reset``, rate-limited by the
dispatcher). So a flood from a few unknown backends takes bounded memory and
makes nobody reset; an intruder who keeps opening new backends can still
crowd the hold while its look-ups run, and so cause a reset, never a silent
loss. A backend that has exited before its look-up leaves
its notifications undecidable: they are dropped and announced as a gap too,
never delivered and never lost silently. Verdicts are checked again by
:meth:`Senders.refresh` (every LISTEN probe), so a revoked privilege or a pid
reused by another role is noticed within a probe interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable

from sse_service.logs import RateLimited
from sse_service.stats import Stats

log = logging.getLogger("sse_service.senders")

WRITERS = "@writers"
MAX_KNOWN = 10_000  # cached verdicts; beyond it the cache starts afresh
# pid -> (role name, whether it may write one of the core tables), for the pids
# still alive. to_regclass: a table missing (not installed yet) grants nothing.
LOOKUP_SQL = """
SELECT a.pid, r.rolname,
       r.rolsuper OR coalesce(
           has_table_privilege(r.oid, to_regclass('public.wishlists'), 'INSERT, UPDATE, DELETE')
           OR has_table_privilege(r.oid, to_regclass('public.items'), 'INSERT, UPDATE, DELETE')
           OR has_table_privilege(r.oid, to_regclass('public.marks'), 'INSERT, UPDATE, DELETE')
           OR has_table_privilege(r.oid, to_regclass('public.shared_wishlist_bookmarks'),
                                  'INSERT, UPDATE, DELETE'), false) AS writes
  FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid
 WHERE a.pid = ANY($1::int[])
"""

Lookup = Callable[[list[int]], Awaitable[dict[int, tuple[str, bool]]]]


class Senders:
    """Stands between the LISTEN connection and the dispatcher's enqueue."""

    def __init__(self, *, roles: Iterable[str], enqueue: Callable[[str], None],
                 gap: Callable[[str], None], stats: Stats, limit: int) -> None:
        self._roles = frozenset(roles)
        self.open = not self._roles  # nothing to check
        self._writers = WRITERS in self._roles
        self._enqueue = enqueue
        self._gap = gap
        self._stats = stats
        self._limit = limit
        self._known: dict[int, bool] = {}  # pid -> admitted?
        self._held: deque[tuple[int, str]] = deque()
        self._overflowed: dict[int, int] = {}  # pid -> arrivals dropped while the hold was full
        self._held_by: dict[int, int] = {}  # pid -> how many of the held are its
        self._quota = max(1, limit // 8)
        self._lookup: Lookup | None = None
        self._task: asyncio.Task[None] | None = None
        self._log = RateLimited(log)

    def offer(self, pid: int, payload: str) -> None:
        """One notification from backend ``pid``: admit, refuse, or hold it."""
        if self.open:
            self._enqueue(payload)
            return
        if not self._held:
            verdict = self._known.get(pid)
            if verdict:
                self._enqueue(payload)
                return
            if verdict is not None:
                self._refuse(pid)
                return
        mine = self._held_by.get(pid, 0)
        if len(self._held) >= self._limit or mine >= self._quota:
            # Nothing may overtake what is held: drop it, and decide about a gap
            # once its sender is known (_release).
            self._overflowed[pid] = self._overflowed.get(pid, 0) + 1
        else:
            self._held.append((pid, payload))
            self._held_by[pid] = mine + 1
        if self._task is None and self._lookup is not None:
            self._task = asyncio.get_running_loop().create_task(self._resolve())

    def attach(self, lookup: Lookup) -> None:
        """Look-ups go through ``lookup`` from now on (a session began)."""
        self._lookup = lookup
        if self._held and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._resolve())

    def detach(self) -> None:
        """The session ended: what is held arrived before the loss of the LISTEN
        connection, whose recovery resets every stream anyway."""
        self._lookup = None
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._held.clear()
        self._held_by.clear()
        self._overflowed.clear()

    def decide(self, role: str, writes: bool) -> bool:
        """The verdict for a backend of ``role`` (``writes``: it may write a core table)."""
        return role in self._roles or (writes and self._writers)

    async def refresh(self) -> None:
        """Check every cached verdict again (gone or changed backends are forgotten)."""
        lookup = self._lookup
        if self.open or lookup is None or not self._known:
            return
        if len(self._known) > MAX_KNOWN:
            self._known.clear()
            return
        found = await lookup(list(self._known))
        self._known = {pid: self.decide(*found[pid]) for pid in self._known if pid in found}

    @property
    def held(self) -> int:
        return len(self._held)

    async def _resolve(self) -> None:
        try:
            while (self._held or self._overflowed) and self._lookup is not None:
                pids = sorted({pid for pid, _ in self._held if pid not in self._known}
                              | {pid for pid in self._overflowed if pid not in self._known})
                found: dict[int, tuple[str, bool]] = {}
                if pids:
                    try:
                        found = await self._lookup(pids)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # the held ones stay undecidable: a gap
                        self._log.warning("lookup", "could not look up senders: %s",
                                          type(exc).__name__)
                        self._lose("sender_unknown")
                        return
                for pid, (role, writes) in found.items():
                    self._known[pid] = self.decide(role, writes)
                self._release(set(pids))
        finally:
            if asyncio.current_task() is self._task:
                self._task = None

    def _release(self, asked: set[int]) -> None:
        """Pass on, in order, what is held up to the first sender not looked up
        yet (it arrived during the look-up). A sender looked up but not found
        has exited before we could see its role."""
        held, known = self._held, self._known
        lost = 0
        while held:
            pid, payload = held[0]
            verdict = known.get(pid)
            if verdict is None and pid not in asked:
                break  # the next round looks it up
            held.popleft()
            by = self._held_by
            if by[pid] == 1:
                del by[pid]
            else:
                by[pid] -= 1
            if verdict:
                self._enqueue(payload)
            elif verdict is not None:
                self._refuse(pid)
            else:
                lost += 1
        if lost:
            self._stats.notifications_rejected["sender_unknown"] += lost
            self._gap("sender_unknown")
        if held or not self._overflowed:
            return
        if any(pid not in known and pid not in asked for pid in self._overflowed):
            return  # the next round looks it up
        # The hold is empty: the drops during its overflow came after all of it.
        overflowed, self._overflowed = self._overflowed, {}
        missed = 0
        for pid, count in overflowed.items():
            if known.get(pid) is False:
                self._stats.notifications_rejected["sender_not_allowed"] += count
            else:  # admitted, or exited unseen: somebody may have missed an event
                missed += count
        if missed:
            self._stats.notifications_rejected["hold_overflow"] += missed
            self._gap("hold_overflow")

    def _refuse(self, pid: int) -> None:
        self._stats.notifications_rejected["sender_not_allowed"] += 1
        self._log.warning("refused", "refused a notification from backend %d:"
                          " its role may not send events (SSE_NOTIFY_ROLES)", pid)

    def _lose(self, reason: str) -> None:
        self._stats.notifications_rejected[reason] += (len(self._held)
                                                       + sum(self._overflowed.values()))
        self._held.clear()
        self._held_by.clear()
        self._overflowed.clear()
        self._gap(reason)
