"""The publish lease: one publisher at a time holds a `:PublishLock` node (owner, heartbeat, expiry); a dead
holder's lease is taken over at once on the same machine, elsewhere once it expires.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neo4j.exceptions import DriverError, Neo4jError

from graph_schema import cypher
from graph_schema.errors import PublisherBusy
from graph_store.neo4j.session import Neo4jBase, log


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError:
        return None


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot): tells a live process from a reused pid."""
    stat = _read_text(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


@dataclass(frozen=True)
class Publisher:
    """Identity of one publish, recorded on the lease: enough to tell, on the same machine, that it is dead."""

    owner: str
    host: str
    boot_id: str | None
    pid_ns: str | None
    pid: int
    pid_start: str | None

    @classmethod
    def this_process(cls) -> Publisher:
        try:
            pid_ns: str | None = os.readlink("/proc/self/ns/pid")
        except OSError:
            pid_ns = None
        pid = os.getpid()
        return cls(owner=f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:12]}", host=socket.gethostname(),
                   boot_id=_read_text("/proc/sys/kernel/random/boot_id"), pid_ns=pid_ns, pid=pid,
                   pid_start=_process_start(pid))

    def params(self) -> dict[str, Any]:
        return {"owner": self.owner, "host": self.host, "boot_id": self.boot_id, "pid_ns": self.pid_ns,
                "pid": self.pid, "pid_start": self.pid_start}


def _known_dead(lock: dict[str, Any], me: Publisher) -> bool:
    """True only when the lease holder provably ended: same machine, same boot and pid namespace as us, and its
    pid is gone or now names another process. Elsewhere only the lease's expiry frees it."""
    if lock.get("pid") is None or lock.get("boot_id") is None or lock.get("pid_ns") is None:
        return False
    if (lock.get("host"), lock.get("boot_id"), lock.get("pid_ns")) != (me.host, me.boot_id, me.pid_ns):
        return False
    start = _process_start(int(lock["pid"]))
    return start is None or start != lock.get("pid_start")


class Leases(Neo4jBase):
    """Taking, renewing and releasing the publish lease."""

    @contextmanager
    def _lease(self, me: Publisher, version: str) -> Iterator[_Lease]:
        """Holds the publish lease for the block (PublisherBusy if another live publisher has it), renewing
        it from a heartbeat thread; released at the end, whatever happened."""
        lease = _Lease(me, self._claim(me, version))
        beat = threading.Thread(target=self._heartbeat, args=(lease,), name="neo4j-publish-heartbeat", daemon=True)
        beat.start()
        try:
            yield lease
        finally:
            lease.stop.set()
            beat.join()
            try:
                self._write(cypher.RELEASE_PUBLISH_LOCK, name=cypher.PUBLISH_LOCK_NAME, owner=me.owner)
            except (Neo4jError, DriverError) as exc:  # it expires by itself
                log.warning("Neo4j store: releasing the publish lease failed (it expires in %.0f s): %s",
                            self._lease_ms / 1000, exc)

    def _claim(self, me: Publisher, version: str) -> str | None:
        """Takes the lease; returns the owner it was taken over from when that one was dead (else None)."""
        rows = self._read_rows(cypher.READ_PUBLISH_LOCK, name=cypher.PUBLISH_LOCK_NAME)
        stale: str | None = None
        if rows and rows[0]["owner"] is not None and rows[0]["owner"] != me.owner:
            lock = rows[0]
            expired = lock["expires_in_ms"] is None or lock["expires_in_ms"] < 0
            if expired or _known_dead(lock, me):
                stale = str(lock["owner"])
                log.warning("Neo4j store: taking over the publish lease of %s (%s)", stale,
                            "expired" if expired else "its process is gone")
            else:
                raise PublisherBusy(_busy_message(lock, version))
        claimed = self._write(
            cypher.CLAIM_PUBLISH_LOCK, name=cypher.PUBLISH_LOCK_NAME, stale=stale or "", lease_ms=self._lease_ms,
            version=version, **me.params(),
        )
        if not claimed or not claimed[0]["acquired"]:
            again = self._read_rows(cypher.READ_PUBLISH_LOCK, name=cypher.PUBLISH_LOCK_NAME)
            raise PublisherBusy(_busy_message(again[0] if again else {"owner": claimed[0]["owner"]}, version))
        return stale

    def _heartbeat(self, lease: _Lease) -> None:
        interval = self._lease_ms / 3000
        while not lease.stop.wait(interval):
            try:
                held = self._write(cypher.RENEW_PUBLISH_LOCK, name=cypher.PUBLISH_LOCK_NAME, owner=lease.me.owner,
                                   lease_ms=self._lease_ms)
                if not held or not held[0]["held"]:
                    lease.lost.set()
                # Touched even after the lease is lost: this process still writes that version.
                if lease.version is not None:
                    self._write(cypher.TOUCH_VERSION, version=lease.version, writing=cypher.STATE_WRITING,
                                owner=lease.me.owner)
            except (Neo4jError, DriverError) as exc:  # the next beat tries again; the lease outlives a few misses
                log.warning("Neo4j store: publish heartbeat failed: %s", exc)

    def _reclaim(self, lease: _Lease) -> list[str]:
        return [lease.me.owner] + ([lease.taken_from] if lease.taken_from else [])


@dataclass
class _Lease:
    """The publish lease this process holds: `lost` is set by the heartbeat once another publisher has it."""

    me: Publisher
    taken_from: str | None
    """The dead publisher this lease was taken over from: its partial version may be removed at once."""
    version: str | None = None
    """The version being written, whose heartbeat the lease's thread keeps fresh."""

    def __post_init__(self) -> None:
        self.stop = threading.Event()
        self.lost = threading.Event()


def _busy_message(lock: dict[str, Any], version: str) -> str:
    details = []
    if lock.get("version"):
        details.append(f"writing version {lock['version']!r}")
    if lock.get("host"):
        details.append(f"host {lock['host']}, pid {lock.get('pid')}")
    if lock.get("heartbeat_age_ms") is not None:
        details.append(f"last heartbeat {lock['heartbeat_age_ms'] / 1000:.1f} s ago")
    if lock.get("expires_in_ms") is not None:
        details.append(f"lease expires in {max(0, lock['expires_in_ms']) / 1000:.0f} s unless renewed")
    return (f"cannot publish version {version!r}: another publisher is running ({lock.get('owner')}; "
            f"{'; '.join(details)}). Nothing was written; try again when it has finished "
            f"(a dead publisher's lease is taken over once it expires)")


def _lost_message(version: str) -> str:
    return (f"version {version!r} was not made current: this publisher lost the publish lease to another one "
            f"(its heartbeat could not renew it in time); the previous version stays current")
