"""The vLLM engine environment for the tests that need it (``make engine-env`` builds ``.venv-vllm``).

Without one those tests skip, saying how to make one; CI sets ``MOESAIC_REQUIRE_VLLM=1`` so that there a missing
environment fails instead of skipping.
"""

from __future__ import annotations

import os

import pytest

from experts.config._engine_choice import EngineEnvironment, find_engine_environment


def engine_environment(module_level: bool = True) -> EngineEnvironment:
    """The engine environment; where there is none, skip (the module, or the calling test), or fail in CI."""
    environment = find_engine_environment()
    if environment.python is None:
        if os.environ.get("MOESAIC_REQUIRE_VLLM") == "1":
            raise RuntimeError(f"MOESAIC_REQUIRE_VLLM=1 but there is no engine environment: {environment.source}")
        pytest.skip(
            f"no vLLM engine environment ({environment.source}): `make engine-env`", allow_module_level=module_level
        )
    return environment
