"""The CLI's settings: each option's environment variable (flag > variable > default), and ``--version``.

``moesaic serve`` is run up to the point where it would listen: uvicorn and the app factory are replaced by
recorders, so what reaches them is exactly what the command resolved.
"""

from __future__ import annotations

import importlib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli.main import app
from orchestrator.server.settings import ServeSettings

cli_main = importlib.import_module("orchestrator.cli.main")  # the module (the package exports its main())

SETTINGS_VARIABLES = (
    "MOESAIC_POOL",
    "MOESAIC_RAY_ADDRESS",
    "MOESAIC_NUM_CPUS",
    "MOESAIC_HOST",
    "MOESAIC_PORT",
    "MOESAIC_CONFIG",
    "MOESAIC_LOG_FORMAT",
    "MOESAIC_LOG_LEVEL",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in SETTINGS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def pool_file(tmp_path: Path) -> Path:
    path = tmp_path / "env-pool.yaml"
    document = {
        "name": "env-pool",
        "experts": [{"name": "from-env", "backend": "echo", "model": "echo-1", "skills": {"general": 1.0}}],
    }
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def serve_recorder(clean_env: pytest.MonkeyPatch) -> dict[str, Any]:
    """Replace uvicorn.run, the app factory and the log set-up by recorders; returns what they received."""
    import uvicorn

    import orchestrator.server.api.app as app_module

    seen: dict[str, Any] = {}

    def create_app(settings: ServeSettings, service: Any = None, plugins: Any = ()) -> str:
        seen["settings"], seen["plugins"] = settings, [type(plugin).__name__ for plugin in plugins]
        return "the app"

    def run(application: Any, **options: Any) -> None:
        seen["app"], seen["host"], seen["port"] = application, options["host"], options["port"]

    clean_env.setattr(app_module, "create_app", create_app)
    clean_env.setattr(uvicorn, "run", run)
    clean_env.setattr(cli_main, "_configure_logs", lambda fmt, level: seen.update(log=(fmt, level)))
    return seen


def test_serve_takes_pool_host_port_and_logs_from_the_environment(
    serve_recorder: dict[str, Any], pool_file: Path, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("MOESAIC_POOL", str(pool_file))
    clean_env.setenv("MOESAIC_HOST", "0.0.0.0")
    clean_env.setenv("MOESAIC_PORT", "9123")
    clean_env.setenv("MOESAIC_NUM_CPUS", "1")
    clean_env.setenv("MOESAIC_LOG_FORMAT", "text")
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 0, result.output
    settings = serve_recorder["settings"]
    assert (settings.pool, settings.host, settings.port, settings.num_cpus) == (str(pool_file), "0.0.0.0", 9123, 1)
    assert (serve_recorder["host"], serve_recorder["port"]) == ("0.0.0.0", 9123)
    assert serve_recorder["log"] == ("text", "info")
    assert serve_recorder["plugins"] == ["McpEndpoint"]  # MCP on the API app at /mcp, by default


def test_the_service_config_can_switch_the_mcp_endpoint_off(
    serve_recorder: dict[str, Any], pool_file: Path, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "service.yaml"
    config.write_text("mcp:\n  enabled: false\n")
    clean_env.setenv("MOESAIC_CONFIG", str(config))
    result = CliRunner().invoke(app, ["serve", "--pool", str(pool_file)])
    assert result.exit_code == 0, result.output
    assert serve_recorder["plugins"] == []


def test_a_flag_beats_its_variable(
    serve_recorder: dict[str, Any], pool_file: Path, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("MOESAIC_POOL", "no-such-pool")
    clean_env.setenv("MOESAIC_PORT", "9123")
    result = CliRunner().invoke(app, ["serve", "--pool", str(pool_file), "--port", "9200"])
    assert result.exit_code == 0, result.output
    assert (serve_recorder["settings"].pool, serve_recorder["port"]) == (str(pool_file), 9200)


def test_a_bad_variable_is_named(serve_recorder: dict[str, Any], clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("MOESAIC_PORT", "eighty")
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2 and "--port" in result.output and "MOESAIC_PORT" in result.output
    assert "settings" not in serve_recorder


def test_other_commands_take_the_pool_from_the_environment(pool_file: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("MOESAIC_POOL", str(pool_file))
    result = CliRunner().invoke(app, ["experts"])
    assert result.exit_code == 0 and "from-env" in result.output and "env-pool" in result.output
    assert "MOESAIC_POOL" in CliRunner().invoke(app, ["experts", "--help"]).output


def test_serve_settings_read_the_environment_under_explicit_values(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("MOESAIC_HOST", "10.0.0.1")
    clean_env.setenv("MOESAIC_RAY_ADDRESS", "")  # empty: unset
    assert ServeSettings().host == "10.0.0.1" and ServeSettings().ray_address is None
    assert ServeSettings.from_env(host="127.0.0.1", port=None).host == "127.0.0.1"


def test_version_prints_the_installed_distributions_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"moesaic {version('moesaic')}"
