"""Signed checkpoints: the log's size and Merkle root, signed, in the C2SP formats.

A checkpoint (C2SP ``tlog-checkpoint``) is the text of a signed note (C2SP
``signed-note``)::

    shelby.log/3f2a9c0d1e4b5a69           origin: names the log
    1234                                  tree size (events in the log)
    K0OyQW7w0YT0wE1o4Sg8mH8fHhZqCk2lVdZQ2yq8rMk=   root hash, base64
    timestamp 1764118000                  extension line: when it was signed (Unix s)

    — shelby.log/3f2a9c0d1e4b5a69 AAAAAMrN...   signature line(s)

The signature line is an em dash (U+2014), a space, the key name, a space, and
base64(4-byte key hash ‖ 64-byte Ed25519 signature over the text above the blank line,
its final newline included). Verifiers ignore signatures by keys they do not know and
accept a note only if a key they trust signed it.
"""

from __future__ import annotations

import base64

import msgspec

from shelby.audit.keys import PublicKey, SigningKey

__all__ = [
    "Checkpoint",
    "NoteError",
    "format_checkpoint",
    "open_checkpoint",
    "open_note",
    "parse_checkpoint",
    "sign_checkpoint",
    "sign_note",
]

DASH = "\u2014 "
TIMESTAMP = "timestamp "


class NoteError(ValueError):
    """A note or checkpoint that is malformed or not signed by a trusted key."""


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    origin: str
    size: int
    root: bytes  # 32 bytes
    timestamp: int | None = None
    extensions: tuple[str, ...] = ()  # extension lines other than the timestamp


def format_checkpoint(cp: Checkpoint) -> str:
    if not cp.origin or "\n" in cp.origin:
        raise ValueError("the origin is one non-empty line")
    lines = [cp.origin, str(cp.size), base64.b64encode(cp.root).decode()]
    if cp.timestamp is not None:
        lines.append(f"{TIMESTAMP}{cp.timestamp}")
    lines.extend(cp.extensions)
    return "".join(line + "\n" for line in lines)


def parse_checkpoint(text: str) -> Checkpoint:
    """The checkpoint a note's text holds; raises ``NoteError`` if it is not one."""
    if not text.endswith("\n"):
        raise NoteError("a checkpoint ends with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise NoteError("a checkpoint has an origin, a tree size and a root hash")
    origin, size_text, root_text, *rest = lines
    if not origin:
        raise NoteError("the checkpoint's origin is empty")
    # The size is decimal with no sign or leading zero, so one size has one spelling.
    if not size_text.isdigit() or not size_text.isascii() or size_text != str(int(size_text)):
        raise NoteError(f"the tree size {size_text!r} is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except ValueError as exc:
        raise NoteError("the root hash is not base64") from exc
    if len(root) != 32 or base64.b64encode(root).decode() != root_text:
        raise NoteError("the root hash is not 32 bytes in standard base64")
    timestamp: int | None = None
    extensions: list[str] = []
    for line in rest:
        if not line:
            raise NoteError("a checkpoint's extension line is never empty")
        if line.startswith(TIMESTAMP) and timestamp is None:
            value = line[len(TIMESTAMP) :]
            if not value.isdigit() or not value.isascii():
                raise NoteError(f"the timestamp {value!r} is not Unix seconds")
            timestamp = int(value)
        else:
            extensions.append(line)
    return Checkpoint(
        origin=origin,
        size=int(size_text),
        root=root,
        timestamp=timestamp,
        extensions=tuple(extensions),
    )


def sign_note(text: str, key: SigningKey) -> str:
    if not text.endswith("\n") or "\n\n" in text:
        raise ValueError("a note's text is non-empty lines, each ending in a newline")
    signature = key.public.hash + key.sign(text.encode())
    return f"{text}\n{DASH}{key.name} {base64.b64encode(signature).decode()}\n"


def open_note(note: str, key: PublicKey) -> str:
    """The note's text, if ``key`` signed it; ``NoteError`` otherwise. Signatures by
    other keys are ignored, as the spec asks."""
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("the note has no signature block")
    text, block = note[: split + 1], note[split + 2 :]
    if any(c < " " and c != "\n" for c in note):
        raise NoteError("a note holds no control characters but newlines")
    if not block.endswith("\n"):
        raise NoteError("the note's signature block does not end with a newline")
    found_ours = False
    for line in block[:-1].split("\n"):
        if not line.startswith(DASH):
            raise NoteError(f"malformed signature line {line!r}")
        name, sep, encoded = line[len(DASH) :].partition(" ")
        if not sep or not name or " " in encoded:
            raise NoteError(f"malformed signature line {line!r}")
        try:
            blob = base64.b64decode(encoded, validate=True)
        except ValueError as exc:
            raise NoteError("a signature is not base64") from exc
        if len(blob) < 5:
            raise NoteError("a signature is too short")
        if name != key.name or blob[:4] != key.hash:
            continue
        found_ours = True
        if key.verify(blob[4:], text.encode()):
            return text
    if found_ours:
        raise NoteError(f"the signature by {key.name} does not verify")
    raise NoteError(f"the note is not signed by {key.name}")


def sign_checkpoint(cp: Checkpoint, key: SigningKey) -> str:
    return sign_note(format_checkpoint(cp), key)


def open_checkpoint(note: str, key: PublicKey, *, origin: str | None = None) -> Checkpoint:
    """The checkpoint in ``note`` once its signature by ``key`` verifies; when
    ``origin`` is given it must be the checkpoint's (the origin names the log)."""
    cp = parse_checkpoint(open_note(note, key))
    if origin is not None and cp.origin != origin:
        raise NoteError(f"the checkpoint is for the log {cp.origin!r}, not {origin!r}")
    return cp
