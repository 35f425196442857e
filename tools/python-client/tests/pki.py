"""Test certificates and attestation documents, made here with cryptography and cbor2.

A Pki is a root, one intermediate and a leaf, all P-384 and signed with ECDSA-SHA384 like the
Nitro chain; document() builds a COSE_Sign1 attestation document the way the NSM does (untagged
array, protected header {1: -35}, payload map, raw r || s signature over the Sig_structure), with
knobs to break each property the client checks.
"""

import datetime
import hashlib

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z, the pinned check time of the unit tests
HOUR = 3600
DAY = 24 * HOUR
PCRS = {
    0: hashlib.sha384(b"test image").digest(),
    1: hashlib.sha384(b"test kernel").digest(),
    2: hashlib.sha384(b"test application").digest(),
    3: bytes(48),
    4: bytes(48),
}
USER_DATA = b"nitro-ml-attest/1 model-sha256=" + b"ab" * 32 + b" debug=0"


def p384():
    return ec.generate_private_key(ec.SECP384R1())


def _time(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def certificate(
    subject, key, issuer, issuer_key, not_before, not_after, ca, path_length=None, key_usage=True
):
    """One certificate; ca=None leaves basicConstraints out."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_time(not_before))
        .not_valid_after(_time(not_after))
    )
    if ca is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=path_length), critical=True
        )
    if key_usage:
        usage = dict.fromkeys(
            [
                "digital_signature",
                "content_commitment",
                "key_encipherment",
                "data_encipherment",
                "key_agreement",
                "key_cert_sign",
                "crl_sign",
                "encipher_only",
                "decipher_only",
            ],
            False,
        )
        usage.update(
            {"key_cert_sign": True, "crl_sign": True} if ca else {"digital_signature": True}
        )
        builder = builder.add_extension(x509.KeyUsage(**usage), critical=True)
    return builder.sign(issuer_key, hashes.SHA384())


def der(cert):
    return cert.public_bytes(serialization.Encoding.DER)


class Pki:
    """root -> intermediate (CA, path length 0) -> leaf, valid around `now` like Nitro's."""

    def __init__(self, name="test", now=NOW, leaf_window=(-HOUR, 2 * HOUR), intermediate_ca=True):
        self.name = name
        self.root_key, self.intermediate_key, self.leaf_key = p384(), p384(), p384()
        self.root = certificate(
            f"{name} root",
            self.root_key,
            f"{name} root",
            self.root_key,
            now - 365 * DAY,
            now + 3650 * DAY,
            ca=True,
        )
        self.intermediate = certificate(
            f"{name} intermediate",
            self.intermediate_key,
            f"{name} root",
            self.root_key,
            now - DAY,
            now + 20 * DAY,
            ca=intermediate_ca,
            path_length=0 if intermediate_ca else None,
            key_usage=intermediate_ca,
        )
        self.leaf = certificate(
            f"{name} leaf",
            self.leaf_key,
            f"{name} intermediate",
            self.intermediate_key,
            now + leaf_window[0],
            now + leaf_window[1],
            ca=False,
        )

    @property
    def root_pem(self):
        return self.root.public_bytes(serialization.Encoding.PEM)

    @property
    def root_sha256(self):
        return hashlib.sha256(der(self.root)).digest()

    def cabundle(self):
        return [der(self.root), der(self.intermediate)]


def key_config(key_id=7, public_key=bytes(range(32))):
    return bytes([key_id]) + b"\x00\x20" + public_key + b"\x00\x04\x00\x01\x00\x01"


def sign(key, protected, payload):
    """The raw r || s ES384 signature over the COSE Sig_structure."""
    to_be_signed = cbor2.dumps(["Signature1", protected, b"", payload])
    r, s = decode_dss_signature(key.sign(to_be_signed, ec.ECDSA(hashes.SHA384())))
    return r.to_bytes(48, "big") + s.to_bytes(48, "big")


def payload_fields(
    pki, nonce, timestamp_ms=NOW * 1000, pcrs=PCRS, public_key=None, user_data=USER_DATA
):
    return {
        "module_id": f"i-0123456789abcdef0-enc0123456789abcdef ({pki.name})",
        "digest": "SHA384",
        "timestamp": timestamp_ms,
        "pcrs": dict(pcrs),
        "certificate": der(pki.leaf),
        "cabundle": pki.cabundle(),
        "public_key": key_config() if public_key is None else public_key,
        "user_data": user_data,
        "nonce": nonce,
    }


def document(
    pki, nonce, *, fields=None, alg=-35, protected=None, signer=None, tag=False, mutate=None, **kw
):
    """A signed attestation document; `fields` replaces the payload map, `mutate` edits the
    signature bytes after signing; other keywords go to payload_fields()."""
    fields = payload_fields(pki, nonce, **kw) if fields is None else fields
    protected = cbor2.dumps({1: alg}) if protected is None else protected
    payload = cbor2.dumps(fields)
    signature = sign(signer or pki.leaf_key, protected, payload)
    if mutate is not None:
        signature = mutate(signature)
    item = [protected, {}, payload, signature]
    return cbor2.dumps(cbor2.CBORTag(18, item) if tag else item)
