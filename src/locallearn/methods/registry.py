"""Registries of local objectives and cross-stage mechanisms, kept apart to avoid import cycles."""

from __future__ import annotations

from ..registry import Registry

OBJECTIVES: Registry[type] = Registry("method")
MECHANISMS: Registry[type] = Registry("mechanism")
