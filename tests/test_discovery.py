"""Discovery as a unit: what it reads from api/meta and nodeinfo, its cache, and one lookup per burst."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from app.discovery import Discovery
from app.errors import InstanceUnreachable, NotMisskey
from app.hosts import Instance

SHARKEY = Instance(host="sharkey.example", origin="https://sharkey.example", dev=False)
META = {
    "name": "Shark",
    "version": "2024.11.0",
    "iconUrl": "https://sharkey.example/i.png",
    "features": {"miauth": True},
}
NODEINFO = {"software": {"name": "Sharkey", "version": "2024.11.0-shark"}}


class Upstream:
    """A fake instance for httpx.MockTransport; counts what it is asked."""

    def __init__(self, meta: object = META, meta_status: int = 200, delay: float = 0.0) -> None:
        self.meta, self.meta_status, self.delay = meta, meta_status, delay
        self.paths: list[str] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        await asyncio.sleep(self.delay)
        if request.url.path == "/api/meta":
            return httpx.Response(self.meta_status, json=self.meta)
        if request.url.path == "/.well-known/nodeinfo":
            links = [
                {"rel": "http://nodeinfo.diaspora.software/ns/schema/2.1", "href": "https://evil.example/ni"},
                {
                    "rel": "http://nodeinfo.diaspora.software/ns/schema/2.0",
                    "href": "https://sharkey.example/ni",
                },
            ]
            return httpx.Response(200, json={"links": links})
        if request.url.path == "/ni":
            return httpx.Response(200, content=json.dumps(NODEINFO))
        return httpx.Response(404)


def discovery(upstream: Upstream, **kwargs: float) -> Discovery:
    return Discovery(httpx.AsyncClient(transport=httpx.MockTransport(upstream)), **kwargs)


@pytest.mark.anyio
async def test_a_fork_is_recognised_and_nodeinfo_links_stay_on_the_server() -> None:
    upstream = Upstream()
    info = await discovery(upstream).lookup(SHARKEY)
    assert (info.name, info.version, info.miauth) == ("Shark", "2024.11.0", True)
    assert (info.software, info.software_version) == ("sharkey", "2024.11.0-shark")
    assert info.icon_url == "https://sharkey.example/i.png"
    assert "/ni" in upstream.paths  # the same-origin link was followed, the other one never


@pytest.mark.anyio
async def test_a_burst_of_lookups_sends_one_request_and_the_answer_is_cached() -> None:
    upstream = Upstream(delay=0.05)
    found = discovery(upstream)
    answers = await asyncio.gather(*(found.lookup(SHARKEY) for _ in range(20)))
    assert len(set(answers)) == 1
    assert upstream.paths.count("/api/meta") == 1
    await found.lookup(SHARKEY)
    assert upstream.paths.count("/api/meta") == 1


@pytest.mark.anyio
async def test_a_failed_burst_fails_everyone_and_is_not_cached() -> None:
    upstream = Upstream(meta_status=503, delay=0.05)
    found = discovery(upstream)
    results = await asyncio.gather(*(found.lookup(SHARKEY) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(result, InstanceUnreachable) for result in results)
    assert upstream.paths.count("/api/meta") == 1
    with pytest.raises(InstanceUnreachable):
        await found.lookup(SHARKEY)
    assert upstream.paths.count("/api/meta") == 2


@pytest.mark.anyio
async def test_one_caller_giving_up_does_not_cancel_the_others() -> None:
    found = discovery(Upstream(delay=0.1))
    patient = asyncio.create_task(found.lookup(SHARKEY))
    impatient = asyncio.create_task(found.lookup(SHARKEY))
    await asyncio.sleep(0.02)
    impatient.cancel()
    assert (await patient).name == "Shark"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "meta",
    [
        pytest.param([], id="array"),
        pytest.param({"name": "x"}, id="no-version"),
        pytest.param("hi", id="string"),
    ],
)
async def test_answers_that_are_not_misskey(meta: object) -> None:
    with pytest.raises(NotMisskey):
        await discovery(Upstream(meta=meta)).lookup(SHARKEY)


@pytest.mark.anyio
async def test_without_features_miauth_it_is_not_miauth() -> None:
    info = await discovery(Upstream(meta={"version": "12.20.0"})).lookup(SHARKEY)
    assert info.miauth is False
