"""Verification of a Nitro attestation document, every check of docs/SEALED.md, in its order.

verify_document() is pure (bytes, the nonce sent, a Policy -> VerifiedKey): no network, and the
check time can be pinned, so every refusal is tested on documents made in the tests. It fails
closed: each check raises its own VerificationError subclass (errors.py), and the key is handed
out only when all of them passed. The document comes through the parent, which the client does
not trust, so every byte of it is treated as hostile until its signature chain is checked.
"""

import hashlib
import hmac
import io
import json
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from . import errors
from .ohttp import parse_key_config

# AWS Nitro Enclaves root G1 (CN=aws.nitro-enclaves): SHA-256 of its DER, as AWS publishes it.
AWS_NITRO_ROOT_SHA256 = bytes.fromhex(
    "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
)
USER_DATA_PREFIX = b"nitro-ml-attest/1 "
COSE_SIGN1_TAG = 18
ES384 = -35
PCR_LEN = 48  # SHA-384
MAX_PCR_INDEX = 31
MAX_DOCUMENT_LEN = 16 * 1024  # shared/src/limits.rs MAX_DOCUMENT_LEN
MAX_CABUNDLE = 16
DEFAULT_MAX_AGE = 300.0
DEFAULT_LEEWAY = 60.0


class DevRootWarning(UserWarning):
    """A document was accepted on the development root: it does not come from a Nitro enclave."""


def _pcr_map(pcrs):
    """A read-only {index: 48 bytes} copy, or MeasurementsError."""
    out = {}
    for index, value in dict(pcrs).items():
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= MAX_PCR_INDEX:
            raise errors.MeasurementsError(f"PCR index {index!r} is not 0 to {MAX_PCR_INDEX}")
        if not isinstance(value, (bytes, bytearray)) or len(value) != PCR_LEN:
            raise errors.MeasurementsError(f"PCR{index} pin is not {PCR_LEN} bytes")
        out[index] = bytes(value)
    return MappingProxyType(out)


@dataclass(frozen=True)
class Policy:
    """What the client accepts (docs/SEALED.md, checks 2, 5 and 6).

    pcrs: PCR index -> expected 48 bytes (load_measurements() reads nitro-cli's file).
    dev_root_pem: the development NSM's root certificate (PEM), accepted besides the AWS root
        only when given; a document on it raises a DevRootWarning.
    allow_debug: accept an all-zero PCR0 (an enclave in debug mode, whose memory the parent
        can read). no_pcr_check: accept a document with nothing pinned (development only).
    max_age, leeway: seconds. now: the check time (seconds since the epoch), None for the clock.
    """

    pcrs: Mapping = field(default_factory=dict)
    dev_root_pem: bytes | None = None
    allow_debug: bool = False
    no_pcr_check: bool = False
    max_age: float = DEFAULT_MAX_AGE
    leeway: float = DEFAULT_LEEWAY
    now: float | None = None
    dev_root_der: bytes | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self):
        object.__setattr__(self, "pcrs", _pcr_map(self.pcrs))
        if self.dev_root_pem is not None:
            try:
                der = x509.load_pem_x509_certificate(bytes(self.dev_root_pem)).public_bytes(
                    serialization.Encoding.DER
                )
            except Exception as err:
                raise errors.MeasurementsError(
                    f"the development root is not a PEM certificate: {err}"
                ) from None
            object.__setattr__(self, "dev_root_der", der)


def load_measurements(path):
    """PCR pins from nitro-cli's measurements JSON: {"Measurements": {"PCR0": hex, ...}}.

    Keys other than PCRn (HashAlgorithm) are ignored; each PCR must be 96 hex digits, and at
    least one must be there. Errors raise MeasurementsError naming the file.
    """
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as err:
        raise errors.MeasurementsError(f"{path}: cannot read measurements: {err}") from None
    table = doc.get("Measurements") if isinstance(doc, dict) else None
    if not isinstance(table, dict):
        raise errors.MeasurementsError(f'{path}: no "Measurements" object')
    pcrs = {}
    for name, value in table.items():
        match = re.fullmatch(r"PCR([0-9]{1,2})", name)
        if match:
            pcrs[int(match.group(1))] = _pcr_hex(value, f"{path}: {name}")
    if not pcrs:
        raise errors.MeasurementsError(f"{path}: no PCR in Measurements")
    return dict(_pcr_map(pcrs))


def parse_pcr_arg(text):
    """--pcr N=HEX -> (N, 48 bytes), or MeasurementsError."""
    index, sep, value = text.partition("=")
    if not sep or not index.isdigit():
        raise errors.MeasurementsError(f"--pcr {text!r}: expected N=HEX")
    return int(index), _pcr_hex(value, f"--pcr {index}")


def _pcr_hex(value, what):
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]{%d}" % (2 * PCR_LEN), value):
        raise errors.MeasurementsError(f"{what}: not {2 * PCR_LEN} hex digits")
    return bytes.fromhex(value)


@dataclass(frozen=True)
class VerifiedKey:
    """The enclave's OHTTP key, as a document that passed every check attests it."""

    key_config: bytes
    key_id: int
    public_key: bytes
    pcrs: Mapping
    module_id: str
    timestamp_ms: int
    user_data: str
    root: str  # "aws" or "dev"
    debug: bool  # PCR0 all zeros (allowed only with Policy.allow_debug)
    policy: Policy = field(repr=False, compare=False, default=None)

    @property
    def model_sha256(self):
        """The model-sha256=<hex> the enclave states in user_data, or None."""
        match = re.search(r"(?:^| )model-sha256=([0-9a-f]{64})(?: |$)", self.user_data)
        return match.group(1) if match else None


@dataclass(frozen=True)
class _Payload:
    module_id: str
    timestamp: int
    pcrs: Mapping
    certificate: bytes
    cabundle: tuple
    public_key: bytes
    user_data: bytes
    nonce: bytes


def verify_document(document, nonce, policy):
    """Check `document` (COSE_Sign1 bytes) against the nonce sent and `policy`; -> VerifiedKey."""
    _require_pins(policy)
    now = time.time() if policy.now is None else policy.now
    protected, payload_bytes, signature, payload = _parse(document)  # 1
    root = _check_root(payload.cabundle[0], policy)  # 2
    leaf = _check_chain(payload.cabundle, payload.certificate, now, policy.leeway)  # 3
    _check_signature(leaf, protected, payload_bytes, signature)  # 4
    _check_freshness(payload, nonce, now, policy)  # 5
    debug = _check_pcrs(payload.pcrs, policy)  # 6
    key = parse_key_config(payload.public_key)  # 7
    statement = _check_user_data(payload.user_data)
    return VerifiedKey(
        key_config=key.encode(),
        key_id=key.key_id,
        public_key=key.public_key,
        pcrs=payload.pcrs,
        module_id=payload.module_id,
        timestamp_ms=payload.timestamp,
        user_data=statement,
        root=root,
        debug=debug,
        policy=policy,
    )


def _require_pins(policy):
    if not policy.pcrs and not policy.no_pcr_check:
        raise errors.NothingPinned(
            "no PCR is pinned: give the enclave's measurements (nitro-cli's measurements.json) "
            "or PCR values; no_pcr_check accepts any enclave and is for development only"
        )


# --- 1. structure --------------------------------------------------------------------------------


def _decode_cbor(data, what):
    """One CBOR item filling `data` exactly; any decoder failure is a MalformedDocument."""
    stream = io.BytesIO(data)
    try:
        item = cbor2.CBORDecoder(stream).decode()
    except Exception as err:  # hostile bytes: cbor2 errors, and anything else they provoke
        raise errors.MalformedDocument(f"{what} is not valid CBOR: {err}") from None
    if stream.tell() != len(data):
        raise errors.MalformedDocument(
            f"{what} has {len(data) - stream.tell()} bytes after its CBOR item"
        )
    return item


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _int_key(mapping, key):
    """mapping[key] for an integer key, not matching True/False (which equal 1 and 0)."""
    for k, v in mapping.items():
        if _is_int(k) and k == key:
            return v
    return None


def _parse(document):
    if not isinstance(document, (bytes, bytearray)):
        raise errors.MalformedDocument(
            f"the attestation document is a {type(document).__name__}, not bytes"
        )
    document = bytes(document)
    if len(document) > MAX_DOCUMENT_LEN:
        raise errors.MalformedDocument(
            f"the attestation document is {len(document)} bytes, over {MAX_DOCUMENT_LEN}"
        )
    item = _decode_cbor(document, "the attestation document")
    # The NSM returns the COSE_Sign1 array untagged; a tag, if any, must be 18 (COSE_Sign1).
    if isinstance(item, cbor2.CBORTag):
        if item.tag != COSE_SIGN1_TAG:
            raise errors.MalformedDocument(
                f"CBOR tag {item.tag}, not COSE_Sign1 ({COSE_SIGN1_TAG})"
            )
        item = item.value
    if not isinstance(item, Sequence) or isinstance(item, (str, bytes)) or len(item) != 4:
        raise errors.MalformedDocument("not a COSE_Sign1 (an array of 4)")
    protected, unprotected, payload_bytes, signature = item
    if not (
        isinstance(protected, bytes)
        and isinstance(unprotected, Mapping)
        and isinstance(payload_bytes, bytes)
        and isinstance(signature, bytes)
    ):
        raise errors.MalformedDocument("COSE_Sign1 members are not (bstr, map, bstr, bstr)")
    header = _decode_cbor(protected, "the protected header")
    if not isinstance(header, Mapping):
        raise errors.MalformedDocument("the protected header is not a map")
    alg = _int_key(header, 1)
    if not _is_int(alg) or alg != ES384:
        raise errors.UnsupportedAlgorithm(
            f"protected header alg is {alg!r}; only ES384 ({ES384}) is accepted"
        )
    if _int_key(header, 2) is not None:
        raise errors.UnsupportedAlgorithm(
            "the protected header lists critical parameters (crit); none is understood"
        )
    fields = _decode_cbor(payload_bytes, "the payload")
    if not isinstance(fields, Mapping):
        raise errors.MalformedDocument("the payload is not a map")
    return protected, payload_bytes, signature, _payload(fields)


def _field(fields, name, kind, check=None, expected=None):
    value = fields.get(name)
    if value is None:
        raise errors.MalformedDocument(f"payload field {name} is missing")
    if (
        not isinstance(value, kind)
        or isinstance(value, bool)
        or (check is not None and not check(value))
    ):
        raise errors.MalformedDocument(f"payload field {name} is not {expected or kind.__name__}")
    return value


def _payload(fields):
    digest = _field(fields, "digest", str)
    if digest != "SHA384":
        raise errors.MalformedDocument(f"payload digest is {digest!r}, not SHA384")
    pcrs = _field(
        fields, "pcrs", Mapping, lambda m: 0 < len(m) <= MAX_PCR_INDEX + 1, "a map of 1 to 32 PCRs"
    )
    for index, value in pcrs.items():
        if not _is_int(index) or not 0 <= index <= MAX_PCR_INDEX:
            raise errors.MalformedDocument(f"PCR index {index!r} is not 0 to {MAX_PCR_INDEX}")
        if not isinstance(value, bytes) or len(value) != PCR_LEN:
            raise errors.MalformedDocument(f"PCR{index} is not {PCR_LEN} bytes")
    if _int_key(pcrs, 0) is None:
        raise errors.MalformedDocument("PCR0 is missing")
    cabundle = _field(
        fields,
        "cabundle",
        Sequence,
        lambda s: not isinstance(s, (str, bytes))
        and 0 < len(s) <= MAX_CABUNDLE
        and all(isinstance(c, bytes) for c in s),
        f"an array of 1 to {MAX_CABUNDLE} certificates (bstr)",
    )
    return _Payload(
        module_id=_field(fields, "module_id", str, bool, "a non-empty text string"),
        timestamp=_field(fields, "timestamp", int, lambda t: t > 0, "a positive integer"),
        pcrs=MappingProxyType({k: pcrs[k] for k in pcrs}),
        certificate=_field(fields, "certificate", bytes),
        cabundle=tuple(cabundle),
        public_key=_field(fields, "public_key", bytes),
        user_data=_field(fields, "user_data", bytes),
        nonce=_field(fields, "nonce", bytes),
    )


# --- 2. the root ---------------------------------------------------------------------------------


def _check_root(root_der, policy):
    digest = hashlib.sha256(root_der).digest()
    if hmac.compare_digest(digest, AWS_NITRO_ROOT_SHA256):
        return "aws"
    if policy.dev_root_der is not None and hmac.compare_digest(root_der, policy.dev_root_der):
        warnings.warn(
            "ATTESTATION ON THE DEVELOPMENT ROOT: this document was signed by the development "
            "NSM, not by AWS Nitro; it proves nothing about an enclave. Never use --dev-root in "
            "production.",
            DevRootWarning,
            stacklevel=3,
        )
        return "dev"
    also = " nor the development root given" if policy.dev_root_der is not None else ""
    hint = (
        ""
        if policy.dev_root_der is not None
        else " (a development NSM's document needs its root: dev_root_pem / --dev-root)"
    )
    raise errors.UntrustedRoot(
        f"cabundle[0] (DER SHA-256 {digest.hex()}) is not the pinned AWS Nitro root "
        f"({AWS_NITRO_ROOT_SHA256.hex()}){also}{hint}"
    )


# --- 3. the chain --------------------------------------------------------------------------------


def _load_certificate(der, name):
    try:
        return x509.load_der_x509_certificate(der)
    except Exception as err:
        raise errors.MalformedDocument(f"{name} is not a DER X.509 certificate: {err}") from None


def _extension(cert, kind, name):
    """The extension's value, None if absent; a malformed one refuses the chain."""
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
    except Exception as err:
        raise errors.BrokenChain(f"{name} has malformed extensions: {err}") from None


def _check_chain(cabundle, certificate, now, leeway):
    names = [f"cabundle[{i}]" for i in range(len(cabundle))] + ["the leaf certificate"]
    certs = [_load_certificate(der, name) for der, name in zip((*cabundle, certificate), names)]
    for depth, (issuer, name) in enumerate(zip(certs[:-1], names)):
        constraints = _extension(issuer, x509.BasicConstraints, name)
        if constraints is None or not constraints.ca:
            raise errors.BrokenChain(
                f"{name} issues a certificate but is not a CA (basicConstraints)"
            )
        below = len(certs) - 2 - depth  # CA certificates between this one and the leaf
        if constraints.path_length is not None and below > constraints.path_length:
            raise errors.BrokenChain(
                f"{name} allows {constraints.path_length} CAs below it, the chain has {below}"
            )
        usage = _extension(issuer, x509.KeyUsage, name)
        if usage is not None and not usage.key_cert_sign:
            raise errors.BrokenChain(
                f"{name} issues a certificate but its key usage lacks keyCertSign"
            )
    for issuer, subject, name in zip(certs[:-1], certs[1:], names[1:]):
        try:
            subject.verify_directly_issued_by(issuer)
        except InvalidSignature:
            raise errors.BrokenChain(
                f"{name} is not signed by the certificate above it (bad signature)"
            ) from None
        except Exception as err:  # issuer name differs, unsupported key or signature algorithm
            raise errors.BrokenChain(
                f"{name} is not issued by the certificate above it: {err}"
            ) from None
    for cert, name in zip(certs, names):
        start, end = cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()
        if now < start - leeway:
            raise errors.CertificateNotValid(
                f"{name} is valid from {cert.not_valid_before_utc.isoformat()}, after the check "
                f"time {_iso(now)} (beyond {leeway:g} s of leeway: is this machine's clock slow?)"
            )
        if now > end + leeway:
            raise errors.CertificateNotValid(
                f"{name} expired at {cert.not_valid_after_utc.isoformat()}, before the check "
                f"time {_iso(now)}"
            )
    return certs[-1]


def _iso(seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


# --- 4. the COSE signature -----------------------------------------------------------------------


def _check_signature(leaf, protected, payload_bytes, signature):
    try:
        key = leaf.public_key()
    except Exception as err:
        raise errors.BadSignature(f"the leaf certificate's key cannot be read: {err}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise errors.BadSignature(
            "the leaf certificate's key is not P-384, so it cannot make an ES384 signature"
        )
    if len(signature) != 2 * PCR_LEN:
        raise errors.BadSignature(f"the ES384 signature is {len(signature)} bytes, not 96 (r || s)")
    r = int.from_bytes(signature[:48], "big")
    s = int.from_bytes(signature[48:], "big")
    to_be_signed = cbor2.dumps(["Signature1", protected, b"", payload_bytes])
    try:
        key.verify(encode_dss_signature(r, s), to_be_signed, ec.ECDSA(hashes.SHA384()))
    except (InvalidSignature, ValueError):
        raise errors.BadSignature(
            "the COSE signature does not verify with the leaf certificate's key"
        ) from None


# --- 5. nonce and age ----------------------------------------------------------------------------


def _check_freshness(payload, nonce, now, policy):
    if not hmac.compare_digest(payload.nonce, bytes(nonce)):
        raise errors.NonceMismatch(
            "the document's nonce is not the one sent: a replayed or foreign document"
        )
    age = now - payload.timestamp / 1000
    if age > policy.max_age:
        raise errors.StaleDocument(
            f"the document is {age:.0f} s old, over max_age {policy.max_age:g} s"
        )
    if age < -policy.leeway:
        raise errors.FutureDocument(
            f"the document is dated {-age:.0f} s in the future (leeway {policy.leeway:g} s): "
            "is this machine's clock slow?"
        )


# --- 6. PCRs -------------------------------------------------------------------------------------


def _check_pcrs(pcrs, policy):
    debug = not any(pcrs[0])
    if debug and not policy.allow_debug:
        raise errors.DebugEnclave(
            "PCR0 is all zeros: the enclave runs in debug mode, where the parent can read its "
            "memory (allow_debug / --allow-debug accepts it, for development only)"
        )
    _require_pins(policy)
    for index, want in sorted(policy.pcrs.items()):
        got = pcrs.get(index)
        if got is None:
            raise errors.PcrMismatch(f"PCR{index} is pinned but not in the document")
        if not hmac.compare_digest(got, want):
            raise errors.PcrMismatch(
                f"PCR{index} is {got.hex()}, pinned {want.hex()}: another enclave image"
            )
    return debug


# --- 7. the statement ----------------------------------------------------------------------------


def _check_user_data(user_data):
    if not user_data.startswith(USER_DATA_PREFIX):
        raise errors.BadUserData(
            f"user_data does not start with {USER_DATA_PREFIX.decode()!r}: {user_data[:40]!r}"
        )
    try:
        return user_data.decode("ascii")
    except UnicodeDecodeError:
        raise errors.BadUserData("user_data is not ASCII") from None
