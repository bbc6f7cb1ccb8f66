"""deploy/nginx/mmhub.conf: `nginx -t` accepts it, and a real nginx running it passes only
/webhooks/ and /health from outside the internal networks (here: from 127.0.0.1)."""

from __future__ import annotations

import datetime
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.embedded import free_port
from tests.dispatch.harness import eventually
from tests.fake_target import FakeTarget
from tests.roles import ROOT

CONF = ROOT / "deploy" / "nginx" / "mmhub.conf"


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hub.example.ru")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    crt, pem = directory / "hub.crt", directory / "hub.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return crt, pem


def nginx_config(directory: Path, upstream: str, port: int) -> Path:
    """The example as shipped, with only the deployment's own values (API address, certificate,
    ports) swapped for the test's, inside a minimal main nginx.conf."""
    crt, key = _self_signed(directory)
    site = (
        CONF.read_text()
        .replace("server api:8000;", f"server {upstream};")
        .replace("/etc/nginx/tls/hub.example.ru.crt", str(crt))
        .replace("/etc/nginx/tls/hub.example.ru.key", str(key))
        .replace("listen 443 ", f"listen 127.0.0.1:{port} ")
        .replace("listen 80;", f"listen 127.0.0.1:{free_port()};")
    )
    (directory / "mmhub.conf").write_text(site)
    main = directory / "nginx.conf"
    main.write_text(f"""
daemon off;
master_process off;
pid {directory}/nginx.pid;
error_log {directory}/error.log;
events {{}}
http {{
    access_log off;
    include {directory}/mmhub.conf;
}}
""")
    return main


@pytest.fixture(scope="module")
def nginx() -> str:
    path = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(path).exists(), "nginx is missing: `make test-tools` installs it"
    return path


def test_nginx_accepts_the_example(nginx: str, tmp_path: Path) -> None:
    main = nginx_config(tmp_path, "127.0.0.1:9", free_port())
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(main)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_refuses_a_broken_example(nginx: str, tmp_path: Path) -> None:
    main = nginx_config(tmp_path, "127.0.0.1:9", free_port())
    site = tmp_path / "mmhub.conf"
    site.write_text(site.read_text().replace("proxy_pass http://mmhub_api;", "proxy_pass", 1))
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(main)], capture_output=True
    )
    assert result.returncode != 0


@pytest.fixture
async def api() -> AsyncIterator[FakeTarget]:
    """Stands in for the hub's API behind nginx: it records what nginx let through."""
    async with FakeTarget() as server:
        yield server


@pytest.fixture
def proxy(nginx: str, api: FakeTarget, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    upstream = api.url.split("//", 1)[1].split("/", 1)[0]
    main = nginx_config(tmp_path, upstream, port)
    process = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(main)])
    yield f"https://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


async def test_only_webhooks_and_health_are_public(proxy: str, api: FakeTarget) -> None:
    async with httpx.AsyncClient(verify=False, timeout=5) as client:  # noqa: S501 - self-signed

        async def serving() -> bool:
            try:
                await client.get(f"{proxy}/health")
            except httpx.TransportError:
                return False
            return True

        await eventually(serving)
        public = {
            path: (await client.post(f"{proxy}{path}", content=b"x")).status_code
            for path in ("/webhooks/bitrix24", "/webhooks/1c/order")
        }
        health = (await client.get(f"{proxy}/health")).status_code
        internal = {
            path: (await client.get(f"{proxy}{path}")).status_code
            for path in ("/admin/deliveries", "/console/", "/metrics", "/readyz")
        }
    assert public == {"/webhooks/bitrix24": 200, "/webhooks/1c/order": 200}
    assert health == 200
    assert set(internal.values()) == {403}
    seen = [request.path for request in api.requests]
    assert seen.count("/health") >= 2
    assert {p for p in seen if p != "/health"} == {"/webhooks/bitrix24", "/webhooks/1c/order"}
