"""Every way the client refuses, one class each.

The attestation checks follow docs/SEALED.md "What a client checks, in order"; each failure has
its own class (a subclass of VerificationError) so that callers and tests can tell them apart,
and its own message saying what was expected and what was found. Everything this package raises
on purpose is a SealedClientError: a hostile parent may send any bytes, and they must end in one
of these, never in a crash or, worse, in a request sealed to a key that was not checked.
"""


class SealedClientError(Exception):
    """Base of every error this package raises on purpose."""


# --- the attestation document (docs/SEALED.md, "What a client checks") ---------------------------


class VerificationError(SealedClientError):
    """The attestation document was refused: nothing may be sealed to its key."""


class MalformedDocument(VerificationError):
    """Check 1: not a COSE_Sign1, too large, or a payload field missing or of the wrong type."""


class UnsupportedAlgorithm(VerificationError):
    """Check 1: the protected header's alg is not ES384 (-35), or it lists critical headers."""


class UntrustedRoot(VerificationError):
    """Check 2: cabundle[0] is neither the pinned AWS Nitro root nor the development root given."""


class BrokenChain(VerificationError):
    """Check 3: a certificate is not signed by the one above it, or an issuer is not a CA."""


class CertificateNotValid(VerificationError):
    """Check 3: a certificate is expired or not yet valid at the check time (60 s leeway)."""


class BadSignature(VerificationError):
    """Check 4: the COSE signature does not verify with the leaf certificate's P-384 key."""


class NonceMismatch(VerificationError):
    """Check 5: the document's nonce is not the one this client sent (a replayed document)."""


class StaleDocument(VerificationError):
    """Check 5: the document's timestamp is older than max_age."""


class FutureDocument(VerificationError):
    """Check 5: the document's timestamp is in the future beyond the leeway."""


class DebugEnclave(VerificationError):
    """Check 6: PCR0 is all zeros (an enclave in debug mode) and allow_debug was not given."""


class PcrMismatch(VerificationError):
    """Check 6: a pinned PCR differs from the document's (another enclave image)."""


class NothingPinned(VerificationError):
    """Check 6: no PCR is pinned and no_pcr_check was not given: any enclave would pass."""


class BadKeyConfig(VerificationError):
    """Check 7: public_key is not exactly one X25519/HKDF-SHA256/AES-128-GCM key configuration."""


class BadUserData(VerificationError):
    """Check 7: user_data does not start with the "nitro-ml-attest/1 " statement."""


# --- configuration, transport, the sealed answer -------------------------------------------------


class MeasurementsError(SealedClientError, ValueError):
    """A measurements file, a --pcr value or a development root that cannot be used as a pin."""


class TransportError(SealedClientError):
    """The HTTP exchange with the parent failed or was answered with an unexpected status.

    status is the HTTP status (None when no answer came), code the JSON error body's "code" when
    the parent sent one.
    """

    def __init__(self, message, status=None, code=None):
        super().__init__(message)
        self.status = status
        self.code = code


class KeyRejected(TransportError):
    """The gateway answered the RFC 9458 "ohttp-key" problem: it no longer holds that key."""


class SealedResponseError(SealedClientError):
    """The encapsulated response cannot be opened, or its inner message cannot be decoded."""


class BhttpError(SealedResponseError, ValueError):
    """A Binary HTTP message (RFC 9292) is truncated or malformed."""
