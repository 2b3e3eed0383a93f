"""Bridges to other training frameworks. Each submodule imports its framework, so importing
``fst`` never needs one: ``fst.integrations.mmdet`` (MMDetection / mmengine) is imported by an
mmdet config's ``custom_imports``."""
