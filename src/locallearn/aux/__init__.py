"""Auxiliary networks built from boundary records."""

from .heads import HEAD_CONFIGS, AuxClassifier, Decoder, MLPSRHead

__all__ = ["HEAD_CONFIGS", "AuxClassifier", "Decoder", "MLPSRHead"]
