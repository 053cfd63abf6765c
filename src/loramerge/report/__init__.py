"""Merge reports: a typed model built from the passes, rendered as text or versioned JSON."""

from .build import build_report
from .model import REPORT_SCHEMA_VERSION, Report
from .render import render_text

__all__ = ["REPORT_SCHEMA_VERSION", "Report", "build_report", "render_text"]
