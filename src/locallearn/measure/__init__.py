"""Meters: FLOPs, bytes saved for backward, allocator peaks, per unit and per stage.

The bottom of the measuring stack: it imports nothing from locallearn, so `split` can measure units and the
engines can trace their own steps. Meters see a step only through what they are handed (modules, an engine's
`stage_scope` seam); they never build or import an engine.
"""
