//! The relay for attestation and sealed requests (docs/SEALED.md, "HTTP routes (parent)").
//!
//! What it does: `GET /attestation?nonce=<hex>` becomes an `Attest` frame and its
//! `Attestation` answer a 200 `application/cbor`; `GET /.well-known/ohttp-gateway`
//! a `KeysQuery` frame and its `Keys` answer a 200 `application/ohttp-keys`; a
//! sealed request (`POST /.well-known/ohttp-gateway`, or `POST /predict-secure/`
//! with `Content-Type: message/ohttp-req`) a `Sealed` frame of its body as it
//! came, and the `SealedReply` a 200 `message/ohttp-res` of the enclave's bytes
//! as they came. All three go to the secure backend only: when the enclave is
//! down or busy they fail closed, 503, exactly as plaintext secure requests.
//!
//! Why it is built this way: the parent holds no key and parses nothing of a
//! sealed request or answer; it checks what it must to build a frame (the
//! media type, the body's size as for every body, a non-empty body) and the
//! nonce, which it sends as bytes. An error of the request *inside* the seal
//! travels sealed, in a 200. Errors of the relay layer: 400 `bad_nonce`; 503
//! `attestation_unavailable` (a model server without an NSM); 400
//! `application/problem+json` of RFC 9458's `ohttp-key` type when the enclave
//! does not hold the key; 400 `sealed_request_invalid` when it cannot open the
//! request. What is logged and counted of these requests is what the access
//! log and the metrics hold of any: route (`attestation`, `ohttp_keys`,
//! `sealed`), status, reply size and duration.

use tiny_http::Request;

use crate::api::{is_sealed_request, nonce_from_query, ApiError};
use crate::server::{header, read_body, App, Reply};
use shared::frame::Message;

/// `GET /attestation?nonce=<hex>`: the NSM's document, as the enclave returned it.
pub(crate) fn attestation(app: &App, query: Option<&str>) -> Result<Reply, ApiError> {
    let nonce = nonce_from_query(query)?;
    let document = app.secure.relay(Message::Attest(nonce)).map_err(ApiError::Backend)?;
    Ok(Reply::bytes(document, "application/cbor"))
}

/// `GET /.well-known/ohttp-gateway`: the key configurations the enclave accepts (RFC 9540).
pub(crate) fn keys(app: &App) -> Result<Reply, ApiError> {
    let keys = app.secure.relay(Message::KeysQuery).map_err(ApiError::Backend)?;
    Ok(Reply::bytes(keys, "application/ohttp-keys"))
}

/// A sealed request (a POST): its body to the enclave, the enclave's answer to the client.
pub(crate) fn sealed(app: &App, rq: &mut Request) -> Result<Reply, ApiError> {
    // A body of another type is refused before it is read.
    if !is_sealed_request(header(rq, "Content-Type")) {
        return Err(ApiError::NotSealedMediaType);
    }
    let request = read_body(rq, app.max_body)?;
    if request.is_empty() {
        return Err(ApiError::EmptySealedRequest);
    }
    let response = app.secure.relay(Message::Sealed(request)).map_err(ApiError::Backend)?;
    Ok(Reply::bytes(response, "message/ohttp-res"))
}
