"""ECDSA P-256 helpers for the sandbox's signed SendGrid events."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec


def ec_private_key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _load(private_pem: str) -> ec.EllipticCurvePrivateKey:
    return serialization.load_pem_private_key(private_pem.encode(), password=None)


def ec_public_key_b64(private_pem: str) -> str:
    """The public half as SendGrid shows it: base64 of the DER SubjectPublicKeyInfo."""
    der = (
        _load(private_pem)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(der).decode()


def ec_sign_b64(private_pem: str, message: bytes) -> str:
    return base64.b64encode(_load(private_pem).sign(message, ec.ECDSA(hashes.SHA256()))).decode()
