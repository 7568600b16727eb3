"""The byte layout of one message: an int64 header, then the tensors, each 16-byte aligned, in one uint8 buffer.

One buffer per message means one send and one receive per message (one NCCL kernel, one gloo round trip).
Every message of a kind has the same size, that of the largest batch it can carry: a receiver can then post
its receive before it knows the batch size, and NCCL, which needs equal sizes on both ends, is satisfied.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

import torch

ALIGN = 16  # bytes: any dtype's view of an aligned uint8 slice is legal
HEADER_BYTES = 32  # four int64: kind, step, batch, spare


class Kind(IntEnum):
    TRAIN = 1  # a training carry
    EVAL = 2  # an evaluation carry
    END = 3  # no more carries this phase (asynchronous mode)
    STATE = 4  # module tensors: window parameters, cascade gradients, EMA sources


class Header(NamedTuple):
    kind: int
    step: int
    batch: int


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a message: `shape` is per sample when `batched` (the batch dimension comes first)."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    batched: bool = True

    def full_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, *self.shape) if self.batched else self.shape

    def nbytes(self, batch: int) -> int:
        return math.prod(self.full_shape(batch)) * self.dtype.itemsize

    @classmethod
    def of(cls, name: str, t: torch.Tensor, *, batched: bool = True) -> TensorSpec:
        return cls(name, tuple(t.shape[1:] if batched else t.shape), t.dtype, batched)


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


@dataclass(frozen=True)
class Layout:
    """Where each tensor of a message lives in its buffer; `capacity` is the largest batch it carries."""

    specs: tuple[TensorSpec, ...]
    capacity: int = 0

    def offsets(self, batch: int) -> list[int]:
        """Start of each tensor in the buffer for a message of `batch` samples."""
        out, at = [], HEADER_BYTES
        for spec in self.specs:
            out.append(at)
            at += _aligned(spec.nbytes(batch))
        return out

    @property
    def nbytes(self) -> int:
        """The buffer size of every message of this layout (room for `capacity` samples)."""
        return HEADER_BYTES + sum(_aligned(s.nbytes(self.capacity)) for s in self.specs)

    def pack(self, tensors: Sequence[torch.Tensor], header: Header, device: torch.device | str = "cpu") -> torch.Tensor:
        """Copy `tensors` (one per spec, in order) into a new buffer on `device`, the wire's device."""
        if len(tensors) != len(self.specs):
            raise ValueError(f"layout has {len(self.specs)} tensors, got {len(tensors)}")
        if header.batch > self.capacity and any(s.batched for s in self.specs):
            raise ValueError(f"batch {header.batch} exceeds the layout's capacity {self.capacity}")
        buf = torch.empty(self.nbytes, dtype=torch.uint8, device=device)
        buf[:HEADER_BYTES].view(torch.int64).copy_(torch.tensor([*header, 0], dtype=torch.int64))
        for spec, at, t in zip(self.specs, self.offsets(header.batch), tensors, strict=True):
            shape = spec.full_shape(header.batch)
            if tuple(t.shape) != shape or t.dtype != spec.dtype:
                raise ValueError(f"'{spec.name}': expected {spec.dtype} {shape}, got {t.dtype} {tuple(t.shape)}")
            self._view(buf, at, spec, header.batch).copy_(t)
        return buf

    def signal(self, header: Header, device: torch.device | str = "cpu") -> torch.Tensor:
        """A message of this layout's size that carries only its header (e.g. END)."""
        buf = torch.zeros(self.nbytes, dtype=torch.uint8, device=device)
        buf[:HEADER_BYTES].view(torch.int64).copy_(torch.tensor([*header, 0], dtype=torch.int64))
        return buf

    def header(self, buf: torch.Tensor) -> Header:
        return Header(*buf[:HEADER_BYTES].view(torch.int64)[:3].tolist())

    def unpack(self, buf: torch.Tensor, header: Header | None = None) -> list[torch.Tensor]:
        """Views of `buf`'s tensors (no copy): they live as long as the caller keeps them."""
        header = header or self.header(buf)
        return [
            self._view(buf, at, s, header.batch) for s, at in zip(self.specs, self.offsets(header.batch), strict=True)
        ]

    @staticmethod
    def _view(buf: torch.Tensor, at: int, spec: TensorSpec, batch: int) -> torch.Tensor:
        return buf[at : at + spec.nbytes(batch)].view(spec.dtype).view(spec.full_shape(batch))


def state_specs(prefix: str, tensors: Sequence[torch.Tensor]) -> list[TensorSpec]:
    """Specs of module tensors (parameters, buffers, gradients): fixed shapes, no batch dimension."""
    return [TensorSpec.of(f"{prefix}.{i}", t, batched=False) for i, t in enumerate(tensors)]
