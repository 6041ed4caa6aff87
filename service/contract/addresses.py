"""Which addresses the fleet may call on a tenant's behalf (webhook receivers, datasets given by
https:// URI), and calling exactly the address that was checked.

A tenant must not make the fleet call its own private network, so where that is not allowed
every address a host resolves to must be global; the request then goes to the checked address
(no second DNS lookup a rebinding server could answer differently), TLS still verifying the
URL's host name.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit, urlunsplit


def resolve_target(url: str, allow_private: bool) -> str | None:
    """The address to call for `url`: its host's first address, once every address it resolves
    to may be called; None when one may not (or it does not resolve)."""
    host = urlsplit(url).hostname
    if not host:
        return None
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses:
        return None
    if not allow_private and any(not a.is_global or a.is_multicast for a in addresses):
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
