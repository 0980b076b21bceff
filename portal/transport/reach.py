"""Which servers a tenant may make us connect to, and connecting to exactly the address checked.

With several MSPs in one installation, a server an MSP admin types in (or a job later connects
to) must not be this machine, a link-local address (cloud metadata at 169.254.169.254), an
unspecified, multicast or reserved address, nor in a network the operator denied, unless the
operator allowed its network. Private ranges stay allowed: MSPs reach on-premises servers there.

The host name is resolved once; every address it resolves to is checked, and the connection goes
to those checked addresses, never to a second lookup (no DNS rebinding). The typed name stays the
name TLS verifies. Plain Python: no Flask, SQLAlchemy or RQ.

Mail servers: `addresses_for(settings)` then `connect(...)` (IMAP, POP3, SMTP). HTTPS endpoints an
admin types (an OAuth token or authorisation URL, Graph's api_url): `pin(session, reach)` mounts a
`PinnedAdapter` on a requests.Session. Each host is then resolved and checked once for the session, the
socket goes to a checked address (the next one only when the first cannot be connected to), and
the typed name stays the Host header, the TLS server name (SNI) and the name the certificate must
carry. A refused host raises RefusedServer before anything is sent; a name that does not resolve,
socket.gaierror. A pinned request never goes through a proxy from the environment: the proxy
would resolve the name itself. With `reach.restricted` False the session works as usual.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError

from portal.transport.base import TransportError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Not covered by is_unspecified (0.0.0.0 only): "this network", which Linux may route to this host.
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")


class RefusedServer(TransportError):
    """A server the rule keeps out of reach: nothing was sent to it; trying again will not help."""

    def __init__(self, message: str):
        super().__init__("connect", message, transient=False)

    def __reduce__(self):
        return (type(self), (self.message,))


@dataclass(frozen=True)
class Reach:
    """The rule for one connection. restricted False: connect as typed (one-MSP installations,
    operators in the form). allowed overrides the built-in refusals; denied wins over both."""

    restricted: bool = False
    allowed: tuple[Network, ...] = ()
    denied: tuple[Network, ...] = ()
    resolve: Callable = field(default=socket.getaddrinfo, compare=False, repr=False)

    def addresses(self, host: str, port: int) -> list[str] | None:
        """The checked addresses to connect to, in the resolver's order; None when the rule does
        not apply (connect to the host name as usual). Raises RefusedServer, or socket.gaierror
        when the name does not resolve."""
        if not self.restricted:
            return None
        found: list[str] = []
        for _family, _type, _proto, _canon, sockaddr in self.resolve(host, port, type=socket.SOCK_STREAM):
            text = str(sockaddr[0]).split("%", 1)[0]  # an IPv6 scope is not part of the address
            if text not in found:
                found.append(text)
        if not found:
            raise socket.gaierror(socket.EAI_NONAME, "no address")
        for text in found:
            why = refusal(ipaddress.ip_address(text), self.allowed, self.denied)
            if why:
                raise RefusedServer(
                    f"{host} cannot be used as a server here: it {why}. If this server is meant to be "
                    "reached, ask the operator of this installation to allow its network.")
        return found


def refusal(address: Address, allowed: Sequence[Network] = (), denied: Sequence[Network] = ()) -> str | None:
    """Why this address is out of reach, in words that follow "it", or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if any(address in n for n in denied):
        return "is in a network the operator has closed to mail servers"
    if any(address in n for n in allowed):
        return None
    if address.is_loopback:
        return "is an address of this machine itself (loopback)"
    if address.is_link_local:
        return "is a link-local address (such as a cloud metadata service)"
    if address.is_unspecified or (address.version == 4 and address in _THIS_NETWORK):
        return "is an unspecified address"
    if address.is_multicast:
        return "is a multicast address"
    if address.is_reserved:
        return "is a reserved address"
    return None


def addresses_for(settings) -> list[str] | None:
    """The checked addresses for ServerSettings or SmtpSettings (None: no rule, use the name)."""
    reach = getattr(settings, "reach", None)
    return reach.addresses(settings.host, settings.port) if reach is not None else None


def connect(addresses: Sequence[str], port: int, timeout: float | None) -> socket.socket:
    """A TCP connection to the first of the checked addresses that answers."""
    error: OSError | None = None
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout)
        except OSError as exc:
            error = exc
    raise error or OSError("no address to connect to")


class PinnedAdapter(HTTPAdapter):
    """A requests adapter that connects only to the addresses `reach` checked (see the module).
    A host's checked addresses are kept per (host, port) for the adapter's life (one session: a
    fetch, a send, a token request), so that its requests do not each wait on a lookup; a refusal
    or a name that does not resolve is not kept: it is asked again."""

    def __init__(self, reach: Reach, **kwargs):
        self.reach = reach
        self._checked: dict[tuple[str, int], list[str] | None] = {}
        self._checking = threading.Lock()
        super().__init__(**kwargs)

    def _addresses(self, host: str, port: int) -> list[str] | None:
        key = (host.lower(), port)
        with self._checking:
            if key in self._checked:
                return self._checked[key]
        found = self.reach.addresses(host, port)  # raises RefusedServer or socket.gaierror
        with self._checking:
            return self._checked.setdefault(key, found)

    def send(self, request, **kwargs):
        parts = urlsplit(request.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = self._addresses(parts.hostname or "", port)
        if addresses is None:
            return super().send(request, **kwargs)
        request.headers["Host"] = parts.netloc.rpartition("@")[2]  # the name (and port) as typed
        kwargs["proxies"] = {}
        for number, address in enumerate(addresses, 1):
            request.pinned_address = address
            try:
                return super().send(request, **kwargs)
            except requests.ConnectionError as exc:  # ConnectTimeout too
                if number == len(addresses) or not _not_connected(exc):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        """The pool for the checked address; TLS's server name and certificate check keep the name."""
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        address = getattr(request, "pinned_address", None)
        if address is not None:
            name = host_params["host"]
            host_params["host"] = address
            if host_params["scheme"] == "https":
                pool_kwargs.update(server_hostname=name, assert_hostname=name)
        return host_params, pool_kwargs


def _not_connected(failure: requests.ConnectionError) -> bool:
    """No connection was made (refused, unreachable, timed out connecting): nothing was sent, so
    the next checked address may be tried."""
    reason = getattr(failure.args[0], "reason", None) if failure.args else None
    return isinstance(reason, ConnectTimeoutError)  # urllib3 2: NewConnectionError is one too


def pin(session: requests.Session, reach: Reach | None) -> requests.Session:
    """Hold every request of `session` to `reach` (None: leave it as it is)."""
    if reach is not None:
        adapter = PinnedAdapter(reach)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
    return session
