"""A fixed Ed25519 SSH host key for a built image, written in OpenSSH's own file format.

Why this exists: the harness checks a guest's SSH host key against the one recorded for its
image, so the image must carry a key known at build time, and the same lock must give the same
image bytes. The key is derived from a seed (the lock's hash), and the private-key file is
written here because ``cryptography`` puts random check bytes into OpenSSH files. This key
proves that the harness reached *this image* and not another machine; it is not a secret (it
follows from the public lock), which is right for a throwaway test guest and wrong for
anything else.
"""
from __future__ import annotations

import base64
import hashlib
import struct

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

KEY_TYPE = b"ssh-ed25519"


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def host_key_files(seed: bytes, comment: str) -> tuple[bytes, bytes]:
    """(private key file, public key line) for the Ed25519 key made from ``seed``."""
    secret = hashlib.sha256(b"refvm ssh host key\0" + seed).digest()
    public = Ed25519PrivateKey.from_private_bytes(secret).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw)
    blob = _string(KEY_TYPE) + _string(public)
    check = hashlib.sha256(b"check\0" + secret).digest()[:4]
    section = (check + check + _string(KEY_TYPE) + _string(public) +
               _string(secret + public) + _string(comment.encode()))
    section += bytes(range(1, 1 + (-len(section) % 8)))
    body = (b"openssh-key-v1\0" + _string(b"none") + _string(b"none") + _string(b"") +
            struct.pack(">I", 1) + _string(blob) + _string(section))
    text = base64.b64encode(body)
    lines = [text[i:i + 70] for i in range(0, len(text), 70)]
    private = (b"-----BEGIN OPENSSH PRIVATE KEY-----\n" + b"\n".join(lines) +
               b"\n-----END OPENSSH PRIVATE KEY-----\n")
    return private, KEY_TYPE + b" " + base64.b64encode(blob) + b" " + comment.encode() + b"\n"
