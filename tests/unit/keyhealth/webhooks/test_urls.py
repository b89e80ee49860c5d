"""Which webhook URLs may be called (SSRF): addresses that are not public, in every spelling, and the URL rules."""

from __future__ import annotations

import pytest

from keyhealth.webhooks.urls import (
    WebhookUrl,
    WebhookUrlRefused,
    parse_webhook_url,
    refusal_of_address,
    refusal_of_resolved,
)

REFUSED = [
    ("127.0.0.1", "a loopback address"),
    ("127.255.0.9", "a loopback address"),
    ("10.0.0.1", "a private address"),
    ("172.16.5.4", "a private address"),
    ("192.168.1.1", "a private address"),
    ("169.254.169.254", "a link-local address"),  # the instance metadata service
    ("100.64.0.1", "a shared (carrier-grade NAT) address"),
    ("0.0.0.0", "an unspecified address"),  # noqa: S104 - an address refused, not bound
    ("0.1.2.3", "a reserved address"),
    ("224.0.0.1", "a multicast address"),
    ("255.255.255.255", "a broadcast address"),
    ("240.0.0.1", "a reserved address"),
    ("192.0.2.1", "a documentation address"),
    ("198.18.0.1", "a benchmarking address"),
    ("::1", "a loopback address"),
    ("::", "an unspecified address"),
    ("fe80::1", "a link-local address"),
    ("fe80::1%eth0", "a link-local address"),
    ("fc00::1", "a private address"),
    ("fd12:3456::1", "a private address"),
    ("ff02::1", "a multicast address"),
    ("2001:db8::1", "a documentation address"),
    ("::ffff:10.0.0.1", "an IPv4-mapped address of 10.0.0.1, a private address"),
    ("::ffff:127.0.0.1", "an IPv4-mapped address of 127.0.0.1, a loopback address"),
    ("::ffff:169.254.169.254", "an IPv4-mapped address of 169.254.169.254, a link-local address"),
    ("::10.0.0.1", "an IPv4-compatible address of 10.0.0.1, a private address"),
    ("64:ff9b::a00:1", "a NAT64 address of 10.0.0.1, a private address"),
    ("2002:a00:1::", "a 6to4 address of 10.0.0.1, a private address"),
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "a Teredo address of 10.0.0.1, a private address"),
]
PUBLIC = ["93.184.216.34", "1.1.1.1", "8.8.8.8", "2606:4700:4700::1111", "::ffff:1.1.1.1", "64:ff9b::808:808"]


@pytest.mark.parametrize(("address", "kind"), REFUSED)
def test_an_address_that_is_not_public_is_refused_with_what_it_is(address, kind):
    assert refusal_of_address(address) == f"{address} is {kind}"
    assert refusal_of_resolved("hooks.example.com", address) == f"hooks.example.com resolves to {address}, {kind}"


@pytest.mark.parametrize("address", PUBLIC)
def test_a_public_address_is_accepted(address):
    assert refusal_of_address(address) is None
    assert refusal_of_resolved("hooks.example.com", address) is None


@pytest.mark.parametrize("address", ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"])
def test_allow_loopback_accepts_loopback(address):
    assert refusal_of_address(address, allow_loopback=True) is None


@pytest.mark.parametrize(
    "address",
    ["10.0.0.1", "169.254.169.254", "0.0.0.0", "::", "fe80::1", "fc00::1", "::ffff:10.0.0.1"],  # noqa: S104
)
def test_allow_loopback_accepts_nothing_else_private(address):
    assert refusal_of_address(address, allow_loopback=True) is not None


def test_what_is_not_an_address_is_refused():
    assert refusal_of_address("hooks.example.com") == "hooks.example.com is not an IP address"


# --- URLs ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://hooks.example.com/hook", "the URL must use https"),
        ("ftp://hooks.example.com/hook", "the URL must use https"),
        ("hooks.example.com/hook", "the URL must use https"),
        ("https:hooks.example.com/hook", "the URL must use https"),
        ("https://user:pass@hooks.example.com/hook", "the URL must not carry a user name or password"),
        ("https://user@hooks.example.com/hook", "the URL must not carry a user name or password"),
        ("https://hooks.example.com/hook#part", "the URL must not carry a fragment"),
        ("https:///hook", "the URL must name a host"),
        ("https://:443/hook", "the URL must name a host"),
        ("https://hooks.example.com:0/hook", "the port must be a number from 1 to 65535"),
        ("https://hooks.example.com:65536/hook", "the port must be a number from 1 to 65535"),
        ("https://hooks.example.com:44a/hook", "the port must be a number from 1 to 65535"),
        ("https://hooks.example.com:/hook", "the port must be a number from 1 to 65535"),
        ("https://hooks.example.com:٤٤٣/hook", "the port must be a number from 1 to 65535"),  # Arabic digits
        ("https://hooks.example.com/" + "a" * 2048, "the URL must be at most 2048 characters"),
        ("https://hooks.example.com/a b", "the URL must not contain spaces or control characters"),
        ("https://hooks.example.com/a\tb", "the URL must not contain spaces or control characters"),
        ("https://hooks.example.com/\r\nHost: x", "the URL must not contain spaces or control characters"),
        ("https://hooks.example.com\u200b/hook", "the URL must not contain spaces or control characters"),
        (" https://hooks.example.com/hook", "the URL must not contain spaces or control characters"),
        ("", "a URL is required"),
        ("https://10.0.0.1/hook", "10.0.0.1 is a private address"),
        ("https://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("https://127.0.0.1/hook", "127.0.0.1 is a loopback address"),
        ("https://[::1]/hook", "::1 is a loopback address"),
        ("https://[::ffff:127.0.0.1]/hook", "::ffff:7f00:1 is an IPv4-mapped address of 127.0.0.1, a loopback address"),
        ("https://localhost/hook", "localhost is a loopback host"),
        ("https://api.localhost/hook", "api.localhost is a loopback host"),
        ("https://[fe80::1%25eth0]/hook", "[fe80::1%25eth0] is not a valid IPv6 address"),
        ("https://[::1/hook", "[::1 is not a valid host"),
        ("https://[::1]x/hook", "[::1]x is not a valid host"),
        ("https://[hooks]/hook", "[hooks] is not a valid IPv6 address"),
        ("https://::1/hook", "an IPv6 address must be written in brackets"),
        # IPv4 addresses in the spellings resolvers accept (inet_aton): never names
        ("https://127.1/hook", "127.1 is not a valid host name"),
        ("https://2130706433/hook", "2130706433 is not a valid host name"),
        ("https://0x7f.0.0.1/hook", "0x7f.0.0.1 is not a valid host name"),
        ("https://0177.0.0.1/hook", "0177.0.0.1 is not a valid host name"),
        ("https://10.0.0.01/hook", "10.0.0.01 is not a valid host name"),
        ("https://hooks..example.com/hook", "hooks..example.com is not a valid host name"),
        ("https://hooks.example.com./hook", "hooks.example.com. is not a valid host name"),
        ("https://-hooks.example.com/hook", "-hooks.example.com is not a valid host name"),
        ("https://hooks_1.example.com/hook", "hooks_1.example.com is not a valid host name"),
        ("https://hooks.example%2Ecom/hook", "hooks.example%2ecom is not a valid host name"),
        ("https://hooks.example.com\\@10.0.0.1/hook", "the URL must not carry a user name or password"),
        ("https://" + "a" * 64 + ".example.com/hook", "a" * 64 + ".example.com is not a valid host name"),
    ],
)
def test_a_url_is_refused_with_a_reason(url, reason):
    with pytest.raises(WebhookUrlRefused) as refused:
        parse_webhook_url(url)
    assert refused.value.reason == reason
    assert str(refused.value) == reason
    assert refused.value.code == "invalid_webhook_url"


def test_http_is_accepted_in_the_local_stack_for_loopback_hosts_only():
    for url in ("http://127.0.0.1:8080/hook", "http://localhost:8080/hook", "http://[::1]:8080/hook"):
        assert parse_webhook_url(url, allow_loopback_http=True).scheme == "http"
        with pytest.raises(WebhookUrlRefused):
            parse_webhook_url(url)
    for url in ("http://10.0.0.1/hook", "http://169.254.169.254/latest/meta-data/", "http://hooks.example.com/"):
        with pytest.raises(WebhookUrlRefused, match="must use https"):
            parse_webhook_url(url, allow_loopback_http=True)
    with pytest.raises(WebhookUrlRefused, match=r"10\.0\.0\.1 is a private address"):
        parse_webhook_url("https://10.0.0.1/hook", allow_loopback_http=True)
    assert parse_webhook_url("https://127.0.0.1/hook", allow_loopback_http=True).host == "127.0.0.1"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://hooks.example.com/hook", WebhookUrl("https", "hooks.example.com", 443, "/hook", False)),
        ("HTTPS://Hooks.Example.COM", WebhookUrl("https", "hooks.example.com", 443, "/", False)),
        ("https://hooks.example.com?a=1&b=2", WebhookUrl("https", "hooks.example.com", 443, "/?a=1&b=2", False)),
        ("https://hooks.example.com:8443/a/b?t=x", WebhookUrl("https", "hooks.example.com", 8443, "/a/b?t=x", False)),
        ("https://hooks.example.com:443/", WebhookUrl("https", "hooks.example.com", 443, "/", False)),
        ("https://93.184.216.34/hook", WebhookUrl("https", "93.184.216.34", 443, "/hook", True)),
        ("https://[2606:4700:4700:0::1111]:8443/", WebhookUrl("https", "2606:4700:4700::1111", 8443, "/", True)),
        ("https://bücher.example/hook", WebhookUrl("https", "xn--bcher-kva.example", 443, "/hook", False)),
        ("https://BÜCHER.example/hook", WebhookUrl("https", "xn--bcher-kva.example", 443, "/hook", False)),
        ("http://localhost/hook", WebhookUrl("http", "localhost", 80, "/hook", False)),
    ],
)
def test_a_url_is_parsed_into_its_parts(url, expected):
    assert parse_webhook_url(url, allow_loopback_http=url.startswith("http:")) == expected


@pytest.mark.parametrize(
    ("url", "host_header", "pinned_v4", "pinned_v6"),
    [
        (
            "https://hooks.example.com/h?t=1",
            "hooks.example.com",
            "https://93.184.216.34/h?t=1",
            "https://[2606:4700::1]/h?t=1",
        ),
        (
            "https://hooks.example.com:8443/h",
            "hooks.example.com:8443",
            "https://93.184.216.34:8443/h",
            "https://[2606:4700::1]:8443/h",
        ),
        (
            "https://[2606:4700::1]:8443/",
            "[2606:4700::1]:8443",
            "https://93.184.216.34:8443/",
            "https://[2606:4700::1]:8443/",
        ),
        ("https://[2606:4700::1]/", "[2606:4700::1]", "https://93.184.216.34/", "https://[2606:4700::1]/"),
        ("http://localhost:80/h", "localhost", "http://93.184.216.34/h", "http://[2606:4700::1]/h"),
        ("http://localhost:443/h", "localhost:443", "http://93.184.216.34:443/h", "http://[2606:4700::1]:443/h"),
    ],
)
def test_the_host_header_and_the_pinned_url(url, host_header, pinned_v4, pinned_v6):
    parsed = parse_webhook_url(url, allow_loopback_http=True)
    assert parsed.host_header == host_header
    assert parsed.url_for("93.184.216.34") == pinned_v4
    assert parsed.url_for("2606:4700::1") == pinned_v6


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/secret-path?token=s3cr3t",
        "https://10.0.0.1/secret-path?token=s3cr3t",
        "https://user:s3cr3t@hooks.example.com/secret-path?token=s3cr3t",
        "https://hooks.example.com/secret-path?token=s3cr3t#frag",
        "https://hooks.example.com:99999/secret-path?token=s3cr3t",
        "https://hooks.example.com/secret-path?token=s3cr3t " + "x" * 2048,
        "https://hooks.example.com/secret-path?token=s3cr3t\n",
        "https://localhost/secret-path?token=s3cr3t",
        "https://127.1/secret-path?token=s3cr3t",
        "https://[::1/secret-path?token=s3cr3t",
        "https://bad_host?token=s3cr3t",
    ],
)
def test_a_reason_never_holds_the_path_or_the_query(url):
    with pytest.raises(WebhookUrlRefused) as refused:
        parse_webhook_url(url)
    for secret in ("secret-path", "s3cr3t", "token"):
        assert secret not in refused.value.reason


def test_the_repr_leaves_out_the_path_and_query():
    assert "s3cr3t" not in repr(parse_webhook_url("https://hooks.example.com/p?token=s3cr3t"))
