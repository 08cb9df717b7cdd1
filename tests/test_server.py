"""``redisq serve``'s start-up checks that need no process (the processes are in test_cli.py)."""

from __future__ import annotations

import pytest

from redisq.config import Config
from redisq.server import public_url_port_warning


@pytest.mark.parametrize("public_url, port", [
    (None, 7601),  # receipts go to serve's own host and port
    ("http://127.0.0.1:7601", 7601),
    ("http://coordinator", 80),
    ("https://redisq.example.com", 443),
])
def test_no_warning_when_public_url_names_the_port_serve_listens_on(public_url, port):
    assert public_url_port_warning(Config(public_url=public_url, port=port)) is None


@pytest.mark.parametrize("public_url, named", [
    ("http://127.0.0.1:7575", 7575),
    ("http://coordinator", 80),
    ("https://redisq.example.com", 443),
])
def test_a_warning_naming_both_ports_when_public_url_names_another(public_url, named):
    warning = public_url_port_warning(Config(public_url=public_url, port=7601))
    assert warning is not None
    assert f"names port {named}" in warning and "listens on port 7601" in warning and "202" in warning
