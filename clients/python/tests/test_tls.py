"""TLS and mutual TLS with the standard ssl module, against a real match
server started with certificates made here by openssl."""

from __future__ import annotations

import asyncio
import pathlib
import shutil
import ssl
import subprocess

import pytest

from conftest import RosterProcess
from roster_client import AsyncClient, Client, ConnectionFailedError, NotFoundError, UnavailableError


def openssl(*args: str, cwd: pathlib.Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make test certificates (Debian's openssl)")
    folder = tmp_path_factory.mktemp("tls")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
            "-out", "ca.pem", "-days", "3", "-subj", "/CN=Roster Python Test CA", cwd=folder)
    for name, names in [("server", "DNS:localhost,IP:127.0.0.1"), ("client", "DNS:roster-client")]:
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)
        (folder / f"{name}.ext").write_text(f"subjectAltName={names}\nextendedKeyUsage=serverAuth,clientAuth\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "3", "-extfile", f"{name}.ext", cwd=folder)
    return folder


@pytest.fixture(scope="module")
def tls_server(certificates, tmp_path_factory):
    data = tmp_path_factory.mktemp("tls-data")
    server = RosterProcess(["match-server", "--no-auth", "--data", str(data), "--store", str(data), "--listen", "127.0.0.1:0",
                            "--tls-cert", str(certificates / "server.pem"), "--tls-key", str(certificates / "server.key"),
                            "--tls-ca", str(certificates / "ca.pem"), "--log-level", "error"])
    line = server.wait_for_line("match server listening on")
    yield line.split(";")[0].split()[-1]
    server.stop()


def context(certificates, client_certificate: bool) -> ssl.SSLContext:
    result = ssl.create_default_context(cafile=str(certificates / "ca.pem"))
    if client_certificate:
        result.load_cert_chain(str(certificates / "client.pem"), str(certificates / "client.key"))
    return result


def test_mutual_tls(certificates, tls_server):
    # The server answers (NOT_FOUND: it serves no list): the handshake,
    # the certificate checks both ways and ALPN all went through.
    with Client(tls_server, ssl_context=context(certificates, True), timeout=3) as roster:
        with pytest.raises(NotFoundError):
            roster.match("acme", bytes(16))
        assert roster._connection.sock.selected_alpn_protocol() == "roster/1"
    port = tls_server.rsplit(":", 1)[1]
    with Client(f"localhost:{port}", ssl_context=context(certificates, True), timeout=3) as by_name:
        with pytest.raises(NotFoundError):
            by_name.match("acme", bytes(16))

    async def run():
        async with AsyncClient(tls_server, ssl_context=context(certificates, True), timeout=3) as roster:
            with pytest.raises(NotFoundError):
                await roster.match("acme", bytes(16))
    asyncio.run(run())


def test_refusals_are_connection_errors(certificates, tls_server):
    with Client(tls_server, ssl_context=context(certificates, False), timeout=3, max_attempts=1) as anonymous:
        with pytest.raises(ConnectionFailedError):
            anonymous.match("acme", bytes(16))
    untrusting = ssl.create_default_context()  # the system's CAs: not ours
    with Client(tls_server, ssl_context=untrusting, timeout=3, max_attempts=1) as wary:
        with pytest.raises(ConnectionFailedError, match="TLS"):
            wary.match("acme", bytes(16))
    with Client(tls_server, timeout=3, max_attempts=1) as plaintext:
        with pytest.raises(UnavailableError, match="TLS"):
            plaintext.match("acme", bytes(16))
