"""Merge reports: data built from the passes, rendered as text or versioned JSON."""

from .build import REPORT_SCHEMA_VERSION, build_report
from .render import render_text

__all__ = ["REPORT_SCHEMA_VERSION", "build_report", "render_text"]
