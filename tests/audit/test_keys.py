"""The server's signing key: made once, owner-only, reloaded as the same key; an
operator's OpenSSL key is taken as it is; pinned keys parse in both spellings."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from shelby.audit.keys import SigningKey, load_or_create, parse_public_key


def test_a_new_key_file_is_owner_only_and_reloads_as_the_same_key(tmp_path: Path) -> None:
    """First start writes a 0600 PEM file; the next start reads the same key from it."""
    path = tmp_path / "data" / "signing-key.pem"
    first = load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create(path).public == first.public


def test_an_operator_key_must_exist(tmp_path: Path) -> None:
    """A key file the operator named is never invented."""
    with pytest.raises(FileNotFoundError):
        load_or_create(tmp_path / "missing.pem", create=False)


def test_a_key_made_by_openssl_signs_and_verifies(tmp_path: Path) -> None:
    """`openssl genpkey -algorithm ed25519` output is a valid signing key."""
    path = tmp_path / "op.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(path)], check=True)
    key = load_or_create(path, create=False)
    assert key.public.verify(key.sign(b"m"), b"m")
    assert not key.public.verify(key.sign(b"m"), b"n")


def test_pinned_keys_parse_from_pem_and_verifier_key() -> None:
    """The PEM and the signed-note verifier key of one key parse to that key."""
    key = SigningKey.generate()
    assert parse_public_key(key.public.pem) == key.public
    assert parse_public_key(key.public.verifier_key + "\n") == key.public


def test_a_verifier_key_with_a_wrong_hash_is_refused() -> None:
    """The key hash in a verifier key must match its name and key."""
    name, hash_hex, b64 = SigningKey.generate().public.verifier_key.split("+", 2)
    wrong = f"{int(hash_hex, 16) ^ 1:08x}"
    with pytest.raises(ValueError):
        parse_public_key(f"{name}+{wrong}+{b64}")


def test_verifier_keys_with_plus_in_their_base64_parse() -> None:
    """Base64 may hold '+': only the first two separate the fields."""
    for _ in range(64):
        key = SigningKey.generate()
        if "+" in key.public.verifier_key.split("+", 2)[2]:
            assert parse_public_key(key.public.verifier_key) == key.public
            return
    raise AssertionError("64 random keys without '+' in their base64")
