"""The tool's name and version: the bottom of the import graph (imports nothing)."""

__version__ = "0.1.0"
TOOL_NAME = "loramerge"
