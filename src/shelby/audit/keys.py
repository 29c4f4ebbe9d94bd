"""The server's Ed25519 key: it signs checkpoints (``audit.checkpoint``) and attestations
(``audit.dsse``), and auditors pin its public half.

The private key is a PKCS#8 PEM file, the form ``openssl genpkey -algorithm ed25519``
writes, so an operator can bring their own (``--signing-key`` / ``SHELBY_SIGNING_KEY``).
Otherwise the server makes one at first start in its data directory, owner-only.

The public key is published in three spellings: raw (base64), PEM, and the verifier
key of the C2SP signed-note spec (``<name>+<key hash hex>+<base64(0x01 ‖ key)>``), which
Go's ``golang.org/x/mod/sumdb/note`` and the transparency-dev tools read as they are.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "ALG_ED25519",
    "KEY_FILE_NAME",
    "PublicKey",
    "SigningKey",
    "key_hash",
    "load_or_create",
    "parse_public_key",
]

KEY_FILE_NAME = "signing-key.pem"
ALG_ED25519 = 0x01  # the signed-note signature type for Ed25519


def key_hash(name: str, raw_public: bytes) -> bytes:
    """The 4-byte key hash that prefixes every signature of a signed note:
    SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ public key), first four bytes."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + raw_public).digest()[:4]


def _check_name(name: str) -> str:
    # The signed-note grammar: a name is non-empty, has no white space and no '+'
    # (the verifier key string uses '+' as its separator).
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise ValueError(f"{name!r} cannot be a signed-note key name")
    return name


class PublicKey:
    """A named Ed25519 public key: what an auditor pins."""

    __slots__ = ("_key", "name", "raw")

    def __init__(self, name: str, raw: bytes) -> None:
        if len(raw) != 32:
            raise ValueError("an Ed25519 public key is 32 bytes")
        self.name = _check_name(name)
        self.raw = raw
        self._key = Ed25519PublicKey.from_public_bytes(raw)

    @property
    def hash(self) -> bytes:
        return key_hash(self.name, self.raw)

    @property
    def key_id(self) -> str:
        """The DSSE ``keyid``: hex SHA-256 of the raw public key."""
        return hashlib.sha256(self.raw).hexdigest()

    @property
    def verifier_key(self) -> str:
        encoded = base64.b64encode(bytes([ALG_ED25519]) + self.raw).decode()
        return f"{self.name}+{self.hash.hex()}+{encoded}"

    @property
    def pem(self) -> str:
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and (self.name, self.raw) == (other.name, other.raw)

    def __hash__(self) -> int:
        return hash((self.name, self.raw))


def default_name(raw_public: bytes) -> str:
    """A key's name, and the log's checkpoint origin, when nothing else names it: unique
    to the key, so two Shelby servers never issue checkpoints an auditor could confuse."""
    return f"shelby.log/{hashlib.sha256(raw_public).hexdigest()[:16]}"


class SigningKey:
    __slots__ = ("_key", "public")

    def __init__(self, key: Ed25519PrivateKey, name: str | None = None) -> None:
        self._key = key
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public = PublicKey(name or default_name(raw), raw)

    @property
    def name(self) -> str:
        return self.public.name

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def generate(cls, name: str | None = None) -> SigningKey:
        return cls(Ed25519PrivateKey.generate(), name)

    @classmethod
    def from_pem(cls, data: bytes, name: str | None = None) -> SigningKey:
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the signing key must be an Ed25519 private key")
        return cls(key, name)


def load_or_create(path: str | Path, *, create: bool = True) -> SigningKey:
    """The key at ``path``; when there is none and ``create`` holds, a new one written
    there with mode 0600 from the first byte (never chmodded after the fact)."""
    path = Path(path)
    try:
        return SigningKey.from_pem(path.read_bytes())
    except FileNotFoundError:
        if not create:
            raise
    key = SigningKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: two servers starting on one data directory must not each write a key
    # and sign with different ones; the loser reads the winner's.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return SigningKey.from_pem(path.read_bytes())
    with os.fdopen(fd, "wb") as f:
        f.write(key.pem())
    return key


def parse_public_key(text: str, name: str | None = None) -> PublicKey:
    """A pinned key as an auditor keeps it: a signed-note verifier key
    (``name+hash+base64``), or a PEM public key (named ``name``, or by default)."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("the public key must be an Ed25519 key")
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return PublicKey(name or default_name(raw), raw)
    parts = text.split("+", 2)
    if len(parts) != 3:
        raise ValueError("not a PEM public key nor a verifier key (name+hash+base64)")
    key_name, hash_hex, encoded = parts
    blob = base64.b64decode(encoded, validate=True)
    if len(blob) != 33 or blob[0] != ALG_ED25519:
        raise ValueError("the verifier key is not an Ed25519 key")
    public = PublicKey(key_name, blob[1:])
    if public.hash.hex() != hash_hex.lower():
        raise ValueError("the verifier key's hash does not match its name and key")
    return public
