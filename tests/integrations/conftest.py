"""Set-up for the integration tests."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(autouse=True)
def _no_shadowed_hf_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under pytest, ``tests/datasets`` (a folder on sys.path) imports as ``datasets``; without the Hugging Face
    ``datasets`` package, transformers' Trainer would take it for that package and fail on ``datasets.Dataset``."""
    trainer = sys.modules.get("transformers.trainer")
    shadow = sys.modules.get("datasets")
    if trainer is not None and shadow is not None and not hasattr(shadow, "Dataset"):
        monkeypatch.setattr(trainer, "is_datasets_available", lambda: False)
