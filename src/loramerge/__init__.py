"""loramerge: compose several diffusion-model LoRAs into one, resolving interference per weight group."""

__version__ = "0.1.0"
TOOL_NAME = "loramerge"

__all__ = ["__version__", "TOOL_NAME"]
