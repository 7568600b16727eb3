"""Datasets from their canonical files, a bundled CIFAR-10 sample, and the device-resident loader."""

from .datasets import DatasetBundle, list_datasets, load_dataset
from .loader import AugSpec, DeviceLoader

__all__ = ["AugSpec", "DatasetBundle", "DeviceLoader", "list_datasets", "load_dataset"]
