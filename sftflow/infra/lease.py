"""A lease: "only this process writes here", held across machines through one object in Cloud Storage.

A flock (`fcntl.flock`) makes one writer per *machine*; two workers on two machines writing the same
gs:// checkpoint each get their own. A lease is the bucket-wide version, built only on Cloud Storage's
generation preconditions (https://cloud.google.com/storage/docs/request-preconditions,
https://cloud.google.com/storage/docs/generations-preconditions):

- **take**: write the lease object with `if_generation_match=0` ("only if absent"); of several
  machines exactly one succeeds, the others get 412.
- **renew**: a thread rewrites it every `ttl/3` s with `if_generation_match=<the generation it wrote
  last>`; a 412 means someone took the lease over, and the holder learns it (`lost`).
- **take over**: a lease whose `expires_at` (holder's clock + ttl, rewritten at each renewal) has passed
  is rewritten with `if_generation_match=<that expired generation>`, so of several contenders one wins
  and a holder that comes back cannot renew over it. A SIGKILLed holder therefore blocks nobody for
  longer than `ttl` (plus one poll). Machines' clocks are assumed to agree within a small part of `ttl`
  (NTP: Compute Engine, Cloud Run).
- **release**: delete it with the generation it holds (a lease already taken over is left alone).

A contender meeting a live lease waits only while the holder may be dead: it watches the lease, and
fails fast (`LeaseBusy`, naming the holder) as soon as the holder renews it (alive, so waiting would
only stall this run) — or at once with `wait=False`. A holder that died is taken over when its lease
expires, so "rerun after a crash" just works, one TTL later at most.

Why fail fast rather than share the work: the holder is already asking every missing example at the
configured rate; a second machine that waits hours looks hung, and one that splits the examples needs a
claim per example (one more write each) for no gain in money, only in wall time. The message names
the holder so the user can decide.

The local twin is `fcntl.flock` (sftflow.evaluation.checkpoint.CheckpointLock): the kernel drops it when
its holder dies, so local storage needs no lease.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from sftflow.errors import SftflowError
from sftflow.infra import gcs
from sftflow.infra.storage import split_gcs

log = logging.getLogger(__name__)

#: Seconds a lease lasts without renewal, unless told otherwise (Settings.lease_ttl_s).
DEFAULT_TTL = 60.0


class LeaseBusy(SftflowError):
    """Another live process holds the lease; the message names it."""


def owner_name() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


# ----------------------------------------------------------------------- the object, with generations


def _blob(uri: str):
    bucket, name = split_gcs(uri)
    return gcs.client().bucket(bucket).blob(name)


def read(uri: str) -> tuple[dict, int] | None:
    """(content, generation) of the lease object, None when there is none."""
    from google.api_core import exceptions as gexc

    while True:
        blob = _blob(uri)
        try:
            blob.reload()  # the generation (a download need not report it)...
            generation = int(blob.generation)
            raw = blob.download_as_bytes(if_generation_match=generation)  # ...of exactly these bytes
            break
        except gexc.NotFound:
            return None
        except gexc.PreconditionFailed:
            continue  # rewritten between the two requests: read again
    try:
        content = json.loads(raw)
        if not isinstance(content, dict):
            raise ValueError("not an object")
    except ValueError:
        content = {"owner": "unreadable lease", "expires_at": 0}  # planted or foreign: expired at once
    return content, generation


def write_if(uri: str, content: dict, generation: int) -> int | None:
    """Write `content` only if the object's live generation is `generation` (0: absent); its new
    generation, or None when the precondition failed (412)."""
    from google.api_core import exceptions as gexc

    blob = _blob(uri)
    try:
        blob.upload_from_string(json.dumps(content), content_type="application/json",
                                if_generation_match=generation)
    except gexc.PreconditionFailed:
        return None
    return int(blob.generation)


def delete_if(uri: str, generation: int) -> bool:
    from google.api_core import exceptions as gexc

    try:
        _blob(uri).delete(if_generation_match=generation)
    except (gexc.PreconditionFailed, gexc.NotFound):
        return False
    return True


# ----------------------------------------------------------------------- the lease


class Lease:
    """Hold `uri` (a gs:// object) for as long as this process works; see the module docstring.

    `with Lease(uri, ttl=60):` takes it (or raises LeaseBusy naming the holder), renews it from a
    thread, and releases it at the end. `lost` turns true when a renewal finds the lease taken over
    (the holder stalled past its TTL): the holder must stop writing then (`check()` raises).
    """

    def __init__(self, uri: str, *, ttl: float = DEFAULT_TTL, wait: bool = True, what: str = "",
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep):
        if ttl <= 0:
            raise ValueError(f"ttl: must be > 0, got {ttl}")
        self.uri, self.ttl, self.wait, self.what = uri, float(ttl), wait, what or uri
        self._clock, self._sleep = clock, sleep
        self.owner = ""
        self.generation: int | None = None
        self.expires_at = 0.0
        self.took_over_from: str | None = None
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _content(self) -> dict:
        self.expires_at = self._clock() + self.ttl
        return {"owner": self.owner, "expires_at": self.expires_at, "ttl": self.ttl}

    def _busy(self, holder: dict, why: str) -> LeaseBusy:
        left = max(0.0, float(holder.get("expires_at", 0)) - self._clock())
        return LeaseBusy(f"{self.what}: another process is writing it ({holder.get('owner', '?')}; its lease {self.uri} "
                         f"expires in {left:.0f} s unless renewed); {why}")

    def acquire(self) -> Lease:
        self.owner = owner_name()
        watched: int | None = None
        while True:
            gen = write_if(self.uri, self._content(), 0)
            if gen is not None:
                break
            current = read(self.uri)
            if current is None:
                continue  # released between our write and our read: try again
            holder, held_gen = current
            expires_at = float(holder.get("expires_at", 0) or 0)
            if self._clock() >= expires_at:
                gen = write_if(self.uri, self._content(), held_gen)
                if gen is not None:
                    self.took_over_from = str(holder.get("owner", "?"))
                    log.warning("%s: took over the lease of %s, expired %.1f s ago", self.uri,
                                self.took_over_from, self._clock() - expires_at)
                    break
                continue  # another contender took it over first: look again
            if not self.wait:
                raise self._busy(holder, "wait for it to finish (its results are then reused) or stop it, and rerun")
            if watched is not None and held_gen != watched:
                raise self._busy(holder, "it is alive (it renewed its lease while this process waited); wait for "
                                 "it to finish (its results are then reused) or stop it, and rerun")
            watched = held_gen
            self._sleep(min(max(expires_at - self._clock(), 0.05), self.ttl / 3))
        self.generation = gen
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease-{os.path.basename(self.uri)}",
                                        daemon=True)
        self._thread.start()
        return self

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                assert self.generation is not None
                gen = write_if(self.uri, {"owner": self.owner, "expires_at": self._clock() + self.ttl,
                                          "ttl": self.ttl}, self.generation)
            except Exception as exc:  # noqa: BLE001 - a failed renewal is retried at the next tick
                log.warning("%s: renewing the lease failed (%s); retrying", self.uri, exc)
                if self._clock() >= self.expires_at:
                    self._lose("its TTL ran out while renewals failed")
                    return
                continue
            if gen is None:
                self._lose("another process took it over")
                return
            self.generation, self.expires_at = gen, self._clock() + self.ttl

    def _lose(self, why: str) -> None:
        self.lost = True
        log.error("%s: lease lost: %s; this process stops writing", self.uri, why)

    def check(self) -> None:
        """Raise LeaseBusy when the lease was lost (call before each write it guards)."""
        if self.lost:
            raise LeaseBusy(f"{self.what}: this process lost its lease {self.uri} (it was taken over after "
                            f"{self.ttl:g} s without renewal); stopped writing, rerun to resume")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.generation is not None and not self.lost:
            delete_if(self.uri, self.generation)
        self.generation = None

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
