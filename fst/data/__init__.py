"""Datasets. ``DATASETS[name](**cfg)`` returns the task's data bundle; keys are ``configs/data/*.yaml`` stems."""

from fst.registry import Registry

DATASETS = Registry("dataset")

from . import classification, detection  # noqa: E402,F401  (fill DATASETS)
