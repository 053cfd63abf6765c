"""SD1.5 and SDXL LoRAs written by diffusers + PEFT (tests/fixtures), built once per module run."""

import pytest


@pytest.fixture(scope="session")
def sd_fixtures(tmp_path_factory):
    from tests.fixtures.common import torch_threads
    from tests.fixtures.peft_fixtures import build_sd15, build_sdxl

    out = tmp_path_factory.mktemp("block_fixtures")
    with torch_threads(1):
        return build_sd15(out) | build_sdxl(out)


@pytest.fixture(scope="session")
def flux_fixture(tmp_path_factory):
    from tests.fixtures.common import torch_threads
    from tests.fixtures.peft_fixtures import build_flux

    with torch_threads(1):
        return build_flux(tmp_path_factory.mktemp("block_flux"))["flux_peft_diffusers"]
