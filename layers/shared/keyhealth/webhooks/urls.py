"""Which webhook URLs keyhealth may POST to (SSRF): pure, no I/O.

A tenant's webhook URL is input from outside that our servers call from inside the VPC, so it must not reach
anything but the public Internet: not the instance metadata service (169.254.169.254), not a private service,
not loopback. Syntax and IP literals are judged here; the sender (keyhealth.adapters.webhook_http) resolves
host names and judges every address with `refusal_of_resolved`, then connects to the address it judged.

Reasons are for a platform engineer and are stored and shown (`last_error`): they may name the host and
the address, never the URL's path or query (a platform may put a token there).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from keyhealth.domain.errors import KeyhealthError

MAX_URL_LENGTH = 2048
DEFAULT_PORTS = {"https": 443, "http": 80}
_HOST_SHOWN = 80  # a host that is not valid is shown clipped: it is whatever the platform typed
_HOST_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class WebhookUrlRefused(KeyhealthError):
    """The URL may not be called; `reason` says why without repeating its path or query."""

    code = "invalid_webhook_url"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class WebhookUrl:
    """A vetted URL's parts. `target` is left out of the repr: the path and query may hold a token."""

    scheme: str
    host: str  # lowercase; a name IDNA-encoded; an IPv6 address without brackets
    port: int
    target: str = field(default="/", repr=False)  # path and "?query", as sent in the request line
    is_ip_literal: bool = False

    @property
    def _port_suffix(self) -> str:
        return "" if DEFAULT_PORTS.get(self.scheme) == self.port else f":{self.port}"

    @property
    def host_header(self) -> str:
        return f"{_bracketed(self.host)}{self._port_suffix}"

    def url_for(self, address: str) -> str:
        """This URL with its host replaced by `address`: the connection goes where the vetting looked."""
        return f"{self.scheme}://{_bracketed(address)}{self._port_suffix}{self.target}"


def parse_webhook_url(url: str, *, allow_loopback_http: bool = False) -> WebhookUrl:
    """Parse and check `url`; raises `WebhookUrlRefused`.

    `allow_loopback_http` is for the local stack only, whose receivers listen on loopback without TLS: http
    is then accepted for a loopback host, and loopback addresses (nothing else private) are accepted.
    """
    if not isinstance(url, str) or not url:
        raise WebhookUrlRefused("a URL is required")
    if len(url) > MAX_URL_LENGTH:
        raise WebhookUrlRefused(f"the URL must be at most {MAX_URL_LENGTH} characters")
    # isprintable() is False for control, format (zero-width, bidi) and separator characters: a URL that
    # looks like another one, or that parsers split differently, is refused rather than cleaned up.
    if any(character.isspace() or not character.isprintable() for character in url):
        raise WebhookUrlRefused("the URL must not contain spaces or control characters")
    scheme, separator, rest = url.partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in DEFAULT_PORTS:
        raise WebhookUrlRefused("the URL must use https")
    if "#" in rest:
        raise WebhookUrlRefused("the URL must not carry a fragment")
    end = min((index for index in (rest.find("/"), rest.find("?")) if index >= 0), default=len(rest))
    authority, target = rest[:end], rest[end:]
    if "@" in authority:
        raise WebhookUrlRefused("the URL must not carry a user name or password")
    host, is_ip_literal, port_text = _split_authority(authority, allow_loopback_http=allow_loopback_http)
    port = _port(port_text) if port_text is not None else DEFAULT_PORTS[scheme]
    if scheme == "http" and not (allow_loopback_http and _is_loopback_host(host, is_ip_literal)):
        raise WebhookUrlRefused(
            "the URL must use https (http only for a loopback host in the local stack)"
            if allow_loopback_http
            else "the URL must use https"
        )
    if is_ip_literal and (reason := refusal_of_address(host, allow_loopback=allow_loopback_http)):
        raise WebhookUrlRefused(reason)
    if target.startswith("?"):
        target = "/" + target
    return WebhookUrl(scheme=scheme, host=host, port=port, target=target or "/", is_ip_literal=is_ip_literal)


def refusal_of_address(address: str, *, allow_loopback: bool = False) -> str | None:
    """None when `address` is on the public Internet, else why not (e.g. "10.0.0.1 is a private address")."""
    verdict = _verdict(address, allow_loopback)
    return None if verdict is None else f"{address} is {verdict}"


def refusal_of_resolved(host: str, address: str, *, allow_loopback: bool = False) -> str | None:
    """As `refusal_of_address`, for an address `host` resolved to
    (e.g. "hooks.example.com resolves to 10.0.0.5, a private address")."""
    verdict = _verdict(address, allow_loopback)
    return None if verdict is None else f"{host} resolves to {address}, {verdict}"


# --- the URL's parts -----------------------------------------------------------------------------------------


def _split_authority(authority: str, *, allow_loopback_http: bool) -> tuple[str, bool, str | None]:
    """(host, is an IP literal, the port's text or None when there is none)."""
    if not authority:
        raise WebhookUrlRefused("the URL must name a host")
    if authority.startswith("["):
        inside, bracket, after = authority[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise WebhookUrlRefused(f"{_shown(authority)} is not a valid host")
        # A zone ("%eth0") names an interface of the caller's own machine: never a public host.
        try:
            address = ipaddress.IPv6Address(inside) if "%" not in inside else None
        except ValueError:
            address = None
        if address is None:
            raise WebhookUrlRefused(f"[{_shown(inside)}] is not a valid IPv6 address")
        return address.compressed, True, after[1:] if after else None
    name, colon, port_text = authority.partition(":")
    if ":" in port_text:
        raise WebhookUrlRefused("an IPv6 address must be written in brackets")
    if not name:
        raise WebhookUrlRefused("the URL must name a host")
    try:
        return str(ipaddress.IPv4Address(name)), True, port_text if colon else None
    except ValueError:
        pass
    host = _host_name(name.lower())
    if not allow_loopback_http and (host == "localhost" or host.endswith(".localhost")):
        raise WebhookUrlRefused(f"{host} is a loopback host")
    return host, False, port_text if colon else None


def _host_name(name: str) -> str:
    invalid = WebhookUrlRefused(f"{_shown(name)} is not a valid host name")
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise invalid from None
    labels = name.split(".")
    if len(name) > 253 or not all(_is_label(label) for label in labels):
        raise invalid
    # Resolvers (inet_aton) read "127.1", "2130706433" or "0x7f.0.0.1" as IPv4 addresses, and no top-level
    # domain is numeric: such a name is an address in disguise.
    last = labels[-1]
    if last.isdigit() or (last.startswith("0x") and all(c in "0123456789abcdef" for c in last[2:])):
        raise invalid
    return name


def _is_label(label: str) -> bool:
    return (
        0 < len(label) <= 63
        and set(label) <= _HOST_CHARACTERS
        and not label.startswith("-")
        and not label.endswith("-")
    )


def _port(text: str) -> int:
    if not (0 < len(text) <= 5 and all(c in "0123456789" for c in text) and 0 < int(text) <= 65535):
        raise WebhookUrlRefused("the port must be a number from 1 to 65535")
    return int(text)


def _is_loopback_host(host: str, is_ip_literal: bool) -> bool:
    if not is_ip_literal:
        return host == "localhost" or host.endswith(".localhost")
    return ipaddress.ip_address(host).is_loopback


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _shown(text: str) -> str:
    return text if len(text) <= _HOST_SHOWN else text[: _HOST_SHOWN - 1] + "…"


# --- addresses -----------------------------------------------------------------------------------------------

_LOOPBACK = "a loopback address"
_PRIVATE = "a private address"
_DOCUMENTATION = "a documentation address"
_RESERVED = "a reserved address"


def _networks(*pairs: tuple[str, str]) -> tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...]:
    return tuple((ipaddress.ip_network(network), kind) for network, kind in pairs)


# Named first, so that the reason says what the address is; anything else `ipaddress` does not call global is
# refused after these. Multicast has to be named: Python counts 224.0.0.0/4 as global.
_IPV4_KINDS = _networks(
    ("0.0.0.0/32", "an unspecified address"),
    ("0.0.0.0/8", _RESERVED),
    ("127.0.0.0/8", _LOOPBACK),
    ("10.0.0.0/8", _PRIVATE),
    ("172.16.0.0/12", _PRIVATE),
    ("192.168.0.0/16", _PRIVATE),
    ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
    ("169.254.0.0/16", "a link-local address"),
    ("192.0.0.0/24", _RESERVED),
    ("192.0.2.0/24", _DOCUMENTATION),
    ("198.51.100.0/24", _DOCUMENTATION),
    ("203.0.113.0/24", _DOCUMENTATION),
    ("198.18.0.0/15", "a benchmarking address"),
    ("192.88.99.0/24", _RESERVED),
    ("224.0.0.0/4", "a multicast address"),
    ("255.255.255.255/32", "a broadcast address"),
    ("240.0.0.0/4", _RESERVED),
)
_IPV6_KINDS = _networks(
    ("::/128", "an unspecified address"),
    ("::1/128", _LOOPBACK),
    ("::ffff:0:0:0/96", _RESERVED),  # IPv4-translated (SIIT): not routed on the Internet
    ("64:ff9b:1::/48", _RESERVED),  # local-use NAT64: translates into the operator's own networks
    ("100::/64", _RESERVED),  # discard-only
    ("2001:db8::/32", _DOCUMENTATION),
    ("3fff::/20", _DOCUMENTATION),
    ("2001:2::/48", "a benchmarking address"),
    ("fc00::/7", _PRIVATE),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a site-local address"),
    ("ff00::/8", "a multicast address"),
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _verdict(address: str, allow_loopback: bool) -> str | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "not an IP address"
    return _kind(ip, allow_loopback)


def _kind(ip: IPAddress, allow_loopback: bool) -> str | None:
    # An address that carries an IPv4 address reaches that address (a dual-stack socket, a 6to4 relay,
    # a NAT64 gateway): what counts is the IPv4 address.
    embedded = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else []
    if embedded:
        for form, inner in embedded:
            if (kind := _kind(inner, allow_loopback)) is not None:
                return f"{form} of {inner}, {kind}"
        return None
    kinds = _IPV4_KINDS if isinstance(ip, ipaddress.IPv4Address) else _IPV6_KINDS
    for network, kind in kinds:
        if ip in network:
            return None if allow_loopback and kind == _LOOPBACK else kind
    return None if ip.is_global else "a non-public address"


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    if ip.is_unspecified or ip.is_loopback:  # :: and ::1 sit in ::/96 but are IPv6's own
        return []
    if ip.ipv4_mapped is not None:
        return [("an IPv4-mapped address", ip.ipv4_mapped)]
    if int(ip) >> 32 == 0:  # ::a.b.c.d, the deprecated IPv4-compatible form
        return [("an IPv4-compatible address", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))]
    if ip in _NAT64:
        return [("a NAT64 address", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))]
    if ip.sixtofour is not None:
        return [("a 6to4 address", ip.sixtofour)]
    if ip.teredo is not None:
        server, client = ip.teredo
        return [("a Teredo address", client), ("a Teredo address", server)]
    return []
