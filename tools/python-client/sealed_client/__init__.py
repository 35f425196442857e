"""A client for sealed requests to the appliance's enclave (docs/SEALED.md).

    from sealed_client import Policy, load_measurements, fetch_and_verify, seal_and_send

    policy = Policy(pcrs=load_measurements("build/measurements.json"))
    key = fetch_and_verify("http://127.0.0.1:8080", policy)      # attestation, every check
    status, answer = seal_and_send("http://127.0.0.1:8080", key, open("cat.jpg", "rb").read())

fetch_and_verify() refuses (a VerificationError subclass, one per check) unless the document is
signed through the pinned AWS Nitro root (or a development root given explicitly), fresh, bound
to this client's nonce and to the pinned PCRs; only then is its key handed out. seal_and_send()
encrypts the request to that key with Oblivious HTTP (RFC 9458), so the parent that relays it
sees neither the image nor the answer.
"""

from .attestation import (
    AWS_NITRO_ROOT_SHA256,
    DevRootWarning,
    Policy,
    VerifiedKey,
    load_measurements,
    parse_pcr_arg,
    verify_document,
)
from .client import fetch_and_verify, seal_and_send
from .errors import (
    SealedClientError,
    VerificationError,
    MalformedDocument,
    UnsupportedAlgorithm,
    UntrustedRoot,
    BrokenChain,
    CertificateNotValid,
    BadSignature,
    NonceMismatch,
    StaleDocument,
    FutureDocument,
    DebugEnclave,
    PcrMismatch,
    NothingPinned,
    BadKeyConfig,
    BadUserData,
    MeasurementsError,
    TransportError,
    KeyRejected,
    SealedResponseError,
    BhttpError,
)
