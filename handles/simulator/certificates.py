"""The key material in the data dir: the server's self-signed certificate, a client certificate per admin
handle (HS_PUBKEY login at index 301), and reading a client certificate's identity."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from handles.simulator.datadir import CERT_FILE, CLIENT_CERT_DIR, KEY_FILE, write_atomically
from handles.simulator.values import PUBKEY_INDEX, ascii_upper


def ensure_certificate(data_dir: Path) -> tuple[Path, Path]:
    """Create the self-signed certificate on first start and reuse it afterwards. Like the real one:
    subject = issuer = `CN=anonymous`, no extensions (so no SAN), valid 2000-01-01 → 9999-12-31
    (docs/handle-server.md §3). Clients pin it with the hostname check off."""
    cert_path, key_path = data_dir / CERT_FILE, data_dir / KEY_FILE
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "anonymous")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(datetime(2000, 1, 1, tzinfo=UTC))
            .not_valid_after(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))
            .sign(key, hashes.SHA256()))
    write_atomically(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()), mode=0o600)
    write_atomically(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def client_certificate_path(data_dir: str | Path, admin_handle: str) -> Path:
    """Where the client certificate of `301:admin_handle` is (its key is the server's KEY_FILE)."""
    return Path(data_dir) / CLIENT_CERT_DIR / (re.sub(r"[^A-Za-z0-9.]", "_", ascii_upper(admin_handle)) + ".pem")


def ensure_client_certificate(data_dir: Path, admin_handle: str) -> Path:
    """A self-signed client certificate with subject `UID=301:admin_handle` for the admin's HS_PUBKEY (the
    real set-up makes the same with openssl from the admin's key). The HS_PUBKEY is the server key's public
    half, so the certificate is signed with the server key."""
    path = client_certificate_path(data_dir, admin_handle)
    if path.exists():
        return path

    key = serialization.load_pem_private_key((data_dir / KEY_FILE).read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):  # ensure_certificate writes an RSA key; HS_PUBKEY expects one
        raise ValueError(f"{data_dir / KEY_FILE} does not hold an RSA private key")
    name = x509.Name([x509.NameAttribute(NameOID.USER_ID, f"{PUBKEY_INDEX}:{admin_handle}")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(datetime(2000, 1, 1, tzinfo=UTC))
            .not_valid_after(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))
            .sign(key, hashes.SHA256()))
    path.parent.mkdir(exist_ok=True)
    write_atomically(path, cert.public_bytes(serialization.Encoding.PEM))
    return path


def certificate_identity(der: bytes) -> tuple[str | None, tuple[int, int] | None]:
    """A client certificate's identity (its UID, else its CN) and RSA public numbers (n, e)."""

    cert = x509.load_der_x509_certificate(der)
    names = (cert.subject.get_attributes_for_oid(NameOID.USER_ID)
             or cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME))
    key = cert.public_key()
    numbers = (key.public_numbers().n, key.public_numbers().e) if isinstance(key, rsa.RSAPublicKey) else None
    return (str(names[0].value) if names else None), numbers


def jwk_numbers(jwk: Any) -> tuple[int, int] | None:
    if not isinstance(jwk, dict) or jwk.get("kty") != "RSA":
        return None

    def number(text: str) -> int:
        return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")

    return number(jwk["n"]), number(jwk["e"])


def public_key_jwk(cert_path: Path) -> dict[str, str]:
    """The certificate's RSA public key as a JWK, for the admin handle's HS_PUBKEY (index 301). The client
    certificates in clientcerts/ carry the same key."""

    key = x509.load_pem_x509_certificate(cert_path.read_bytes()).public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"{cert_path} does not hold an RSA public key")
    numbers = key.public_numbers()

    def b64url(number: int) -> str:
        return base64.urlsafe_b64encode(number.to_bytes((number.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()

    return {"kty": "RSA", "n": b64url(numbers.n), "e": b64url(numbers.e)}
