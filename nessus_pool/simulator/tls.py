"""HTTPS for simulated scanners, as Nessus serves it: a certificate authority of its own (kept
in a folder, like Nessus keeps ``CA/cacert.pem``) that signs the server certificate. Clients pin
``ca.pem``; the CA key never leaves the folder, which only its owner may read."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE = "ca.pem"
_CA_KEY = "ca-key.pem"
_SERVER_CERT = "server.pem"
_SERVER_KEY = "server-key.pem"
_VALID = datetime.timedelta(days=3650)


class SimulatorTLSError(Exception):
    """The TLS folder cannot be used (owned by someone else, readable by others, unreadable)."""


class SimulatorTLS:
    """A CA and a server certificate for ``hosts`` in ``directory``. :attr:`ca_file` is what
    clients pin; :meth:`server_context` is what the simulated scanners serve."""

    def __init__(self, directory: Path, ca_file: Path, cert_file: Path, key_file: Path) -> None:
        self.directory = directory
        self.ca_file = ca_file
        self._cert_file = cert_file
        self._key_file = key_file

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self._cert_file, self._key_file)
        return ctx


def default_tls_dir() -> Path:
    """``$XDG_STATE_HOME/nessus-pool/simulator-tls`` (``~/.local/state/...``): stable across
    runs, so a pinned ``ca.pem`` stays valid when the simulator restarts."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "nessus-pool" / "simulator-tls"


def load_or_create(directory: Path, hosts: list[str]) -> SimulatorTLS:
    """Reuse the CA in ``directory`` or create one, then issue a server certificate for
    ``hosts`` (names and IP addresses). Blocking file I/O and key generation (a few ms):
    call it before serving, or in a thread."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_private(directory)
    ca_cert_path, ca_key_path = directory / CA_FILE, directory / _CA_KEY
    if ca_cert_path.exists() and ca_key_path.exists():
        try:
            ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
            ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
        except (OSError, ValueError, TypeError) as exc:
            raise SimulatorTLSError(f"cannot read the simulator CA in {directory}: {exc}") from exc
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise SimulatorTLSError(f"{ca_key_path} is not an EC key this simulator made")
    else:
        ca_key, ca_cert = _new_ca()
        _write(ca_key_path, _key_pem(ca_key))
        _write(ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _server_cert(key, ca_key, ca_cert, hosts)
    cert_path, key_path = directory / _SERVER_CERT, directory / _SERVER_KEY
    _write(key_path, _key_pem(key))
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return SimulatorTLS(directory, ca_cert_path, cert_path, key_path)


def _check_private(directory: Path) -> None:
    st = directory.stat()
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        # a CA someone else planted would let them impersonate every simulated scanner
        raise SimulatorTLSError(f"{directory} belongs to another user; choose another --tls-dir")
    if st.st_mode & 0o077:
        directory.chmod(0o700)


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)


def _new_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Nessus Certification Authority"),
            x509.NameAttribute(NameOID.COMMON_NAME, "nessus-pool simulator CA"),
        ]
    )
    start = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + _VALID)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _server_cert(
    key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    hosts: list[str],
) -> x509.Certificate:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*hosts, "localhost", "127.0.0.1", "::1"]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    start = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
