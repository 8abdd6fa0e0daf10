"""Address policy (SSRF guard): connections go only to public addresses or allowed networks."""

from __future__ import annotations

import ipaddress
import socket
import threading
from dataclasses import dataclass
from typing import ClassVar

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    NameResolutionError,
    NewConnectionError,
)
from urllib3.util import connection as urllib3_connection

from config.schema import DownloadConfig

METADATA_ADDRESSES = frozenset(ipaddress.ip_address(ip) for ip in (
    "169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254"))
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class BlockedAddressError(Exception):
    """Raised inside the connection: the host resolves to an address that is not allowed."""

    def __init__(self, host: str, address: str) -> None:
        super().__init__(f"{host} resolves to blocked address {address}")
        self.host, self.address = host, address



def is_internal(address: IPAddress) -> bool:
    """Loopback, private, link-local, reserved, multicast, unspecified, metadata or non-global."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return (address in METADATA_ADDRESSES or address.is_loopback or address.is_private
            or address.is_link_local or address.is_reserved or address.is_multicast
            or address.is_unspecified or not address.is_global)


def parse_networks(cidrs: list[str]) -> tuple[IPNetwork, ...]:
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ValueError(f"download.allow_private_networks: {cidr!r} is not a network "
                             "in CIDR notation (e.g. 10.0.0.0/8)") from None
    return tuple(networks)


@dataclass(frozen=True)
class AddressPolicy:
    """Which peer addresses a connection may use: public ones, plus the allowed networks."""

    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, settings: DownloadConfig) -> AddressPolicy:
        return cls(parse_networks(settings.allow_private_networks))

    def allows(self, address: str) -> bool:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        if any(candidate in network for network in self.allowed_networks
               for candidate in (ip, mapped) if candidate is not None
               and candidate.version == network.version):
            return True
        return not is_internal(ip)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _getaddrinfo(host: str, port: int, timeout: float | None) -> list[tuple]:
    """getaddrinfo bounded by `timeout` (the resolver itself cannot be interrupted)."""
    family = urllib3_connection.allowed_gai_family()
    if timeout is None or _is_ip_literal(host):
        return socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    outcome: dict[str, object] = {}

    def resolve() -> None:
        try:
            outcome["infos"] = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
        except OSError as error:
            outcome["error"] = error

    worker = threading.Thread(target=resolve, name="dns", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TimeoutError(f"DNS lookup of {host} took longer than {timeout:g} s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["infos"]  # type: ignore[return-value]


def guarded_connect(conn: HTTPConnection, policy: AddressPolicy) -> socket.socket:
    """Resolve once, refuse blocked addresses before any packet is sent, connect to the checked
    IP (the Host header and TLS name stay the original host), and re-check the socket's peer."""
    host, port = conn.host, conn.port
    timeout = conn.timeout if isinstance(conn.timeout, int | float) else None
    try:
        infos = _getaddrinfo(host.strip("[]"), port, timeout)
    except socket.gaierror as error:
        raise NameResolutionError(host, conn, error) from error
    except TimeoutError as error:
        raise ConnectTimeoutError(conn, str(error)) from error
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    allowed = [address for address in addresses if policy.allows(address)]
    if not allowed:
        raise BlockedAddressError(host, addresses[0] if addresses else "?")
    return _connect_first(conn, allowed, policy)


def _connect_first(conn: HTTPConnection, addresses: list[str], policy: AddressPolicy
                   ) -> socket.socket:
    last_error: OSError | None = None
    for address in addresses:
        try:
            sock = urllib3_connection.create_connection(
                (address, conn.port), conn.timeout, source_address=conn.source_address,
                socket_options=conn.socket_options)
        except TimeoutError as error:
            raise ConnectTimeoutError(
                conn, f"Connection to {conn.host} timed out. (connect timeout={conn.timeout})"
            ) from error
        except OSError as error:
            last_error = error
            continue
        peer = str(sock.getpeername()[0])
        if not policy.allows(peer):
            sock.close()
            raise BlockedAddressError(conn.host, peer)
        return sock
    raise NewConnectionError(conn, f"Failed to establish a new connection: {last_error}"
                             ) from last_error


class _GuardedHTTPConnection(HTTPConnection):
    policy = AddressPolicy()

    def _new_conn(self) -> socket.socket:
        return guarded_connect(self, self.policy)


class _GuardedHTTPSConnection(HTTPSConnection):
    policy = AddressPolicy()

    def _new_conn(self) -> socket.socket:
        return guarded_connect(self, self.policy)


class GuardedAdapter(HTTPAdapter):
    """A requests adapter whose connections go only to addresses the policy allows."""

    __attrs__: ClassVar[list[str]] = [*HTTPAdapter.__attrs__, "policy"]

    def __init__(self, policy: AddressPolicy, pool_maxsize: int = 10) -> None:
        self.policy = policy
        super().__init__(pool_maxsize=pool_maxsize, max_retries=0)

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        http = type("GuardedHTTPConnection", (_GuardedHTTPConnection,), {"policy": self.policy})
        https = type("GuardedHTTPSConnection", (_GuardedHTTPSConnection,),
                     {"policy": self.policy})
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
            "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https}),
        }


def make_session(settings: DownloadConfig, policy: AddressPolicy | None = None,
                 pool_maxsize: int = 4) -> requests.Session:
    """A session with the guarded adapter, a browser-like User-Agent and no proxies from env."""
    session = requests.Session()
    session.trust_env = False  # a proxy would hide the real peer address from the guard
    session.headers.update({"User-Agent": settings.user_agent,
                            "Accept-Language": "en-US,en;q=0.9"})
    adapter = GuardedAdapter(policy or AddressPolicy.from_settings(settings), pool_maxsize)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
