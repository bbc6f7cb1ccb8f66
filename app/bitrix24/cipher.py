"""Tokens at rest: Fernet (AES-128-CBC + HMAC-SHA256) with keys from the environment, rotatable.

`MMHUB_TOKEN_KEYS` holds one or more Fernet keys, comma-separated, newest first: the first encrypts, any decrypts,
so a new key is put in front, `mmhub bitrix24 rotate-key` re-encrypts every stored token with it, and then the old
key can go.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class CipherError(Exception):
    """A stored token cannot be read with the configured keys (a key was removed too early)."""


class TokenCipher:
    """Encrypt and decrypt tokens with the configured keys."""

    def __init__(self, keys: str) -> None:
        parts = [part.strip() for part in keys.split(",") if part.strip()]
        if not parts:
            raise ValueError("MMHUB_TOKEN_KEYS is empty")
        try:
            self._fernet = MultiFernet([Fernet(part.encode()) for part in parts])
        except ValueError:
            raise ValueError(
                "MMHUB_TOKEN_KEYS must be Fernet keys (32 url-safe base64 bytes each), comma-separated;"
                " make one with: mmhub bitrix24 new-key"
            ) from None

    def encrypt(self, plain: str) -> bytes:
        return self._fernet.encrypt(plain.encode())

    def decrypt(self, token: bytes) -> str:
        try:
            return self._fernet.decrypt(bytes(token)).decode()
        except InvalidToken:
            raise CipherError("a stored token cannot be decrypted with MMHUB_TOKEN_KEYS") from None

    def rotate(self, token: bytes) -> bytes:
        """The same plain text under the newest key."""
        try:
            return self._fernet.rotate(bytes(token))
        except InvalidToken:
            raise CipherError("a stored token cannot be decrypted with MMHUB_TOKEN_KEYS") from None


def new_key() -> str:
    """A fresh Fernet key, for MMHUB_TOKEN_KEYS."""
    return Fernet.generate_key().decode()
