"""The app's login: one parser for `tunelab app --auth`, `python -m app --auth` and $TUNELAB_AUTH. Light (no
gradio), so that the CLI checks the value in one line before the app loads."""

from __future__ import annotations

import os

from tunelab.errors import ConfigError


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """("user", "password") from "user:password" (else $TUNELAB_AUTH); None for no login."""
    value = value or os.environ.get("TUNELAB_AUTH")
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ConfigError("--auth must be user:password (or set TUNELAB_AUTH=user:password)")
    return user, password
