"""Where a rest-hook may send notifications: the server must not become a way into private networks.

A Subscription makes the server send requests to a URL its author chose,
from inside the server's network (server-side request forgery). So:

- ``https`` only, except to the loopback interface or with
  ``FHIR_SUBSCRIPTION_ALLOW_HTTP=true`` (a test set-up);
- no user name or password in the URL (credentials belong in
  ``channel.header``, which is never logged; a URL is);
- no address that is not globally routable (private, shared, link-local,
  cloud metadata such as 169.254.169.254, multicast, reserved), except the
  loopback interface and hosts listed in ``FHIR_SUBSCRIPTION_ALLOWED_HOSTS``.
  A literal address is judged when the Subscription is written; a name is
  resolved and judged again before every delivery, so a name that later
  points inside is refused then;
- redirects are never followed (``app.subscriptions.rest_hook``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None


def _inside(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Not reachable on the public internet, and not the loopback interface. (Python counts IPv4
    multicast as global: it is not an endpoint anywhere.)"""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_loopback and (not address.is_global or address.is_multicast)


@dataclass(frozen=True, slots=True)
class EndpointPolicy:
    allow_http: bool = False
    allowed_hosts: frozenset[str] = frozenset()

    def problem_with(self, url: str) -> str | None:
        """Why ``url`` may not be notified (judged without the network), or None."""
        try:
            parts = urlsplit(url)
            host = parts.hostname
            parts.port  # noqa: B018 -- raises on a port that is not a number
        except ValueError:
            return "is not a valid URL"
        if parts.scheme not in ("http", "https") or not host:
            return "must be an http(s) URL"
        if parts.username is not None or parts.password is not None:
            return "must not carry credentials; send them in channel.header"
        if host in self.allowed_hosts:
            return None if parts.scheme == "https" or self.allow_http or self.is_loopback(host) else _HTTPS
        address = _address(host)
        if address is not None and _inside(address):
            return f"{host} is a private, link-local or reserved address (see FHIR_SUBSCRIPTION_ALLOWED_HOSTS)"
        if parts.scheme == "http" and not self.allow_http and not self.is_loopback(host):
            return _HTTPS
        return None

    @staticmethod
    def is_loopback(host: str) -> bool:
        address = _address(host)
        return host.lower() in LOOPBACK_NAMES if address is None else address.is_loopback

    async def problem_resolving(self, url: str) -> str | None:
        """``problem_with``, then the addresses the host name resolves to now (before each delivery)."""
        problem = self.problem_with(url)
        if problem is not None:
            return problem
        host = urlsplit(url).hostname or ""
        if host in self.allowed_hosts or _address(host) is not None:
            return None
        try:
            found = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError:
            return f"{host} does not resolve"
        for _family, _type, _proto, _name, sockaddr in found:
            address = _address(str(sockaddr[0]))
            if address is not None and _inside(address):
                return f"{host} resolves to a private, link-local or reserved address"
        return None


_HTTPS = "must be https (http only to the loopback interface, or with FHIR_SUBSCRIPTION_ALLOW_HTTP=true)"
