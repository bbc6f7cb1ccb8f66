"""dispatch.ssrf: target URLs on loopback, private or link-local addresses are refused."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from app.hubconfig import HubConfig
from dispatch.ssrf import check_target_url, check_targets

CODE = "zq81secretwebhookcode"


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1:8080/in", "loopback"),
        ("http://localhost/in", "loopback"),
        ("https://10.1.2.3/in", "private"),
        ("https://192.168.0.10/in", "private"),
        ("https://172.16.5.4/in", "private"),
        ("https://100.64.1.1/in", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::1]:9000/in", "loopback"),
        ("http://[fe80::1]/in", "link-local"),
        ("http://[fd00::1]/in", "private"),
        ("http://[::ffff:127.0.0.1]/in", "loopback"),
        ("http://0.0.0.0/in", "unspecified"),
        ("http://224.0.0.1/in", "multicast"),
        ("http://240.0.0.1/in", "reserved"),
    ],
)
def test_non_public_addresses_refused(url: str, kind: str) -> None:
    with pytest.raises(ValueError, match=f"target 'erp': .* resolves to {kind} address"):
        check_target_url("erp", url, allow_private=False)
    check_target_url("erp", url, allow_private=True)


def test_hostname_resolving_to_private_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        assert host == "erp.internal.example"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.20.30.40", port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(ValueError, match=r"https://erp.internal.example resolves to private"):
        check_target_url("erp", "https://erp.internal.example/base/hs/x", allow_private=False)


def test_public_address_allowed() -> None:
    check_target_url("ww", "https://93.184.215.14/api/v1/events", allow_private=False)
    check_target_url("ww", "http://[2606:4700::6810:84e5]/in", allow_private=False)


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "gopher://h/"])
def test_non_http_schemes_refused_even_when_private_allowed(url: str) -> None:
    with pytest.raises(ValueError, match="scheme must be http or https"):
        check_target_url("erp", url, allow_private=True)


def test_no_host_refused() -> None:
    with pytest.raises(ValueError, match="no host"):
        check_target_url("erp", "http:///path", allow_private=True)


def test_check_targets_never_quotes_the_webhook_code() -> None:
    hub = HubConfig.model_validate(
        {
            "targets": {
                "erp": {"kind": "onec", "url": "http://127.0.0.1:9/erp", "allow_private": True},
                "crm": {"kind": "bitrix24", "webhook_url": f"http://127.0.0.1:9/rest/1/{CODE}/"},
            }
        }
    )
    with pytest.raises(ValueError, match="target 'crm'") as caught:
        check_targets(hub)
    message = str(caught.value)
    assert "http://127.0.0.1" in message
    assert CODE not in message and "/rest/" not in message


def test_check_targets_passes_when_allowed() -> None:
    hub = HubConfig.model_validate(
        {
            "targets": {
                "crm": {
                    "kind": "bitrix24",
                    "webhook_url": f"http://127.0.0.1:9/rest/1/{CODE}/",
                    "allow_private": True,
                },
                "audit": {"kind": "http", "url": "http://[::1]:9/audit", "allow_private": True},
            }
        }
    )
    check_targets(hub)


def test_user_info_never_quoted() -> None:
    with pytest.raises(ValueError, match="loopback") as caught:
        check_target_url("erp", "http://admin:hunter22@127.0.0.1/x", allow_private=False)
    assert "hunter22" not in str(caught.value)
