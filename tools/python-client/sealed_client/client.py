"""The two calls a user makes: fetch_and_verify() then seal_and_send(), over urllib (stdlib).

fetch_and_verify() asks the parent for an attestation document bound to a fresh nonce and checks
it (attestation.py); seal_and_send() seals one image to the attested key (ohttp.py, bhttp.py),
posts it, and opens the answer. The parent relays both ways and is not trusted: every answer is
bounded in size, redirects are refused, and each unexpected status or body raises a
SealedClientError that says what came back (docs/SEALED.md, "HTTP routes").
"""

import json
import secrets
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException

from . import attestation, bhttp, ohttp
from .errors import KeyRejected, SealedResponseError, TransportError

ATTESTATION_PATH = "/attestation"
GATEWAY_PATH = "/.well-known/ohttp-gateway"
INNER_PATH = "/predict-secure/"
NONCE_LEN = 32
MAX_SEALED_RESPONSE = 1 << 20  # answers are padded to 4096 bytes; the JSON is a few kilobytes
MAX_ERROR_BODY = 4096
OHTTP_KEY_PROBLEM = "https://iana.org/assignments/http-problem-types#ohttp-key"


def fetch_and_verify(url, policy, timeout=30.0):
    """GET {url}/attestation?nonce=<32 fresh random bytes, hex>, verify it under `policy`.

    Returns the attested VerifiedKey, or raises: NothingPinned before any request when policy
    pins nothing, TransportError when the parent does not answer 200, a VerificationError
    subclass when the document fails a check.
    """
    attestation._require_pins(policy)
    nonce = secrets.token_bytes(NONCE_LEN)
    status, content_type, body = _exchange(
        "GET",
        _join(url, f"{ATTESTATION_PATH}?nonce={nonce.hex()}"),
        None,
        {"Accept": "application/cbor"},
        attestation.MAX_DOCUMENT_LEN,
        timeout,
    )
    if status != 200:
        raise _unexpected("GET /attestation", status, content_type, body)
    return attestation.verify_document(body, nonce, policy)


def seal_and_send(url, verified_key, image_bytes, top_k=5, timeout=60.0):
    """Seal a POST /predict-secure/?top_k=N with the image to the attested key; -> (status, json).

    status and json are the enclave's inner answer (an inner error such as 400 bad_image comes
    back this way, not as an exception). If the gateway no longer holds the key (rotated), the
    document is fetched and verified again under the same policy and the request sent once more.
    """
    if not isinstance(top_k, int) or isinstance(top_k, bool):
        raise TypeError(f"top_k must be an int, not {type(top_k).__name__}")
    authority = urllib.parse.urlsplit(url).netloc.rpartition("@")[2]
    inner = bhttp.encode_request(
        "POST", "https", authority, f"{INNER_PATH}?top_k={top_k:d}", content=bytes(image_bytes)
    )
    try:
        return _send_once(url, verified_key, inner, timeout)
    except KeyRejected:
        if verified_key.policy is None:  # a VerifiedKey not made by verify_document()
            raise
        fresh = fetch_and_verify(url, verified_key.policy, timeout=timeout)
        if fresh.key_config == verified_key.key_config:
            raise KeyRejected(
                f"the gateway rejects key {fresh.key_id}, which the enclave still attests",
                status=400,
            ) from None
        return _send_once(url, fresh, inner, timeout)


def _send_once(url, key, inner, timeout):
    config = ohttp.KeyConfig(key.key_id, key.public_key)
    request, pending = ohttp.encapsulate_request(config, inner)
    status, content_type, body = _exchange(
        "POST",
        _join(url, GATEWAY_PATH),
        request,
        {"Content-Type": "message/ohttp-req", "Accept": "message/ohttp-res"},
        MAX_SEALED_RESPONSE,
        timeout,
    )
    if status == 200 and _media_type(content_type) == "message/ohttp-res":
        response = bhttp.decode_response(pending.open(body))
        try:
            return response.status, json.loads(response.content)
        except (ValueError, RecursionError):
            raise SealedResponseError(
                f"the enclave's answer (status {response.status}) is not JSON: "
                f"{response.content[:80]!r}"
            ) from None
    if status == 400 and _media_type(content_type) == "application/problem+json":
        problem = _json_or_none(body)
        if isinstance(problem, dict) and problem.get("type") == OHTTP_KEY_PROBLEM:
            raise KeyRejected(
                f"the gateway does not hold key {key.key_id} (rotated or restarted)", status=400
            )
    raise _unexpected(f"POST {GATEWAY_PATH}", status, content_type, body)


# --- HTTP ----------------------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect from the parent is answered as the error it is, not followed."""

    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _join(url, path_and_query):
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"url must be http(s)://host[:port][/prefix], not {url!r}")
    return url.rstrip("/") + path_and_query


def _exchange(method, url, body, headers, limit, timeout):
    """(status, Content-Type, body of at most `limit` bytes), any status; TransportError if none."""
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        try:
            response = _OPENER.open(request, timeout=timeout)
        except urllib.error.HTTPError as err:
            response = err  # a non-2xx answer: still read its status and body
        with response:
            data = response.read(limit + 1)
            status, content_type = response.getcode(), response.headers.get("Content-Type", "")
    except (urllib.error.URLError, HTTPException, OSError, ValueError) as err:
        raise TransportError(f"{method} {url}: {getattr(err, 'reason', err)}") from None
    if len(data) > limit:
        raise TransportError(f"{method} {url}: answer over {limit} bytes", status=status)
    return status, content_type, data


def _media_type(content_type):
    return content_type.split(";", 1)[0].strip().lower()


def _json_or_none(body):
    try:
        return json.loads(body[:MAX_ERROR_BODY])
    except (ValueError, RecursionError):
        return None


def _unexpected(what, status, content_type, body):
    """A TransportError naming the status and the parent's {"error", "code"}, if it sent one."""
    error = _json_or_none(body)
    code = (
        error.get("code")
        if isinstance(error, dict) and isinstance(error.get("code"), str)
        else None
    )
    detail = error.get("error") if isinstance(error, dict) else None
    text = f"{what}: HTTP {status}"
    if code is not None:
        text += f" {code[:64]!r}"
    if isinstance(detail, str):
        text += f": {detail[:200]!r}"
    elif status == 200:
        text += f" with Content-Type {content_type[:80]!r}"
    return TransportError(text, status=status, code=code)
