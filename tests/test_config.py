"""Configuration: one pass, every problem listed; dev keys generated once; production requires keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import ConfigError, load_settings

KEY = "k" * 32


def test_defaults_generate_dev_keys_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    first = load_settings(data_dir=tmp_path / "d")
    second = load_settings(data_dir=tmp_path / "d")
    assert first.secret_values() == second.secret_values()
    assert len(first.secret_values()[0]) >= 32
    assert (tmp_path / "d" / "secret_keys").stat().st_mode & 0o777 == 0o600
    assert first.permissions == ["read:account"]
    assert first.auth_methods == ["miauth", "legacy"]
    assert first.callback_url == "http://127.0.0.1:8000/callback"


def test_every_problem_is_listed_at_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TOBIRA_PUBLIC_URL", "https://login.example.com")
    monkeypatch.setenv("TOBIRA_PERMISSIONS", "read:account,write:everything")
    monkeypatch.setenv("TOBIRA_AUTH_METHODS", "miauth,carrier-pigeon")
    monkeypatch.setenv("TOBIRA_DEV_INSTANCES", "ftp://127.0.0.1:21")
    monkeypatch.setenv("TOBIRA_PROXY_ENDPOINTS", "notes/*,../etc")
    with pytest.raises(ConfigError) as caught:
        load_settings(data_dir=tmp_path)
    text = str(caught.value)
    assert "TOBIRA_SECRET_KEYS is required" in text
    assert "'write:everything'" in text
    assert "'carrier-pigeon'" in text
    assert "TOBIRA_DEV_INSTANCES" in text
    assert "TOBIRA_PROXY_ENDPOINTS" in text
    assert len(caught.value.problems) == 5


def test_short_keys_and_bad_numbers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TOBIRA_SECRET_KEYS", f"{KEY},short")
    monkeypatch.setenv("TOBIRA_SESSION_MAX_AGE", "-5")
    with pytest.raises(ConfigError) as caught:
        load_settings(data_dir=tmp_path)
    assert any("TOBIRA_SESSION_MAX_AGE" in p for p in caught.value.problems)
    # pydantic stops at field errors, so the key check needs a valid max age:
    monkeypatch.setenv("TOBIRA_SESSION_MAX_AGE", "60")
    with pytest.raises(ConfigError) as caught:
        load_settings(data_dir=tmp_path)
    assert caught.value.problems == ["TOBIRA_SECRET_KEYS: key 2 is shorter than 32 characters"]
    assert "short" not in str(caught.value).replace("shorter", "")


def test_production_with_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TOBIRA_PUBLIC_URL", "https://Login.Example.com/")
    monkeypatch.setenv("TOBIRA_SECRET_KEYS", f"{KEY}, {'n' * 40}")
    monkeypatch.setenv("TOBIRA_PERMISSIONS", "")
    settings = load_settings(data_dir=tmp_path)
    assert settings.is_production
    assert settings.public_origin == "https://login.example.com"
    assert settings.secret_values() == [KEY, "n" * 40]
    assert settings.permissions == []
    assert KEY not in repr(settings)
    assert not (tmp_path / "secret_keys").exists()


@pytest.mark.parametrize(
    "url",
    [
        "ftp://x.example",
        "https://u@x.example",
        "https://u@x.example/misskey",
        "x.example",
        "https://x.example/?q",
        "https://x.example/misskey?q",
        "https://x.example/misskey#top",
        "https://x.example/misskey/../admin",
        "https://x.example/./misskey",
        "https://x.example/mis%20skey",
        "https://x.example/a//b",
        "https://x.example/mis key",
        "https://x.example/mis\\key",
        "https://x.example/misskey;x",
    ],
)
def test_public_url_must_be_an_origin_or_a_plain_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str
) -> None:
    monkeypatch.setenv("TOBIRA_PUBLIC_URL", url)
    monkeypatch.setenv("TOBIRA_SECRET_KEYS", KEY)
    with pytest.raises(ConfigError) as caught:
        load_settings(data_dir=tmp_path)
    assert any("TOBIRA_PUBLIC_URL" in p for p in caught.value.problems)


@pytest.mark.parametrize(
    ("url", "base_path", "public_base"),
    [
        ("https://Example.com/misskey", "/misskey", "https://example.com/misskey"),
        ("https://example.com/misskey/", "/misskey", "https://example.com/misskey"),
        (
            "https://example.com/apps/Mis-skey_1.0~",
            "/apps/Mis-skey_1.0~",
            "https://example.com/apps/Mis-skey_1.0~",
        ),
        ("https://example.com/", "", "https://example.com"),
        ("https://example.com", "", "https://example.com"),
    ],
)
def test_public_url_with_a_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str, base_path: str, public_base: str
) -> None:
    monkeypatch.setenv("TOBIRA_PUBLIC_URL", url)
    monkeypatch.setenv("TOBIRA_SECRET_KEYS", KEY)
    settings = load_settings(data_dir=tmp_path)
    assert settings.base_path == base_path
    assert settings.public_base == public_base
    assert settings.issuer == public_base
    assert settings.callback_url == public_base + "/callback"
    assert settings.public_origin == "https://example.com"


def test_a_field_error_does_not_hide_the_other_problems(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TOBIRA_SESSION_MAX_AGE", "a month")
    monkeypatch.setenv("TOBIRA_PUBLIC_URL", "https://login.example.com/path?q")
    monkeypatch.setenv("TOBIRA_PERMISSIONS", "write:everything")
    with pytest.raises(ConfigError) as caught:
        load_settings(data_dir=tmp_path)
    problems = caught.value.problems
    assert problems[0].startswith("TOBIRA_SESSION_MAX_AGE: ")
    assert (
        "TOBIRA_PUBLIC_URL must be an origin, or an origin and a path, without query, fragment or user"
        in problems
    )
    assert "TOBIRA_SECRET_KEYS is required when TOBIRA_PUBLIC_URL is https" in problems
    assert "TOBIRA_PERMISSIONS: unknown permission 'write:everything'" in problems
    assert len(problems) == 4


def test_the_data_folder_is_the_users_not_the_working_directorys(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    settings = load_settings(secret_keys=[KEY])
    assert settings.data_dir == tmp_path / "xdg" / "tobira"
    assert settings.resolved_store_url == f"sqlite:///{tmp_path / 'xdg' / 'tobira' / 'tobira.sqlite3'}"


def test_the_operations_settings_are_read_and_checked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TOBIRA_LOG_FORMAT", "json")
    monkeypatch.setenv("TOBIRA_METRICS_TOKEN", "t" * 40)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    settings = load_settings(data_dir=tmp_path, secret_keys=[KEY])
    assert settings.log_format == "json"
    assert settings.metrics_token is not None and settings.metrics_token.get_secret_value() == "t" * 40
    assert "t" * 40 not in repr(settings)
    assert settings.prometheus_multiproc_dir == tmp_path

    monkeypatch.setenv("TOBIRA_LOG_FORMAT", "xml")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    with pytest.raises(ConfigError) as caught:
        load_settings(data_dir=tmp_path, secret_keys=[KEY])
    assert caught.value.problems == [
        "TOBIRA_LOG_FORMAT: Input should be 'text' or 'json'",
        f"PROMETHEUS_MULTIPROC_DIR: '{tmp_path / 'missing'}' is not a folder "
        "(create it, empty, before starting)",
    ]


def test_without_settings_there_are_no_metrics_and_text_logs(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, secret_keys=[KEY])
    assert settings.metrics_token is None
    assert settings.log_format == "text"
    assert settings.prometheus_multiproc_dir is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql://tobira:hunter2@db/tobira", "TOBIRA_STORE_URL: unsupported store URL scheme 'mysql'"),
        ("redis+sentinel://:hunter2@s1:26379,s2:26379", "TOBIRA_STORE_URL: a Sentinel store URL is redis+"),
        ("redis+sentinel://:hunter2@s1:x/tobira", "TOBIRA_STORE_URL: a Sentinel store URL is redis+"),
        ("sqlite://hunter2/store.db", "TOBIRA_STORE_URL: an SQLite store URL is sqlite:///"),
    ],
    ids=["other-database", "sentinel-without-service", "sentinel-bad-port", "sqlite-with-host"],
)
def test_a_bad_store_url_is_a_start_up_problem_that_hides_the_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str, problem: str
) -> None:
    monkeypatch.setenv("TOBIRA_STORE_URL", url)
    with pytest.raises(ConfigError) as caught:
        load_settings(data_dir=tmp_path)
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(problem)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis://:pw@127.0.0.1:6379/0",
        "rediss://redis.internal/1",
        "unix:///run/redis.sock",
        "redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26379,10.0.0.3/tobira/2",
    ],
)
def test_store_urls_are_checked_without_connecting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str
) -> None:
    monkeypatch.setenv("TOBIRA_STORE_URL", url)
    assert load_settings(data_dir=tmp_path).resolved_store_url == url
