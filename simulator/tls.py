"""Throw-away certificate authority and server certificate for the simulator.

The real services are HTTPS-only (MSAL refuses a non-HTTPS authority), so the
simulator serves TLS with a CA generated per run; clients trust it through
``SSL_CERT_FILE`` / ``REQUESTS_CA_BUNDLE``. EC P-256 keys keep start-up fast.
"""

from __future__ import annotations

import atexit
import datetime as dt
import ipaddress
import os
import shutil
import ssl
import tempfile
import threading
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CertificateFiles:
    """Paths of the PEM files written by :func:`generate`."""

    ca_file: str
    cert_file: str
    key_file: str

    def server_context(self) -> ssl.SSLContext:
        """An SSL context for the server side of every simulated HTTPS service."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "M365 connector simulator"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """A CA signs certificates and CRLs; the server certificate signs and agrees keys (ECDHE)."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not signs_certificates,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _ca(not_before: dt.datetime, not_after: dt.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA (path length 0)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("M365 simulator test CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return ca_key, ca_cert


def _server(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, not_before: dt.datetime,
            not_after: dt.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The server certificate the CA signs: SANs localhost, 127.0.0.1 and ::1."""
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def generate(directory: str) -> CertificateFiles:
    """Create a CA and a server certificate (SANs localhost, 127.0.0.1, ::1) in ``directory``."""
    now = dt.datetime.now(dt.UTC)
    not_before = now - dt.timedelta(days=1)
    not_after = now + dt.timedelta(days=30)
    ca_key, ca_cert = _ca(not_before, not_after)
    key, cert = _server(ca_key, ca_cert, not_before, not_after)

    files = CertificateFiles(
        ca_file=os.path.join(directory, "ca.pem"),
        cert_file=os.path.join(directory, "server.pem"),
        key_file=os.path.join(directory, "server.key"),
    )
    with open(files.ca_file, "wb") as fh:
        fh.write(ca_cert.public_bytes(serialization.Encoding.PEM))
    with open(files.cert_file, "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
        fh.write(ca_cert.public_bytes(serialization.Encoding.PEM))
    with open(files.key_file, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return files


_shared: CertificateFiles | None = None
_shared_lock = threading.Lock()


def shared() -> CertificateFiles:
    """One CA per process: clients that build their TLS context once per process (aiohttp does, at
    first use) keep trusting every simulator started later in that process."""
    global _shared
    with _shared_lock:
        if _shared is None:
            directory = tempfile.mkdtemp(prefix="m365-sim-ca-")
            atexit.register(shutil.rmtree, directory, True)
            _shared = generate(directory)
        return _shared


@dataclass(frozen=True)
class AppCertificate:
    """The app registration's certificate credential: PEM (key + certificate) as Key Vault hands out
    a certificate's secret, and the thumbprints Entra matches a client assertion's header against."""

    pem: str
    certificate: x509.Certificate

    @property
    def sha1(self) -> bytes:
        return self.certificate.fingerprint(hashes.SHA1())  # noqa: S303 - x5t is SHA-1 by definition

    @property
    def sha256(self) -> bytes:
        return self.certificate.fingerprint(hashes.SHA256())


_app_cert: AppCertificate | None = None


def app_certificate() -> AppCertificate:
    """One RSA certificate per process (RSA key generation is the slow part)."""
    global _app_cert
    with _shared_lock:
        if _app_cert is None:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            now = dt.datetime.now(dt.UTC)
            name = _name("m365-connector-app")
            cert = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=365))
                .sign(key, hashes.SHA256())
            )
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ) + cert.public_bytes(serialization.Encoding.PEM)
            _app_cert = AppCertificate(pem.decode(), cert)
        return _app_cert
