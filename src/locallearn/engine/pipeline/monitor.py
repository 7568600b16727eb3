"""Failure detection: heartbeats and a shared error slot in the rendezvous store, watched by a thread per rank.

A rank whose main thread raises reports the error in the store; every other rank's monitor sees it within
one interval, prints it and exits. A rank that dies without a word (killed, out of memory) stops its
heartbeat; the others exit once it has been silent for `timeout` seconds. Under gloo a dead peer usually
surfaces sooner, as a closed connection in the next send or receive; under NCCL the heartbeat is what ends
the wait. The monitor also carries each rank's progress (step, losses, busy fraction) to rank 0's progress
line, so that showing it costs the pipeline no collective.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from typing import Any

import torch.distributed as dist

EXIT_CODE = 1
ERROR_KEY = "error"
ACK_PREFIX = "ack/"


def _die(message: str) -> None:
    print(f"locallearn: error: {message}", file=sys.stderr, flush=True)
    # The main thread may be blocked in a collective that will never complete: leave without unwinding it.
    os._exit(EXIT_CODE)


class Monitor:
    def __init__(
        self,
        store: dist.Store,
        rank: int,
        world: int,
        *,
        interval: float = 1.0,
        timeout: float = 60.0,
    ) -> None:
        self.store, self.rank, self.world = store, rank, world
        self.interval, self.timeout = interval, timeout
        self._status: dict[str, Any] = {}
        self._peers: dict[int, dict[str, Any]] = {}
        self._seq = 0
        self._seen: dict[int, tuple[int, float]] = {}  # rank -> (last heartbeat number, when it changed)
        self._stop = threading.Event()
        self._reported = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="locallearn-monitor", daemon=True)

    # ----------------------------------------------------------------------------------------- main thread
    def start(self) -> None:
        self._beat()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def publish(self, **status: Any) -> None:
        """Status shown on rank 0's progress line; sent with the next heartbeat."""
        self._status = {**self._status, **status}  # rebound, never mutated: the monitor thread may be reading it

    def peers(self) -> dict[int, dict[str, Any]]:
        """The latest status each rank published (rank 0 reads these for its progress line)."""
        return {**self._peers, self.rank: dict(self._status)}

    def report(self, message: str) -> str:
        """Record this rank's error unless another was recorded first; returns the first one (the root cause)."""
        self._reported.set()
        text = f"rank {self.rank}: {message}"
        try:
            first = self.store.compare_set(ERROR_KEY, "", text)
        except Exception:  # the store itself is gone (its host died): this rank's message is all there is
            return text
        first = first.decode() if isinstance(first, bytes) else str(first)
        if first != text:
            with contextlib.suppress(Exception):
                self._acknowledge()
        return first

    def linger(self, grace: float | None = None) -> None:
        """Wait (at most `grace` seconds) until every other rank has seen the reported error.

        The root cause's process may host the store (rank 0 under a plain env:// launch); leaving at once
        would take the message with it, and the others would only learn that the store is gone.
        """
        deadline = time.monotonic() + (3 * self.interval if grace is None else grace)
        keys = [f"{ACK_PREFIX}{r}" for r in range(self.world) if r != self.rank]
        try:
            while keys and time.monotonic() < deadline:
                keys = [k for k in keys if not self.store.check([k])]
                time.sleep(self.interval / 10)
        except Exception:  # the store is gone: nobody is left to tell
            return

    def _acknowledge(self) -> None:
        self.store.set(f"{ACK_PREFIX}{self.rank}", "1")

    # ----------------------------------------------------------------------------------------- monitor thread
    def _beat(self) -> None:
        self._seq += 1
        self.store.set(f"hb/{self.rank}", json.dumps({"seq": self._seq, "status": self._status}))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._beat()
                if not self._reported.is_set() and self.store.check([ERROR_KEY]):
                    first = self.store.get(ERROR_KEY).decode()
                    self._acknowledge()
                    _die(f"training stopped because {first}")
                self._watch_peers()
            except Exception as e:  # the rendezvous store is unreachable: its host (rank 0 or torchrun) is gone
                if not self._stop.is_set() and not self._reported.is_set():
                    _die(f"rank {self.rank} lost the rendezvous store ({e}); another rank or torchrun has died")

    def _watch_peers(self) -> None:
        now = time.monotonic()
        others = [r for r in range(self.world) if r != self.rank]
        keys = [f"hb/{r}" for r in others]
        present = [r for r, k in zip(others, keys, strict=True) if self.store.check([k])]
        values = self.store.multi_get([f"hb/{r}" for r in present]) if present else []
        beats = {r: json.loads(v) for r, v in zip(present, values, strict=True)}
        for r in others:
            seq = beats[r]["seq"] if r in beats else 0
            if r in beats:
                self._peers[r] = beats[r]["status"]
            last_seq, since = self._seen.get(r, (seq, now))
            if seq != last_seq:
                since = now
            self._seen[r] = (seq, since)
            if now - since > self.timeout and not self._reported.is_set():
                _die(f"rank {r} stopped responding (no heartbeat for {now - since:.0f}s); it has probably died")
