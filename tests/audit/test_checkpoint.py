"""Signed notes and checkpoints in the C2SP formats: byte-exact against the published
Go test vector, and refused after any change to the text, a field or the signature."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from shelby.audit.checkpoint import (
    Checkpoint,
    NoteError,
    format_checkpoint,
    open_checkpoint,
    open_note,
    parse_checkpoint,
    sign_checkpoint,
    sign_note,
)
from shelby.audit.keys import SigningKey, parse_public_key

# The test vector of golang.org/x/mod/sumdb/note (note_test.go, TestSign / TestOpen).
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZ"
    "SNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)

KEY = SigningKey.generate()
CP = Checkpoint(origin=KEY.name, size=1234, root=hashlib.sha256(b"r").digest(), timestamp=17)


def _go_signing_key() -> SigningKey:
    seed = base64.b64decode(GO_SKEY.split("+", 4)[4])[1:]
    return SigningKey(Ed25519PrivateKey.from_private_bytes(seed), "PeterNeumann")


def test_signing_reproduces_the_go_note_package_byte_for_byte() -> None:
    """Our signed note for the Go vector's key and text is the Go package's output."""
    assert sign_note(GO_TEXT, _go_signing_key()) == GO_NOTE


def test_the_go_verifier_key_opens_the_go_note() -> None:
    """A verifier key in Go's spelling parses, matches our derivation, and opens the note."""
    pub = parse_public_key(GO_VKEY)
    assert pub == _go_signing_key().public
    assert pub.verifier_key == GO_VKEY
    assert open_note(GO_NOTE, pub) == GO_TEXT


def test_key_hash_is_the_spec_derivation() -> None:
    """Key hash = first 4 bytes of SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)."""
    raw = KEY.public.raw
    expected = hashlib.sha256(KEY.name.encode() + b"\n\x01" + raw).digest()[:4]
    assert KEY.public.hash == expected
    line = sign_note("x\n", KEY).splitlines()[-1]
    assert line.startswith(f"\u2014 {KEY.name} ")
    blob = base64.b64decode(line.rsplit(" ", 1)[1])
    assert blob[:4] == expected and len(blob) == 68


def test_checkpoint_text_is_origin_size_root_then_extensions() -> None:
    """The body is the tlog-checkpoint layout, and it parses back to the same fields."""
    text = format_checkpoint(CP)
    assert text == f"{KEY.name}\n1234\n{base64.b64encode(CP.root).decode()}\ntimestamp 17\n"
    assert parse_checkpoint(text) == CP
    assert open_checkpoint(sign_checkpoint(CP, KEY), KEY.public, origin=KEY.name) == CP


def test_a_note_signed_by_another_key_is_refused() -> None:
    """Only a signature by the pinned key counts."""
    other = SigningKey.generate()
    with pytest.raises(NoteError):
        open_checkpoint(sign_checkpoint(CP, other), KEY.public)


def test_a_checkpoint_for_another_origin_is_refused() -> None:
    """The origin names the log: a checkpoint of another log does not pass as this one's."""
    with pytest.raises(NoteError):
        open_checkpoint(sign_checkpoint(CP, KEY), KEY.public, origin="elsewhere/log")


@settings(max_examples=300)
@given(st.data())
def test_any_changed_character_of_a_signed_checkpoint_is_refused(data: st.DataObject) -> None:
    """Replacing any one character of the note, text or signature, never yields the
    original checkpoint: opening fails."""
    note = sign_checkpoint(CP, KEY)
    i = data.draw(st.integers(0, len(note) - 1))
    c = data.draw(st.characters(codec="utf-8").filter(lambda ch: ch != note[i]))
    changed = note[:i] + c + note[i + 1 :]
    with pytest.raises(NoteError):
        open_checkpoint(changed, KEY.public)


@settings(max_examples=200)
@given(
    size=st.integers(0, 2**40),
    root=st.binary(min_size=32, max_size=32),
    timestamp=st.integers(0, 2**34),
)
def test_any_changed_field_fails_under_the_old_signature(
    size: int, root: bytes, timestamp: int
) -> None:
    """A checkpoint whose size, root or time differs, carried under the original's
    signature line, does not verify."""
    note = sign_checkpoint(CP, KEY)
    signature_block = note[note.rfind("\n\n") + 1 :]
    forged = Checkpoint(origin=CP.origin, size=size, root=root, timestamp=timestamp)
    if forged == CP:
        return
    with pytest.raises(NoteError):
        open_checkpoint(format_checkpoint(forged) + signature_block, KEY.public)


def test_malformed_checkpoints_are_refused() -> None:
    """Sizes with signs or leading zeros, short roots and empty extension lines fail."""
    root = base64.b64encode(CP.root).decode()
    for text in (
        f"o\n+5\n{root}\n",
        f"o\n05\n{root}\n",
        "o\n5\nAAAA\n",
        f"o\n5\n{root}\n\n",
        f"o\n5\n{root}",
        "o\n5\n",
    ):
        with pytest.raises(NoteError):
            parse_checkpoint(text)
