"""tests/export: registers the ``tflite`` marker here until pyproject.toml lists it (with
--strict-markers an unregistered marker is an error; registering it twice is harmless)."""

from __future__ import annotations


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "tflite: converts to TFLite in the litert-torch converter env (builds it once, minutes)"
    )
