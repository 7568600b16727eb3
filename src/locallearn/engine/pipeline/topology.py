"""Which rank runs which stages: P stage groups (pipeline positions) times R data-parallel replicas.

Ranks are laid out replica-major, rank = replica * P + position, so that one replica's pipeline occupies
neighbouring ranks (on one node when it fits) and activations cross the fastest links.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import ConfigError
from ...split import balanced_cuts


@dataclass(frozen=True)
class Topology:
    rank: int
    world: int
    replicas: int
    groups: tuple[tuple[int, int], ...]  # (first, last) stage of each position, inclusive

    @property
    def positions(self) -> int:
        return len(self.groups)

    @property
    def position(self) -> int:
        return self.rank % self.positions

    @property
    def replica(self) -> int:
        return self.rank // self.positions

    @property
    def stages(self) -> range:
        """The stages this rank trains."""
        first, last = self.groups[self.position]
        return range(first, last + 1)

    @property
    def num_stages(self) -> int:
        return self.groups[-1][1] + 1

    def rank_of(self, position: int, replica: int | None = None) -> int:
        """The rank at `position` in `replica` (default: this rank's replica)."""
        return (self.replica if replica is None else replica) * self.positions + position

    def position_of(self, stage: int) -> int:
        for p, (first, last) in enumerate(self.groups):
            if first <= stage <= last:
                return p
        raise IndexError(f"no stage {stage} in {self.groups}")

    def replica_ranks(self, position: int) -> list[int]:
        """The ranks holding replicas of `position`'s stages (they all-reduce their gradients)."""
        return [self.rank_of(position, r) for r in range(self.replicas)]


def assign_stages(flops: list[int], positions: int) -> tuple[tuple[int, int], ...]:
    """Contiguous stage groups, one per position, balancing forward FLOPs (the largest group is minimal)."""
    if positions > len(flops):
        raise ConfigError(
            f"{positions} pipeline positions but only K={len(flops)} stages; use K >= {positions} or "
            f"data-parallel replicas (--set pipeline.replicas=N with world size = positions x N)"
        )
    cuts = balanced_cuts(flops, positions)  # the exact min-max DP the splitter uses
    bounds = [-1, *cuts, len(flops) - 1]
    return tuple((bounds[i] + 1, bounds[i + 1]) for i in range(positions))


def positions_of(world: int, replicas: int) -> int:
    """Pipeline positions in a world of `world` ranks with `replicas` data-parallel replicas."""
    if world % replicas:
        raise ConfigError(f"world size {world} is not a multiple of pipeline.replicas={replicas}")
    return world // replicas


def make_topology(rank: int, world: int, replicas: int, flops: list[int]) -> Topology:
    return Topology(rank, world, replicas, assign_stages(flops, positions_of(world, replicas)))
