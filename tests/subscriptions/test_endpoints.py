"""Where a rest-hook may send (app/subscriptions/endpoints.py): https only but to the loopback interface or
with FHIR_SUBSCRIPTION_ALLOW_HTTP, no address inside private networks but the hosts of
FHIR_SUBSCRIPTION_ALLOWED_HOSTS, and a host name judged again by what it resolves to before each delivery.
Name resolution is the network seam: a test answers it with addresses of its choosing."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx
import pytest

from app.subscriptions.endpoints import EndpointPolicy
from tests.subscriptions.conftest import Delivery, post, subscribe, task

PRIVATE = "private, link-local or reserved address"
HTTPS = "must be https"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://hooks.example.org/care-team", None),
        ("https://93.184.216.34/hooks", None),
        ("http://127.0.0.1:9000/hooks", None),
        ("http://localhost:9000/hooks", None),
        ("http://[::1]:9000/hooks", None),
        ("http://hooks.example.org/care-team", HTTPS),
        ("https://10.1.2.3/hooks", PRIVATE),
        ("https://172.16.0.1/hooks", PRIVATE),
        ("https://192.168.1.20/hooks", PRIVATE),
        ("https://100.64.0.1/hooks", PRIVATE),  # shared address space (carrier-grade NAT)
        ("https://169.254.169.254/latest/meta-data", PRIVATE),  # cloud metadata
        ("https://[fd00::1]/hooks", PRIVATE),
        ("https://[fe80::1]/hooks", PRIVATE),
        ("https://[::ffff:10.0.0.1]/hooks", PRIVATE),  # an IPv4 address inside, written as IPv6
        ("https://224.0.0.1/hooks", PRIVATE),  # multicast
        ("https://[ff02::1]/hooks", PRIVATE),
        ("https://0.0.0.0/hooks", PRIVATE),
        ("https://user:secret@hooks.example.org/x", "must not carry credentials"),
        ("ftp://hooks.example.org/x", "must be an http(s) URL"),
        ("https://hooks.example.org:port/x", "is not a valid URL"),
    ],
)
def test_an_endpoint_is_judged_by_scheme_and_address(url: str, says: str | None) -> None:
    problem = EndpointPolicy().problem_with(url)
    if says is None:
        assert problem is None
    else:
        assert problem is not None and says in problem


def test_allow_http_lifts_only_the_https_rule() -> None:
    policy = EndpointPolicy(allow_http=True)
    assert policy.problem_with("http://hooks.example.org/care-team") is None
    problem = policy.problem_with("http://10.1.2.3/hooks")
    assert problem is not None and PRIVATE in problem


def test_an_allowed_host_may_be_inside_but_still_needs_https() -> None:
    policy = EndpointPolicy(allowed_hosts=frozenset({"10.1.2.3", "hooks.internal"}))
    assert policy.problem_with("https://10.1.2.3/hooks") is None
    assert policy.problem_with("https://hooks.internal/hooks") is None
    problem = policy.problem_with("http://10.1.2.3/hooks")
    assert problem is not None and HTTPS in problem
    assert EndpointPolicy(True, frozenset({"10.1.2.3"})).problem_with("http://10.1.2.3/hooks") is None
    other = policy.problem_with("https://10.1.2.4/hooks")  # only the hosts listed
    assert other is not None and PRIVATE in other


@pytest.fixture
async def resolver(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Host name -> the address it resolves to now, for this test's event loop; unknown names do not
    resolve."""
    names: dict[str, str] = {}

    async def getaddrinfo(host: str, port: Any, **_: Any) -> list[tuple[Any, ...]]:
        if host not in names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        address = names[host]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port or 0))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    return names


async def test_a_name_is_judged_by_what_it_resolves_to_now(resolver: dict[str, str]) -> None:
    policy = EndpointPolicy()
    resolver["hooks.example.org"] = "93.184.216.34"
    assert await policy.problem_resolving("https://hooks.example.org/care-team") is None
    resolver["hooks.example.org"] = "10.0.0.5"  # the same name, pointed inside since
    problem = await policy.problem_resolving("https://hooks.example.org/care-team")
    assert problem == "hooks.example.org resolves to a private, link-local or reserved address"
    resolver["hooks.example.org"] = "fd00::5"
    assert await policy.problem_resolving("https://hooks.example.org/care-team") == problem
    assert await policy.problem_resolving("https://gone.example.org/x") == "gone.example.org does not resolve"


async def test_an_allowed_name_is_not_resolved(resolver: dict[str, str]) -> None:
    resolver["hooks.internal"] = "10.0.0.5"
    policy = EndpointPolicy(allowed_hosts=frozenset({"hooks.internal"}))
    assert await policy.problem_resolving("https://hooks.internal/hooks") is None


async def test_a_delivery_to_a_name_now_pointing_inside_is_refused_and_recorded(
    client: httpx.AsyncClient, delivery: Delivery, resolver: dict[str, str]
) -> None:
    resolver["hooks.example.org"] = "10.0.0.5"
    subscription_id = await subscribe(
        client, "Task?owner=Practitioner/p1", endpoint="https://hooks.example.org/care-team"
    )
    await post(client, task())
    await delivery.round()
    assert delivery.receiver.requests == []
    state = await delivery.state(subscription_id)
    assert state.delivered_through == 0 and state.attempts == 1
    assert state.last_error == (
        "refused: the endpoint hooks.example.org resolves to a private, link-local or reserved address"
    )
