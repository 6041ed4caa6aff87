"""Which addresses the fleet may call on a tenant's behalf (webhook receivers, datasets given by
https:// URI), and calling exactly the address that was checked.

A tenant must not make the fleet call its own private network, so where that is not allowed
every address a host resolves to must be global; the request then goes to the checked address
(no second DNS lookup a rebinding server could answer differently), TLS still verifying the
URL's host name. An IPv6 address that carries an IPv4 one (mapped, compatible, SIIT, NAT64,
6to4, Teredo) is judged by the IPv4 address too: `64:ff9b::7f00:1` reaches 127.0.0.1 through a
NAT64 gateway as surely as `127.0.0.1` does.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from typing import Any
from urllib.parse import urlsplit, urlunsplit

_LOW32 = (1 << 32) - 1
_NAT64 = IPv6Network("64:ff9b::/96")  # RFC 6052's well-known prefix: global, translated
_NAT64_LOCAL = IPv6Network("64:ff9b:1::/48")  # RFC 8215: a network's own translator
# (the address family, the socket address) of each address getaddrinfo gives
AddressInfo = tuple[Any, ...]


def embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 address carries, in any form that reaches it: IPv4-mapped
    (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), SIIT (`::ffff:0:a.b.c.d`), NAT64
    (`64:ff9b::/96`, `64:ff9b:1::/48`), 6to4 (`2002::/16`) and Teredo's client (`2001::/32`)."""
    n = int(address)
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if n >> 32 == 0 and n > 1:  # :: and ::1 are themselves, not 0.0.0.0 and 0.0.0.1
        return IPv4Address(n & _LOW32)
    if n >> 32 == 0xFFFF_0000 or address in _NAT64 or address in _NAT64_LOCAL:
        return IPv4Address(n & _LOW32)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def may_call(address: IPv4Address | IPv6Address) -> bool:
    """A global unicast address that reaches no private, loopback or link-local one."""
    if not address.is_global or address.is_multicast:
        return False
    if isinstance(address, IPv6Address):
        if address in _NAT64_LOCAL:  # a translator into the network's own IPv4 space
            return False
        inner = embedded_ipv4(address)
        if inner is not None and not may_call(inner):
            return False
    return True


def resolve_target(url: str, allow_private: bool) -> str | None:
    """The address to call for `url`: its host's first address, once every address it resolves
    to may be called; None when one may not (or it does not resolve). Blocks on DNS: a request
    handler awaits `resolve_target_async` instead."""
    host = urlsplit(url).hostname
    if not host:
        return None
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return None
    return _checked(infos, allow_private)


# The lookups awaited on an event loop: threads of their own, not the loop's default executor,
# which asyncio.run waits for as it ends (a worker's fetch, cancelled during a lookup that hangs,
# would wait for the resolver's timeout too), nor the API's request threads.
_LOOKUPS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="lookup")


async def resolve_target_async(url: str, allow_private: bool) -> str | None:
    """resolve_target, awaiting the lookup: the caller's deadline or cancel ends the wait at
    once, whatever the resolver does (its thread then finishes on its own)."""
    host = urlsplit(url).hostname
    if not host:
        return None
    try:
        infos = await asyncio.get_running_loop().run_in_executor(
            _LOOKUPS, functools.partial(socket.getaddrinfo, host, None, proto=socket.IPPROTO_TCP)
        )
    except OSError:
        return None
    return _checked(infos, allow_private)


def _checked(infos: Sequence[AddressInfo], allow_private: bool) -> str | None:
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses:
        return None
    if not allow_private and not all(may_call(a) for a in addresses):
        return None
    return str(addresses[0])


def pinned(url: str, address: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(url with the host replaced by `address`, the Host header, httpx extensions): the
    request connects to the checked address while TLS still verifies the URL's host name."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    shown = f"[{address}]" if ":" in address else address
    netloc = shown if parts.port is None else f"{shown}:{parts.port}"
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return urlunsplit(parts._replace(netloc=netloc)), {"Host": parts.netloc.rpartition("@")[2]}, extensions
