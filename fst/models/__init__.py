"""Model builders. ``MODELS[name](**cfg)`` returns an ``nn.Module``; keys are ``configs/model/*.yaml`` stems."""

from fst.registry import Registry

MODELS = Registry("model")

from . import classification, detection  # noqa: E402,F401  (fill MODELS)
