"""Session fixtures shared by every test folder (the real-library LoRA files and tiny base models)."""

from tests.fixtures.conftest_plugin import base_models, real_fixtures  # noqa: F401
