"""The pages a person opens (/, /docs, /redoc) over plain HTTP: each carries a Content-Security-Policy that runs no
inline script, and its HTML names no other origin (everything it loads is the server's own, under /static)."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

PAGES = ["/", "/docs", "/redoc"]


def _directives(policy: str) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for part in policy.split(";"):
        words = part.split()
        if words:
            directives.setdefault(words[0].lower(), words[1:])
    return directives


@pytest.mark.parametrize("path", PAGES)
def test_a_page_has_a_policy_that_runs_no_inline_script(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers.get("content-security-policy")
    assert policy, f"{path} has no content-security-policy header"
    directives = _directives(policy)
    # Without a script-src of its own, script falls back to default-src.
    scripts = directives.get("script-src", directives.get("default-src"))
    assert scripts is not None, f"{path}'s policy restricts no script: {policy}"
    assert "'unsafe-inline'" not in scripts, policy
    assert "*" not in scripts, policy


@pytest.mark.parametrize("path", PAGES)
def test_a_page_names_no_other_origin_and_its_files_are_served(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200, response.text[:500]
    html = response.text
    assert re.findall(r"https?://[^\s\"'<>]*", html) == []
    links = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", html)
    assert [link for link in links if link.startswith("//")] == [], "a protocol-relative URL is another origin's"
    for linked in (link for link in links if link.startswith("/")):
        assert client.get(linked).status_code == 200, f"{path} links {linked}, which the server does not serve"


def test_the_pages_files_are_revalidated_on_each_load(client: TestClient) -> None:
    first = client.get("/static/playground/app.js")
    assert first.status_code == 200 and first.headers["cache-control"] == "no-cache"
    assert first.headers["content-type"].startswith("text/javascript")
    again = client.get("/static/playground/app.js", headers={"if-none-match": first.headers["etag"]})
    assert again.status_code == 304
