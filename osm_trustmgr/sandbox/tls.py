"""A tiny X.509 CA for tests and the sandbox: TLS server and client certificates for loopback services.

Never for production: the CA key sits unencrypted next to its certificate (mode 0600, like every key here).
The certificates carry what strict verifiers ask for (Python 3.13's ``VERIFY_X509_STRICT``, OpenSSL's purpose
checks): critical basicConstraints, key identifiers, key usage and extended key usage.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["TestCa"]

_CLOCK_SKEW = dt.timedelta(minutes=5)  # a certificate valid "from now" fails on a peer whose clock lags


def _write_private(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """PEM private key created with mode 0600 (never briefly world-readable, whatever the umask)."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "osm-trustmgr sandbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


class TestCa:
    """An ECDSA P-256 CA in ``directory`` (``ca.pem``, ``ca.key``); reused when the files already exist."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(
        self, directory: str | os.PathLike[str], *, name: str = "osm-trustmgr test CA", days: int = 365
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.days = days
        key_path = self.directory / "ca.key"
        if self.ca_path.exists() and key_path.exists():
            self._cert = x509.load_pem_x509_certificate(self.ca_path.read_bytes())
            loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{key_path} is not an EC key")
            self._key = loaded
            return
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._cert = self._self_signed(name)
        _write_private(key_path, self._key)
        _write_cert(self.ca_path, self._cert)

    @property
    def ca_path(self) -> Path:
        """The CA certificate (PEM): what clients pass as ``verify`` and servers as their client CA."""
        return self.directory / "ca.pem"

    @property
    def certificate(self) -> x509.Certificate:
        return self._cert

    def issue(
        self,
        name: str,
        *,
        ip_addresses: Sequence[str] = ("127.0.0.1",),
        dns: Sequence[str] = ("localhost",),
        client: bool = False,
        server: bool = True,
    ) -> tuple[Path, Path]:
        """A leaf certificate and key for ``name``: ``(<name>.pem, <name>.key)`` in the CA's directory."""
        if not (client or server):
            raise ValueError("a certificate must be for a client, a server or both")
        key = ec.generate_private_key(ec.SECP256R1())
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [ExtendedKeyUsageOID.CLIENT_AUTH] * client
        alt_names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        builder = self._builder(_name(name), key.public_key())
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        builder = builder.add_extension(_key_usage(cert_sign=False), critical=True)
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
        )
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        cert_path, key_path = self.directory / f"{name}.pem", self.directory / f"{name}.key"
        _write_private(key_path, key)
        _write_cert(cert_path, cert)
        return cert_path, key_path

    def _self_signed(self, name: str) -> x509.Certificate:
        builder = self._builder(_name(name), self._key.public_key(), issuer=_name(name))
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        builder = builder.add_extension(_key_usage(cert_sign=True), critical=True)
        return builder.sign(self._key, hashes.SHA256())

    def _builder(
        self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey, issuer: x509.Name | None = None
    ) -> x509.CertificateBuilder:
        now = dt.datetime.now(dt.timezone.utc)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer or self._cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(now + dt.timedelta(days=self.days))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    # ECDSA leaves sign (digitalSignature); the CA signs certificates and CRLs only.
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
