"""tobira: sign in with Misskey. The version is read from here by pyproject.toml and `tobira --version`."""

__version__ = "0.1.0"
