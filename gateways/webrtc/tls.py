"""HTTPS for the web gateway: a configured certificate, or a self-signed one, or none.

Browsers give the microphone only to secure contexts (W3C Secure Contexts §3.1): `https:`
pages, and `http://localhost` / `127.0.0.1` (treated as potentially trustworthy). So:

- a configured certificate and key are always used (production: the site's certificate);
- without one, a loopback host is served over plain HTTP, which browsers accept;
- without one, any other host (`0.0.0.0`, a LAN address, a name) gets a self-signed
  certificate, generated once and kept in `state_dir`, and the node logs that it did so:
  browsers show a warning the user must accept, but the microphone then works. This is for
  trying Switchboard on a LAN, not for production.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("switchboard.web.tls")

SELF_SIGNED_DAYS = 365


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """A PEM certificate chain and its private key (None: decide as the module says)."""

    cert_file: Path | None = None
    key_file: Path | None = None


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_ssl_context(host: str, tls: TlsConfig, state_dir: Path) -> ssl.SSLContext | None:
    """The SSL context to serve `host` with, or None for plain HTTP on loopback."""
    if (tls.cert_file is None) != (tls.key_file is None):
        raise ValueError("HTTPS needs both a certificate and its key (give both or neither)")
    if tls.cert_file is not None and tls.key_file is not None:
        return _context(tls.cert_file, tls.key_file)
    if is_loopback(host):
        return None
    cert, key = self_signed_certificate(host, state_dir)
    log.warning("web gateway: no certificate configured for %s, so it serves HTTPS with a "
                "self-signed certificate (%s). Browsers will warn until you accept it; "
                "configure a real certificate and key for production", host, cert)
    return _context(cert, key)


def _context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context


def self_signed_certificate(host: str, state_dir: Path) -> tuple[Path, Path]:
    """A certificate for `host` (and this machine's name), made once and reused."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    state_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = state_dir / "web-self-signed.crt", state_dir / "web-self-signed.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    names: list[x509.GeneralName] = [x509.DNSName("localhost"),
                                     x509.DNSName(socket.gethostname())]
    for literal in sorted({host, "127.0.0.1"}):
        try:
            address = ipaddress.ip_address(literal)
        except ValueError:
            if literal not in ("", "localhost"):
                names.append(x509.DNSName(literal))
            continue
        if not address.is_unspecified:  # 0.0.0.0 names no address a browser would use
            names.append(x509.IPAddress(address))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Switchboard (self-signed)")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_path.touch(mode=0o600)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
