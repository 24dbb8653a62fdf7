"""Shared test fixtures: where ../shared lives, and the slow/cuda markers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="also run tests marked slow (CI does)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_slow = config.getoption("--slow")
    has_cuda = None  # importing torch costs seconds: only when a cuda test is collected
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow test: run with --slow"))
        if "cuda" in item.keywords:
            if has_cuda is None:
                import torch

                has_cuda = torch.cuda.is_available()
            if not has_cuda:
                item.add_marker(pytest.mark.skip(reason="no CUDA GPU on this machine"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared; skips the test when absent, fails under CI where it must be there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        message = f"reference data {path} is absent (../shared beside the project root)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; CI must have it")
        pytest.skip(message)
    return path


@pytest.fixture
def senet_models() -> Path:
    return shared_path("senet", "models")


@pytest.fixture
def realmodels() -> Path:
    return shared_path("realmodels")
