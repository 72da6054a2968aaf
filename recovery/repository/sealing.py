"""Keys and sealed files of an encrypted repository (docs/FORMAT.md, "Encrypted repositories").

Called by :mod:`recovery.repository.store` only. AES-256-GCM and Argon2id come from
``cryptography`` (OpenSSL underneath: AES-NI, a vetted Argon2id), imported when a key is first
used (~25 ms that a plain location's commands do without); keyed BLAKE3 from ``blake3``.
Every field of the header's ``encryption`` object is validated before use, so a hostile header
gives our own error, never a huge allocation or a library exception.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

import blake3

from recovery.errors import IntegrityError, NotARepository, WrongPassphrase

CIPHER = "aes-256-gcm"
SEAL_MAGIC = b"RSE1"
NONCE = 12
TAG = 16
SEAL_OVERHEAD = len(SEAL_MAGIC) + NONCE + TAG
MASTER_AAD = b"recovery master key"
MASTER_SIZE = 64

# Argon2id at 64 MiB, 3 passes, 4 lanes: ~0.2 s here; RFC 9106's second recommended setting.
KDF_ITERATIONS, KDF_LANES, KDF_MEMORY_KIB = 3, 4, 64 * 1024

_derive_lock = threading.Lock()


@dataclass(frozen=True)
class KdfParams:
    salt: bytes
    iterations: int
    lanes: int
    memory_kib: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": "argon2id",
            "salt": self.salt.hex(),
            "iterations": self.iterations,
            "lanes": self.lanes,
            "memory_kib": self.memory_kib,
        }

    @classmethod
    def from_json(cls, value: object, where: str) -> KdfParams:
        def bad(why: str) -> NotARepository:
            return NotARepository(f"{where}: the encryption settings are damaged ({why})")

        if not isinstance(value, dict) or value.get("name") != "argon2id":
            raise bad("unknown key derivation")
        try:
            salt = bytes.fromhex(value["salt"])
            iterations, lanes, memory = value["iterations"], value["lanes"], value["memory_kib"]
        except (KeyError, TypeError, ValueError) as e:
            raise bad(f"{e!r}") from None
        if len(salt) < 16 or len(salt) > 64:
            raise bad("salt length")
        for n, lo, hi in ((iterations, 1, 64), (lanes, 1, 64), (memory, 8 * 1024, 4 << 20)):
            if not isinstance(n, int) or isinstance(n, bool) or not lo <= n <= hi:
                raise bad("key derivation parameters out of range")
        if memory < 8 * lanes:
            raise bad("key derivation memory below 8 KiB per lane")
        return cls(salt, iterations, lanes, memory)

    def derive(self, passphrase: str) -> bytes:
        # One derivation at a time: two threads deriving at once with lanes > 1 hang for good
        # (cryptography 50.0.2; two bare Argon2id.derive calls in two threads are enough).
        with _derive_lock:
            return self._derive(passphrase)

    def _derive(self, passphrase: str) -> bytes:
        from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

        return Argon2id(
            salt=self.salt,
            length=32,
            iterations=self.iterations,
            lanes=self.lanes,
            memory_cost=self.memory_kib,
        ).derive(passphrase.encode("utf-8"))


class Keys:
    """An unlocked repository's keys: sealing (data key) and chunk naming (id key)."""

    def __init__(self, master: bytes) -> None:
        if len(master) != MASTER_SIZE:
            raise ValueError("master key must be 64 bytes")
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.master = master
        self._aead = AESGCM(master[:32])
        self._invalid_tag = InvalidTag
        self.id_key = master[32:]

    def hash(self, data: bytes | bytearray | memoryview) -> bytes:
        return blake3.blake3(data, key=self.id_key).digest()

    def seal(self, plaintext: bytes | bytearray | memoryview, aad: bytes) -> bytearray:
        """The sealed file of ``plaintext``, built in one buffer (no copy of the ciphertext to
        put the magic and nonce in front of it)."""
        nonce = os.urandom(NONCE)
        sealed = bytearray(SEAL_OVERHEAD + len(plaintext))
        sealed[:4] = SEAL_MAGIC
        sealed[4 : 4 + NONCE] = nonce
        with memoryview(sealed) as out:
            self._aead.encrypt_into(nonce, plaintext, aad, out[4 + NONCE :])
        return sealed

    def open(self, blob: bytes | bytearray | memoryview, aad: bytes, what: str) -> bytes:
        """The plaintext of a sealed file; IntegrityError naming ``what`` when it was altered.
        For manifests and notes; chunks are opened into a reused buffer (:meth:`open_into`)."""
        self.plaintext_size(blob, what)
        view = memoryview(blob)
        try:
            return self._aead.decrypt(view[4 : 4 + NONCE], view[4 + NONCE :], aad)
        except self._invalid_tag:
            raise IntegrityError(
                f"{what} is damaged: it fails authentication (altered or truncated)"
            ) from None

    def plaintext_size(self, blob: bytes | bytearray | memoryview, what: str) -> int:
        """How many bytes :meth:`open_into` writes for ``blob``; IntegrityError when ``blob``
        is too short or not a sealed file at all."""
        if len(blob) < SEAL_OVERHEAD or blob[:4] != SEAL_MAGIC:
            raise IntegrityError(f"{what} is damaged (not a sealed file, or truncated)")
        return len(blob) - SEAL_OVERHEAD

    def open_into(
        self, blob: bytes | bytearray | memoryview, aad: bytes, what: str, out: bytearray
    ) -> memoryview:
        """Authenticate and decrypt ``blob`` into the front of ``out`` (a buffer reused by its
        caller: no allocation, no zeroing, no page faults per chunk); the plaintext's view.
        Only after this returns does ``out`` hold authenticated bytes: when it raises, ``out``
        may hold unauthenticated ones, which the caller must not use."""
        n = self.plaintext_size(blob, what)
        if len(out) < n:
            raise ValueError(f"{what}: a {n}-byte plaintext does not fit {len(out)} bytes")
        view = memoryview(blob)  # no copy of a 4 MiB chunk just to drop its first 16 bytes
        plain = memoryview(out)[:n]
        try:
            self._aead.decrypt_into(view[4 : 4 + NONCE], view[4 + NONCE :], aad, plain)
        except self._invalid_tag:
            raise IntegrityError(
                f"{what} is damaged: it fails authentication (altered or truncated)"
            ) from None
        return plain


def new_encryption(passphrase: str) -> tuple[dict[str, Any], Keys]:
    """The header's ``encryption`` object for a new repository, and its keys."""
    keys = Keys(os.urandom(MASTER_SIZE))
    return wrap(keys, passphrase), keys


def wrap(keys: Keys, passphrase: str) -> dict[str, Any]:
    """The ``encryption`` object holding ``keys`` under ``passphrase`` (fresh salt and nonce)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    kdf = KdfParams(os.urandom(16), KDF_ITERATIONS, KDF_LANES, KDF_MEMORY_KIB)
    nonce = os.urandom(NONCE)
    wrapped = nonce + AESGCM(kdf.derive(passphrase)).encrypt(nonce, keys.master, MASTER_AAD)
    _remember(wrapped, kdf, passphrase, keys)
    return {"cipher": CIPHER, "kdf": kdf.to_json(), "key": wrapped.hex()}


def check_encryption(value: object, where: str) -> tuple[KdfParams, bytes]:
    """Validate a header's ``encryption`` object: its KDF parameters and the wrapped key."""
    if not isinstance(value, dict) or value.get("cipher") != CIPHER:
        raise NotARepository(f"{where}: encrypted with an unknown cipher")
    kdf = KdfParams.from_json(value.get("kdf"), where)
    try:
        wrapped = bytes.fromhex(value["key"])
    except (KeyError, TypeError, ValueError):
        raise NotARepository(f"{where}: the wrapped key is damaged") from None
    if len(wrapped) != NONCE + MASTER_SIZE + TAG:
        raise NotARepository(f"{where}: the wrapped key has the wrong length")
    return kdf, wrapped


_unlocked: dict[tuple[object, ...], Keys] = {}
_unlocked_lock = threading.Lock()


def unlock(value: object, passphrase: str, where: str) -> Keys:
    """The keys ``value`` wraps, opened with ``passphrase``; WrongPassphrase when it fails.

    One process derives the key-encryption key once per header and passphrase: a backup or a
    restore opens its location two or three times (plan, run, listing), and each Argon2id
    derivation costs about 0.15 s of one core by design. The cache holds the master keys the
    process unlocked already, which it holds in memory anyway while it works.
    """
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    kdf, wrapped = check_encryption(value, where)
    with _unlocked_lock:
        known = _unlocked.get(_cache_key(wrapped, kdf, passphrase))
    if known is not None:
        return known
    try:
        master = AESGCM(kdf.derive(passphrase)).decrypt(
            wrapped[:NONCE], wrapped[NONCE:], MASTER_AAD
        )
    except InvalidTag:
        raise WrongPassphrase(
            f"wrong passphrase for {where}: give the passphrase this location was encrypted with"
        ) from None
    keys = Keys(master)
    _remember(wrapped, kdf, passphrase, keys)
    return keys


def _cache_key(wrapped: bytes, kdf: KdfParams, passphrase: str) -> tuple[object, ...]:
    # The passphrase takes part only as a hash; a wrong one is never a hit.
    return (wrapped, kdf, blake3.blake3(kdf.salt + passphrase.encode("utf-8")).digest())


def _remember(wrapped: bytes, kdf: KdfParams, passphrase: str, keys: Keys) -> None:
    with _unlocked_lock:
        _unlocked[_cache_key(wrapped, kdf, passphrase)] = keys
