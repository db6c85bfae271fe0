"""Reuse the realistic AnalysisOutput fixture of the exporter tests (real CT, fixture result)."""

from tests.exporters.conftest import ct20_files, ct20_output  # noqa: F401
