"""Oblivious HTTP (RFC 9458) encapsulation, client side, for the one suite the enclave offers.

The suite is DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-128-GCM (docs/SEALED.md
"Cryptography"; RFC 9458 section 8.2 makes it mandatory). HPKE (RFC 9180, base mode) comes from
pyhpke, pinned and hash-checked in requirements.txt; this module adds only the RFC 9458 framing:
the key configuration, the request header and HPKE info (section 4.3), and the response keys
derived from an HPKE export (section 4.4). tests/test_vectors.py checks all of it against the
RFC 9458 Appendix A example and pyhpke against RFC 9180 A.1.
"""

import hashlib
import hmac
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKey, KEMKeyPair, PyHPKEError

from .errors import BadKeyConfig, SealedClientError, SealedResponseError

KEM_X25519_HKDF_SHA256 = 0x0020
KDF_HKDF_SHA256 = 0x0001
AEAD_AES_128_GCM = 0x0001
NPK = 32  # X25519 public key and enc
NK = 16  # AES-128-GCM key
NN = 12  # AES-128-GCM nonce
NT = 16  # AES-128-GCM tag
RESPONSE_NONCE_LEN = max(NN, NK)
KEY_CONFIG_LEN = 1 + 2 + NPK + 2 + 4  # 41: key_id, kem_id, pk, symmetric length, (kdf, aead)
REQUEST_LABEL = b"message/bhttp request"
RESPONSE_LABEL = b"message/bhttp response"

_SUITE = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES128_GCM)


@dataclass(frozen=True)
class KeyConfig:
    """One gateway key: its 8-bit id and X25519 public key (the suite is fixed)."""

    key_id: int
    public_key: bytes

    def encode(self):
        """The 41-byte key configuration: key_id 0020 pk 0004 0001 0001."""
        return (
            struct.pack(">BH", self.key_id, KEM_X25519_HKDF_SHA256)
            + self.public_key
            + struct.pack(">HHH", 4, KDF_HKDF_SHA256, AEAD_AES_128_GCM)
        )

    def request_header(self):
        """RFC 9458 section 4.3 hdr: key_id, kem_id, kdf_id, aead_id (7 bytes)."""
        return struct.pack(
            ">BHHH", self.key_id, KEM_X25519_HKDF_SHA256, KDF_HKDF_SHA256, AEAD_AES_128_GCM
        )


def parse_key_config(data):
    """Exactly one key configuration of the suite above, 41 bytes, else BadKeyConfig."""
    if not isinstance(data, (bytes, bytearray)):
        raise BadKeyConfig(f"public_key is a {type(data).__name__}, not bytes")
    data = bytes(data)
    if len(data) != KEY_CONFIG_LEN:
        raise BadKeyConfig(
            f"public_key is {len(data)} bytes, not one {KEY_CONFIG_LEN}-byte key configuration "
            "(X25519 / HKDF-SHA256 / AES-128-GCM)"
        )
    key_id, kem_id = struct.unpack(">BH", data[:3])
    sym_len, kdf_id, aead_id = struct.unpack(">HHH", data[3 + NPK :])
    if (kem_id, sym_len, kdf_id, aead_id) != (
        KEM_X25519_HKDF_SHA256,
        4,
        KDF_HKDF_SHA256,
        AEAD_AES_128_GCM,
    ):
        raise BadKeyConfig(
            f"key configuration suite kem 0x{kem_id:04x}, {sym_len // 4} symmetric suite(s) "
            f"(first kdf 0x{kdf_id:04x}, aead 0x{aead_id:04x}); only kem 0x0020, kdf 0x0001, "
            "aead 0x0001 is accepted"
        )
    return KeyConfig(key_id, data[3 : 3 + NPK])


class PendingResponse:
    """What the client keeps after sealing a request: enough to open that request's answer."""

    def __init__(self, context, enc):
        self._context = context
        self._enc = enc

    def response_keys(self, response_nonce):
        """RFC 9458 section 4.4: AEAD key and nonce for the response with this response_nonce."""
        secret = self._context.export(RESPONSE_LABEL, RESPONSE_NONCE_LEN)
        prk = hmac.new(self._enc + response_nonce, secret, hashlib.sha256).digest()  # HKDF-Extract
        key = HKDFExpand(hashes.SHA256(), NK, b"key").derive(prk)
        nonce = HKDFExpand(hashes.SHA256(), NN, b"nonce").derive(prk)
        return key, nonce

    def open(self, encapsulated_response):
        """The Binary HTTP response inside a message/ohttp-res body, or SealedResponseError."""
        data = bytes(encapsulated_response)
        if len(data) < RESPONSE_NONCE_LEN + NT:
            raise SealedResponseError(
                f"encapsulated response is {len(data)} bytes, shorter than its nonce and tag "
                f"({RESPONSE_NONCE_LEN + NT})"
            )
        key, nonce = self.response_keys(data[:RESPONSE_NONCE_LEN])
        try:
            return AESGCM(key).decrypt(nonce, data[RESPONSE_NONCE_LEN:], b"")
        except InvalidTag:
            raise SealedResponseError(
                "encapsulated response does not open (bad tag): altered in transit, or not "
                "from the enclave this request was sealed to"
            ) from None


def encapsulate_request(key, message, ephemeral_secret=None):
    """Seal `message` to `key` (a KeyConfig): (message/ohttp-req bytes, PendingResponse).

    ephemeral_secret fixes the sender's X25519 key; it exists for the RFC test vectors only and
    must stay None otherwise (a fresh random key per request).
    """
    header = key.request_header()
    try:
        recipient = _SUITE.kem.deserialize_public_key(key.public_key)
        ephemeral = None
        if ephemeral_secret is not None:
            private = X25519PrivateKey.from_private_bytes(ephemeral_secret)
            ephemeral = KEMKeyPair(
                KEMKey.from_pyca_cryptography_key(private),
                KEMKey.from_pyca_cryptography_key(private.public_key()),
            )
        enc, context = _SUITE.create_sender_context(
            recipient, info=REQUEST_LABEL + b"\x00" + header, eks=ephemeral
        )
        sealed = context.seal(message, aad=b"")
    except (ValueError, PyHPKEError) as err:  # e.g. a low-order X25519 point: no shared secret
        raise SealedClientError(f"cannot seal to key {key.key_id}: {err}") from err
    return header + enc + sealed, PendingResponse(context, enc)
