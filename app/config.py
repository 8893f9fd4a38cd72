"""Configuration: the `TOBIRA_*` environment variables (or a `.env` file), validated in one pass.

`load_settings()` is the only place that reads the environment. Every problem found is collected and
raised together as one `ConfigError`, so an operator fixes a deployment in one go.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from platformdirs import user_data_dir
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.access import load_rules
from app.endpoints import validate_patterns
from app.errors import InvalidInstance
from app.hosts import DevOrigin, canonical_host, parse_dev_origin
from app.permissions import KNOWN_PERMISSIONS
from app.store import store_url_problem

AUTH_METHODS = ("miauth", "legacy", "oauth2")
MIN_SECRET_LENGTH = 32
DEV_KEYS_FILE = "secret_keys"

CommaList = Annotated[list[str], NoDecode]
# A path prefix: "/"-separated segments of unreserved characters, which every proxy and browser passes
# unchanged: no percent-encoding, no empty segment (dot segments are refused apart).
_BASE_PATH = re.compile(r"(?:/[A-Za-z0-9._~-]+)+")
_DOMAIN = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


class ConfigError(Exception):
    """Start-up configuration is unusable; `problems` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("tobira cannot start:\n" + "\n".join(f"  - {p}" for p in problems))


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Everything an operator can set. Field `x` is the variable `TOBIRA_X`."""

    model_config = SettingsConfigDict(
        env_prefix="TOBIRA_", env_file=".env", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    public_url: str = "http://127.0.0.1:8000"
    secret_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    app_name: str = "tobira"
    app_icon: str | None = None
    permissions: CommaList = Field(default_factory=lambda: ["read:account"])
    instances_allow: CommaList = Field(default_factory=list)
    instances_deny: CommaList = Field(default_factory=list)
    dev_instances: CommaList = Field(default_factory=list)
    session_max_age: int = Field(default=30 * 24 * 3600, gt=0)
    data_dir: Path = Field(default_factory=lambda: Path(user_data_dir("tobira", appauthor=False)))
    store_url: str | None = None
    auth_methods: CommaList = Field(default_factory=lambda: ["miauth", "legacy"])
    proxy_endpoints: CommaList | None = None
    connect_timeout: float = Field(default=5.0, gt=0)
    request_timeout: float = Field(default=15.0, gt=0)
    max_response_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    max_upload_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    per_host_connections: int = Field(default=32, gt=0)
    resolve_timeout: float = Field(default=3.0, gt=0)
    resolve_max: int = Field(default=128, gt=0)
    resolve_per_client: int = Field(default=4, gt=0)
    login_rate_limit: int = Field(default=30, ge=0)
    rate_limit_ipv6_prefix: int = Field(default=64, ge=32, le=128)
    discovery_cache_seconds: int = Field(default=600, ge=0)
    oidc_clients: Path | None = None
    log_level: str = Field(default="INFO", pattern="(?i)^(debug|info|warning|error|critical)$")
    log_format: Literal["text", "json"] = "text"
    metrics_token: SecretStr | None = None
    # prometheus-client's own variable (it reads it too): where worker processes keep their metrics.
    prometheus_multiproc_dir: Path | None = Field(
        default=None, validation_alias=AliasChoices("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")
    )
    cookie_domain: str | None = None
    access_rules: Path | None = None
    # The reverse proxies whose X-Forwarded-* headers are believed: uvicorn's own variable, read by tobira
    # (which handles those headers itself, see app.forwarded), so one setting says it for both.
    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        validation_alias=AliasChoices("FORWARDED_ALLOW_IPS", "TOBIRA_FORWARDED_ALLOW_IPS"),
    )

    _split_lists = field_validator(
        "secret_keys",
        "permissions",
        "instances_allow",
        "instances_deny",
        "dev_instances",
        "auth_methods",
        "proxy_endpoints",
        mode="before",
    )(_split)

    @property
    def base_path(self) -> str:
        """The path tobira lives under ("/misskey"), or "" at the root of its origin."""
        return urlsplit(self.public_url).path.rstrip("/")

    @property
    def public_base(self) -> str:
        """Where tobira's routes are: its origin and its path; every absolute URL tobira makes starts so."""
        return self.public_origin + self.base_path

    @cached_property  # asked on every proxied call
    def public_origin(self) -> str:
        """Scheme and authority of `public_url`, lowercased, without a trailing slash."""
        parts = urlsplit(self.public_url)
        return f"{parts.scheme.lower()}://{parts.netloc.lower()}"

    @field_validator("cookie_domain", "access_rules", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def public_host(self) -> str:
        return (urlsplit(self.public_url).hostname or "").lower()

    @property
    def issuer(self) -> str:
        """The OpenID provider's issuer identifier: tobira's public URL, without a trailing slash."""
        return self.public_base

    @property
    def is_production(self) -> bool:
        return self.public_url.lower().startswith("https://")

    @property
    def callback_url(self) -> str:
        return self.public_base + "/callback"

    @property
    def dev_origins(self) -> tuple[DevOrigin, ...]:
        return tuple(parse_dev_origin(origin) for origin in self.dev_instances)

    @property
    def resolved_store_url(self) -> str:
        return self.store_url or f"sqlite:///{(self.data_dir / 'tobira.sqlite3').resolve()}"

    def secret_values(self) -> list[str]:
        return [key.get_secret_value() for key in self.secret_keys]


# The checks pydantic cannot express on one field, one concern each; every one runs, so that start-up lists
# every problem at once.


def _check_public_url(settings: Settings) -> list[str]:
    parts = urlsplit(settings.public_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return ["TOBIRA_PUBLIC_URL must be an http or https URL such as https://login.example.com"]
    if "?" in settings.public_url or "#" in settings.public_url or parts.username is not None:
        return [
            "TOBIRA_PUBLIC_URL must be an origin, or an origin and a path, without query, fragment or user"
        ]
    path = parts.path.rstrip("/")
    if path and (
        not _BASE_PATH.fullmatch(path) or any(segment in (".", "..") for segment in path.split("/"))
    ):
        return [
            "TOBIRA_PUBLIC_URL: its path must be plain segments such as /misskey "
            "(letters, digits and - . _ ~; no dot segments, percent-encoding or empty segments)"
        ]
    return []


def _check_secret_keys(settings: Settings) -> list[str]:
    problems = []
    if settings.is_production and not settings.secret_keys:
        problems.append("TOBIRA_SECRET_KEYS is required when TOBIRA_PUBLIC_URL is https")
    for index, key in enumerate(settings.secret_keys, start=1):
        if len(key.get_secret_value()) < MIN_SECRET_LENGTH:
            problems.append(f"TOBIRA_SECRET_KEYS: key {index} is shorter than {MIN_SECRET_LENGTH} characters")
    return problems


def _check_permissions(settings: Settings) -> list[str]:
    return [
        f"TOBIRA_PERMISSIONS: unknown permission {name!r}"
        for name in settings.permissions
        if name not in KNOWN_PERMISSIONS
    ]


def _check_auth_methods(settings: Settings) -> list[str]:
    if not settings.auth_methods:
        return ["TOBIRA_AUTH_METHODS must name at least one method"]
    known = ", ".join(AUTH_METHODS)
    return [
        f"TOBIRA_AUTH_METHODS: unknown method {method!r} (use {known})"
        for method in settings.auth_methods
        if method not in AUTH_METHODS
    ]


def _check_dev_instances(settings: Settings) -> list[str]:
    problems = []
    for origin in settings.dev_instances:
        try:
            parse_dev_origin(origin)
        except ValueError as exc:
            problems.append(f"TOBIRA_DEV_INSTANCES: {origin!r}: {exc}")
    return problems


def _check_instance_lists(settings: Settings) -> list[str]:
    problems = []
    for variable, patterns in (
        ("TOBIRA_INSTANCES_ALLOW", settings.instances_allow),
        ("TOBIRA_INSTANCES_DENY", settings.instances_deny),
    ):
        for pattern in patterns:
            try:
                canonical_host(pattern.removeprefix("*."))
            except InvalidInstance:
                problems.append(f"{variable}: {pattern!r} is not a host name or *.domain")
    return problems


def _check_proxy_endpoints(settings: Settings) -> list[str]:
    if settings.proxy_endpoints is None:
        return []
    return [f"TOBIRA_PROXY_ENDPOINTS: {problem}" for problem in validate_patterns(settings.proxy_endpoints)]


def _check_app_identity(settings: Settings) -> list[str]:
    """What Misskey's consent screen accepts: a name of at most 128 characters, an https icon of 512."""
    problems = []
    if settings.app_icon and not settings.app_icon.startswith("https://"):
        problems.append("TOBIRA_APP_ICON must be an https URL")
    if len(settings.app_name) > 128:
        problems.append("TOBIRA_APP_NAME must be at most 128 characters (Misskey refuses longer names)")
    if settings.app_icon and len(settings.app_icon) > 512:
        problems.append("TOBIRA_APP_ICON must be at most 512 characters (Misskey refuses longer URLs)")
    return problems


def _check_oidc_clients(settings: Settings) -> list[str]:
    """Every problem of the OpenID clients file, when there is one."""
    if settings.oidc_clients is None:
        return []
    from app.oidc.clients import ClientsFileError, load_clients  # the clients file needs this module

    try:
        load_clients(settings.oidc_clients)
    except ClientsFileError as exc:
        return [f"TOBIRA_OIDC_CLIENTS: {problem}" for problem in exc.problems]
    return []


def _check_cookie_domain(settings: Settings) -> list[str]:
    """A shared cookie needs https, and a domain the browser lets tobira's own host set it for."""
    domain = settings.cookie_domain
    if domain is None:
        return []
    problems = []
    if not _DOMAIN.fullmatch(domain) or "." not in domain:
        problems.append(f"TOBIRA_COOKIE_DOMAIN: {domain!r} is not a domain such as example.com (lowercase)")
    elif settings.public_host != domain and not settings.public_host.endswith("." + domain):
        problems.append(
            f"TOBIRA_COOKIE_DOMAIN: tobira's own host {settings.public_host!r} must be {domain!r} or below it"
        )
    if not settings.is_production:
        problems.append("TOBIRA_COOKIE_DOMAIN needs an https TOBIRA_PUBLIC_URL (its cookie is Secure)")
    return problems


def _check_access_rules(settings: Settings) -> list[str]:
    return load_rules(settings.access_rules)[1]


def _check_store_url(settings: Settings) -> list[str]:
    problem = store_url_problem(settings.resolved_store_url)
    return [] if problem is None else [f"TOBIRA_STORE_URL: {problem}"]


def _check_resolution(settings: Settings) -> list[str]:
    if settings.resolve_per_client > settings.resolve_max:
        return ["TOBIRA_RESOLVE_PER_CLIENT must not be more than TOBIRA_RESOLVE_MAX"]
    return []


def _check_prometheus_multiproc_dir(settings: Settings) -> list[str]:
    folder = settings.prometheus_multiproc_dir
    if folder is not None and not folder.is_dir():
        return [
            f"PROMETHEUS_MULTIPROC_DIR: {str(folder)!r} is not a folder (create it, empty, before starting)"
        ]
    return []


CHECKS: tuple[Callable[[Settings], list[str]], ...] = (
    _check_public_url,
    _check_secret_keys,
    _check_permissions,
    _check_auth_methods,
    _check_dev_instances,
    _check_instance_lists,
    _check_proxy_endpoints,
    _check_app_identity,
    _check_resolution,
    _check_store_url,
    _check_oidc_clients,
    _check_cookie_domain,
    _check_access_rules,
    _check_prometheus_multiproc_dir,
)


def _with_dev_keys(settings: Settings) -> Settings:
    """Outside production, generate secret keys once and keep them in the data directory."""
    if settings.secret_keys or settings.is_production:
        return settings
    path = settings.data_dir / DEV_KEYS_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_urlsafe(32) + "\n")
    keys = [SecretStr(line.strip()) for line in path.read_text().splitlines() if line.strip()]
    return settings.model_copy(update={"secret_keys": keys})


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the configuration; raise ConfigError listing every problem.

    A field that fails its own validation (a number that is none) is reported, then taken at its default
    so that the checks across fields still run and report what else is wrong.
    """
    problems: list[str] = []
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        errors = exc.errors()
        problems += [f"TOBIRA_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in errors]
        failed = {str(e["loc"][0]) for e in errors if e["loc"]}
        defaults = {
            name: Settings.model_fields[name].get_default(call_default_factory=True) for name in failed
        }
        settings = Settings(**{**overrides, **defaults})
    problems += [problem for check in CHECKS for problem in check(settings)]
    if problems:
        raise ConfigError(problems)
    return _with_dev_keys(settings)
