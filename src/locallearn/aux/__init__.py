"""Auxiliary networks built from boundary records."""

from .build import (
    AUTO,
    DECODERS,
    HEADS,
    choose_decoder,
    choose_head,
    make_decoder,
    make_feature_decoder,
    make_feature_head,
    make_head,
)
from .heads import HEAD_CONFIGS, AuxClassifier, Decoder, MLPSRHead
from .imagenet import ImageNetDecoder, ImageNetHead
from .man_dgl import MANDGLHead
from .mlaan_imagenet import MLAANImageNetHead
from .tokens import TokenGrid, TokenHead, is_token_shape

__all__ = [
    "AUTO",
    "DECODERS",
    "HEAD_CONFIGS",
    "HEADS",
    "AuxClassifier",
    "Decoder",
    "ImageNetDecoder",
    "ImageNetHead",
    "MANDGLHead",
    "MLAANImageNetHead",
    "MLPSRHead",
    "TokenGrid",
    "TokenHead",
    "choose_decoder",
    "choose_head",
    "is_token_shape",
    "make_decoder",
    "make_feature_decoder",
    "make_feature_head",
    "make_head",
]
