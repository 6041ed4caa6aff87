"""Which addresses the fleet may call for a tenant: an IPv6 address that carries an IPv4 one is
judged by that IPv4 address too, in every form that reaches it (service.contract.addresses)."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from service.contract.addresses import embedded_ipv4, may_call, resolve_target, resolve_target_async

# (the IPv6 form, the IPv4 address it reaches)
EMBEDDED = {
    "IPv4-mapped": ("::ffff:127.0.0.1", "127.0.0.1"),
    "IPv4-compatible": ("::127.0.0.1", "127.0.0.1"),
    "SIIT (IPv4-translated)": ("::ffff:0:7f00:1", "127.0.0.1"),
    "NAT64 well-known prefix": ("64:ff9b::7f00:1", "127.0.0.1"),
    "NAT64 local-use prefix": ("64:ff9b:1::a00:1", "10.0.0.1"),
    "6to4": ("2002:7f00:1::", "127.0.0.1"),
    "Teredo (client obfuscated)": ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1"),
}


@pytest.mark.parametrize("form", EMBEDDED)
def test_each_form_that_embeds_a_private_ipv4_address_is_refused(form: str) -> None:
    v6, v4 = EMBEDDED[form]
    address = ipaddress.IPv6Address(v6)
    assert embedded_ipv4(address) == ipaddress.IPv4Address(v4)
    assert not may_call(address)
    # as a URL's host (an address literal resolves to itself): refused, unless allowed
    assert resolve_target(f"https://[{v6}]/data.csv", allow_private=False) is None
    assert resolve_target(f"https://[{v6}]/data.csv", allow_private=True) == str(address)
    assert asyncio.run(resolve_target_async(f"https://[{v6}]/data.csv", allow_private=False)) is None


@pytest.mark.parametrize(
    "v6",
    ["::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1", "::ffff:0:a00:1", "::10.0.0.1",
     "64:ff9b::e000:1", "2002:c0a8:1::1", "::ffff:0.0.0.0"],
)  # fmt: skip
def test_link_local_private_multicast_and_unspecified_ipv4_inside_ipv6_are_refused(v6: str) -> None:
    assert not may_call(ipaddress.IPv6Address(v6)), v6


@pytest.mark.parametrize("v6", ["64:ff9b::808:808", "2002:808:808::1", "2606:4700:4700::1111", "::8.8.8.8"])
def test_forms_that_reach_a_global_ipv4_address_or_none_may_be_called(v6: str) -> None:
    assert may_call(ipaddress.IPv6Address(v6)), v6


def test_plain_addresses() -> None:
    for refused in ("127.0.0.1", "10.1.2.3", "169.254.169.254", "0.0.0.0", "224.0.0.1", "::1", "::", "fe80::1",
                    "fc00::1", "ff02::1"):  # fmt: skip
        assert not may_call(ipaddress.ip_address(refused)), refused
    assert may_call(ipaddress.ip_address("93.184.216.34"))
    assert embedded_ipv4(ipaddress.IPv6Address("2606:4700:4700::1111")) is None
    assert embedded_ipv4(ipaddress.IPv6Address("::1")) is None  # loopback itself, not 0.0.0.1
