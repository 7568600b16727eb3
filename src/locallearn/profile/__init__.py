"""Measurement: FLOPs and memory held for backward, per unit, per stage and per training step."""
