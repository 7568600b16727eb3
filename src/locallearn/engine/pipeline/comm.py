"""Point-to-point message links with a bounded in-flight queue, and a clock of the time spent waiting.

A message is one uint8 buffer (see `wire`). Sends are non-blocking `isend`s kept in a queue of at most
`depth`; the queue drains oldest first. A send completes only once the receiver has posted the matching
receive (gloo's rendezvous; NCCL likewise needs the peer's kernel), and a receiver posts its next receive only
as it takes the previous message, so a sender is never more than `depth` + 1 messages ahead of its receiver.

Both ends must post a link's messages in the same order: NCCL matches point-to-point operations between two
ranks in issue order and ignores tags, so every link uses tag 0 and gloo, which honours tags, is held to the
same rule (the CPU tests then check the ordering the GPU relies on).
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Iterator
from datetime import timedelta

import torch
import torch.distributed as dist

from ...errors import TrainingError


class LinkError(TrainingError):
    """A message to or from a peer rank failed: the peer has most likely died (its own log says why)."""


@contextlib.contextmanager
def peer_failure(who: str) -> Iterator[None]:
    """Turn a transport failure (gloo's closed connection, a timeout) into a LinkError that names `who`."""
    try:
        yield
    except RuntimeError as e:  # gloo and NCCL raise RuntimeError (or its DistError subclasses)
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LinkError(f"communication with {who} failed ({detail}); it has probably died (see its log)") from e


def _link(peer: int) -> contextlib.AbstractContextManager:
    return peer_failure(f"rank {peer}")


def finish(work: dist.Work, timeout: timedelta) -> None:
    """Block the host until `work` has completed.

    For NCCL, `wait()` alone only makes the current CUDA stream wait, and pytorch#68866 shows point-to-point
    cases where even that ordering failed. `wait(timeout)` with an explicit timeout blocks the host, and
    polling `is_completed()`, which queries the operation's own CUDA end event, makes sure the transfer has
    finished on the device before anyone reads or frees its buffer. For gloo both return at once.
    """
    work.wait(timeout)
    while not work.is_completed():
        time.sleep(1e-4)


class Clock:
    """Host time spent waiting on peers (idle) since the last `lap`; the rest of the wall time is busy."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.idle = 0.0
        self._start = time.perf_counter()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        if self.device.type == "cuda":
            # Finish this rank's own queued kernels first, so that they count as busy, not as waiting.
            torch.cuda.current_stream(self.device).synchronize()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.idle += time.perf_counter() - t0

    def peek(self) -> tuple[float, float]:
        """(busy, idle) seconds since the previous lap, without starting a new one."""
        wall = time.perf_counter() - self._start
        return wall - self.idle, self.idle

    def lap(self) -> tuple[float, float]:
        """(busy, idle) seconds since the previous lap."""
        now = time.perf_counter()
        wall, idle = now - self._start, self.idle
        self._start, self.idle = now, 0.0
        return wall - idle, idle


class Outbox:
    """Messages to one peer in one process group, at most `depth` of them in flight."""

    def __init__(self, group: dist.ProcessGroup, peer: int, *, depth: int, timeout: timedelta, clock: Clock) -> None:
        self.group, self.peer, self.depth, self.timeout, self.clock = group, peer, depth, timeout, clock
        self._pending: deque[tuple[dist.Work, torch.Tensor]] = deque()  # the buffer lives until its send is done

    def send(self, buf: torch.Tensor) -> None:
        """Queue `buf`, waiting first while `depth` messages are still in flight."""
        while len(self._pending) >= self.depth:
            self._retire()
        with _link(self.peer):
            self._pending.append((dist.isend(buf, self.peer, group=self.group), buf))

    def offer(self, buf: torch.Tensor) -> bool:
        """Queue `buf` only if there is room now (asynchronous mode drops what the receiver cannot take)."""
        while self._pending and self._done(self._pending[0][0]):
            self._retire()
        if len(self._pending) >= self.depth:
            return False
        with _link(self.peer):
            self._pending.append((dist.isend(buf, self.peer, group=self.group), buf))
        return True

    def flush(self) -> None:
        while self._pending:
            self._retire()

    def _done(self, work: dist.Work) -> bool:
        with _link(self.peer):
            return work.is_completed()

    def _retire(self) -> None:
        work, _ = self._pending[0]
        with self.clock.waiting(), _link(self.peer):
            finish(work, self.timeout)
        self._pending.popleft()


class Inbox:
    """Messages from one peer in one process group; one receive is posted ahead, so transfers overlap compute."""

    def __init__(
        self, group: dist.ProcessGroup, peer: int, *, device: torch.device, timeout: timedelta, clock: Clock
    ) -> None:
        self.group, self.peer, self.device, self.timeout, self.clock = group, peer, device, timeout, clock
        self._posted: tuple[dist.Work, torch.Tensor] | None = None

    def post(self, nbytes: int) -> None:
        """Post the receive of the next message, of `nbytes` bytes."""
        if self._posted is not None:
            raise RuntimeError("a receive is already posted on this link")
        buf = torch.empty(nbytes, dtype=torch.uint8, device=self.device)
        with _link(self.peer):
            self._posted = (dist.irecv(buf, self.peer, group=self.group), buf)

    def ready(self) -> bool:
        """Whether the posted message has arrived (never blocks)."""
        if self._posted is None:
            return False
        with _link(self.peer):
            return self._posted[0].is_completed()

    def take(self, nbytes: int | None = None) -> torch.Tensor:
        """The next message: the posted one, or (`nbytes` given) one received now."""
        if self._posted is None:
            if nbytes is None:
                raise RuntimeError("no receive posted on this link")
            self.post(nbytes)
        work, buf = self._posted
        with self.clock.waiting(), _link(self.peer):
            finish(work, self.timeout)
        self._posted = None
        return buf
