//! The Open Inference Protocol V2 (KServe V2, Triton's HTTP/REST API) on the parent (issue 13).
//!
//! What it does: the protocol's endpoints in front of the same two backends as `/predict-*`:
//! `GET /v2` (server metadata), `/v2/health/live`, `/v2/health/ready`, `GET /v2/models/{name}`
//! (model metadata), `/v2/models/{name}/ready` and `POST /v2/models/{name}/infer`, each also as
//! `/v2/models/{name}/versions/1/...`. The privacy level is in the model name: `<model>-secure`
//! is answered by the enclave only (it fails closed, 503, exactly as `/predict-secure/`; with
//! `--sealed-only` its infer is 403 `sealed_only`, as plaintext `/predict-secure/`) and
//! `<model>-public` by the public model server, where `<model>` is the served model's name as
//! `/ready` reports it. Any other name is 404.
//!
//! The one input is `image`, a `BYTES` tensor of encoded JPEG/PNG images, shape `[N]` or
//! `[N, 1]`: in the binary tensor data extension (`Inference-Header-Content-Length`, each element
//! a 4-byte little-endian length then its bytes), which is what tritonclient sends with
//! `binary_data=True`; or in JSON as base64 strings, only when the input says
//! `"parameters": {"content_type": "base64"}` (a BYTES element in JSON is a UTF-8 string, which
//! a JPEG or PNG never is). The one output is `probabilities`, served only through Triton's
//! classification extension (`"parameters": {"classification": k}`, 1 <= k <= `MAX_TOP_K`):
//! `BYTES` strings `"score:class_id:label"`, shape `[N, k]`, in JSON or in binary form
//! (`binary_data`).
//!
//! What it refuses (each a `{"error": ..., "code": ...}` with its status, the protocol's error
//! shape plus our stable code): a request for the full FP32 `[N, num_classes]` output, or with
//! no `outputs` (which means all outputs in full), and a preprocessed tensor (`FP32`, `UINT8`...)
//! as input: the enclave's frames carry encoded images in and top-k scores out, nothing else, and
//! a new frame kind in the trusted base (shared/, enclave/) is out of scope. Also every malformed
//! request: a header length that is not digits or exceeds the body, binary sizes that do not add
//! up to the body, an element count that is not the shape's, more than `MAX_IMAGES` images, an
//! element length past its buffer, unknown input or output names, compressed bodies.
//!
//! Why it is built this way: the request header is parsed by a visitor that builds a
//! `serde_json::Value` with a budget of [`MAX_JSON_VALUES`] values, so a hostile body (a 16 MiB
//! array of zeros) costs at most the budget, not 32 bytes per element; strings cost their size,
//! bounded by the body. Everything from bytes to [`V2Request`] is one pure function
//! ([`parse_infer`]), so every malformed input is a unit test. Nothing of a request is logged:
//! the access log names the route (`v2_health`, `v2_metadata`, `v2_infer_secure`,
//! `v2_infer_public`), never the model name the client sent.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{json, Map, Value};
use shared::frame::{InferReply, InferRequest, ModelInfo};
use shared::limits::{MAX_ID_LEN, MAX_IMAGES, MAX_JSON_VALUES, MAX_TOP_K};

use crate::api::{check_image, ApiError, B64};
use crate::backend::Backend;
use crate::metrics::Route;
use crate::server::{header, read_body, App, Reply};
use tiny_http::{Method, Request};

/// The one input's name.
pub const INPUT: &str = "image";
/// The one output's name (served through the classification extension only).
pub const OUTPUT: &str = "probabilities";
/// The only model version.
pub const VERSION: &str = "1";

/// A parsed `/v2` path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V2Path<'a> {
    Server,
    Live,
    Ready,
    Model { name: &'a str, version: Option<&'a str>, op: ModelOp },
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelOp {
    Metadata,
    Ready,
    Infer,
}

/// The `/v2` path of a request (query removed), or `Unknown`.
pub fn parse_path(path: &str) -> V2Path<'_> {
    let Some(rest) = path.strip_prefix("/v2") else { return V2Path::Unknown };
    match rest {
        "" | "/" => return V2Path::Server,
        "/health/live" => return V2Path::Live,
        "/health/ready" => return V2Path::Ready,
        _ => {}
    }
    let Some(rest) = rest.strip_prefix("/models/") else { return V2Path::Unknown };
    let mut parts = rest.split('/');
    let name = parts.next().unwrap_or("");
    if name.is_empty() {
        return V2Path::Unknown;
    }
    let mut next = parts.next();
    let mut version = None;
    if next == Some("versions") {
        match parts.next() {
            Some(v) if !v.is_empty() => version = Some(v),
            _ => return V2Path::Unknown,
        }
        next = parts.next();
    }
    let op = match next {
        None => ModelOp::Metadata,
        Some("ready") => ModelOp::Ready,
        Some("infer") => ModelOp::Infer,
        _ => return V2Path::Unknown,
    };
    if parts.next().is_some() {
        return V2Path::Unknown;
    }
    V2Path::Model { name, version, op }
}

/// The metrics route of a `/v2` path: from the path's shape and the name's suffix only, never
/// the name itself.
pub fn route_of(path: &str) -> Route {
    match parse_path(path) {
        V2Path::Server => Route::V2Metadata,
        V2Path::Live | V2Path::Ready => Route::V2Health,
        V2Path::Model { op: ModelOp::Metadata | ModelOp::Ready, .. } => Route::V2Metadata,
        V2Path::Model { name, op: ModelOp::Infer, .. } => {
            if name.ends_with("-secure") {
                Route::V2InferSecure
            } else if name.ends_with("-public") {
                Route::V2InferPublic
            } else {
                Route::Other
            }
        }
        V2Path::Unknown => Route::Other,
    }
}

/// An OIP request refused: status, stable code, message (never quoting the request).
#[derive(Debug, Clone, PartialEq)]
pub struct V2Error {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl fmt::Display for V2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

fn err(status: u16, code: &'static str, message: impl Into<String>) -> V2Error {
    V2Error { status, code, message: message.into() }
}

fn bad(code: &'static str, message: impl Into<String>) -> V2Error {
    err(400, code, message)
}

/// The message for a request that would need the full FP32 output.
pub const FULL_OUTPUT_REFUSED: &str = "only the classification form of output \"probabilities\" is served: request it as \
     {\"name\": \"probabilities\", \"parameters\": {\"classification\": k}} with 1 <= k <= 100; the full FP32 \
     [N, num_classes] tensor (and a request without \"outputs\", which asks for it) would need a new frame kind \
     in the enclave's trusted base, which carries top-k scores only";

/// The message for a preprocessed tensor as input.
pub const TENSOR_INPUT_REFUSED: &str = "input \"image\" must be BYTES (encoded JPEG or PNG images): a preprocessed \
     tensor (FP32, UINT8...) would need a new frame kind in the enclave's trusted base, which takes encoded images only";

/// What an infer request asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct V2Request {
    pub infer: InferRequest,
    /// The request's `id`, echoed in the reply.
    pub id: Option<String>,
    /// The classification output in binary form.
    pub binary_output: bool,
}

/// A JSON value built with a budget of values (see [`MAX_JSON_VALUES`]).
struct Budgeted<'b>(&'b mut usize);

const OVER_BUDGET: &str = "too many JSON values in the request header";

impl Budgeted<'_> {
    fn take<E: de::Error>(&mut self) -> Result<(), E> {
        if *self.0 == 0 {
            return Err(E::custom(OVER_BUDGET));
        }
        *self.0 -= 1;
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Budgeted<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Budgeted<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(mut self, v: bool) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(mut self, v: i64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(mut self, v: u64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(mut self, v: f64) -> Result<Value, E> {
        self.take()?;
        Ok(serde_json::Number::from_f64(v).map(Value::Number).unwrap_or(Value::Null))
    }

    fn visit_str<E: de::Error>(mut self, v: &str) -> Result<Value, E> {
        self.take()?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(mut self, v: String) -> Result<Value, E> {
        self.take()?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(mut self) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Value, A::Error> {
        self.take()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Budgeted(&mut *self.0))? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Value, A::Error> {
        self.take()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.take()?;
            let v = map.next_value_seed(Budgeted(&mut *self.0))?;
            if out.insert(key, v).is_some() {
                return Err(de::Error::custom("a field appears more than once"));
            }
        }
        Ok(Value::Object(out))
    }
}

/// Parses a request header (JSON) within the budget.
pub fn parse_json(bytes: &[u8]) -> Result<Value, V2Error> {
    let mut left = MAX_JSON_VALUES;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = Budgeted(&mut left).deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    v.map_err(|e| {
        let msg = e.to_string();
        if msg.contains(OVER_BUDGET) {
            err(413, "too_many_json_values", format!("the request header has more than {MAX_JSON_VALUES} JSON values"))
        } else {
            bad("bad_json", format!("the request header is not valid JSON: {msg}"))
        }
    })
}

fn media_type(content_type: Option<&str>) -> String {
    content_type.and_then(|c| c.split(';').next()).map(|m| m.trim().to_ascii_lowercase()).unwrap_or_default()
}

/// 415 for a body the parent will not read: a Content-Encoding other than identity, a
/// Content-Type other than none, JSON or octet-stream. Checked before the body is read.
pub fn check_media(content_type: Option<&str>, content_encoding: Option<&str>) -> Result<(), V2Error> {
    if content_encoding.is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity")) {
        return Err(err(415, "unsupported_content_encoding", "compressed request bodies are not accepted (Content-Encoding)"));
    }
    match media_type(content_type).as_str() {
        "" | "application/json" | "application/octet-stream" => Ok(()),
        _ => Err(err(
            415,
            "unsupported_media_type",
            "Content-Type must be application/json, or application/octet-stream with Inference-Header-Content-Length",
        )),
    }
}

/// Walks BYTES elements (4-byte little-endian length, then the bytes): the first
/// [`MAX_IMAGES`] kept, the rest counted.
fn bytes_elements(mut buf: &[u8]) -> Result<(Vec<&[u8]>, usize), V2Error> {
    let mut kept = Vec::new();
    let mut count = 0usize;
    while !buf.is_empty() {
        let Some((len, rest)) = buf.split_first_chunk::<4>() else {
            return Err(bad("bad_binary_data", format!("element {count} of input \"image\": its 4-byte length is cut short")));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return Err(bad(
                "bad_binary_data",
                format!("element {count} of input \"image\" says {len} bytes but {} are left", rest.len()),
            ));
        }
        if kept.len() < MAX_IMAGES {
            kept.push(&rest[..len]);
        }
        count += 1;
        buf = &rest[len..];
    }
    Ok((kept, count))
}

fn as_object<'v>(v: &'v Value, what: &str) -> Result<&'v Map<String, Value>, V2Error> {
    v.as_object().ok_or_else(|| bad("bad_request", format!("{what} must be a JSON object")))
}

fn params<'v>(obj: &'v Map<String, Value>, what: &str) -> Result<Option<&'v Map<String, Value>>, V2Error> {
    obj.get("parameters").map(|p| as_object(p, &format!("the parameters of {what}"))).transpose()
}

fn opt_bool(p: Option<&Map<String, Value>>, key: &str, what: &str) -> Result<bool, V2Error> {
    match p.and_then(|p| p.get(key)) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad("bad_parameter", format!("parameter \"{key}\" of {what} must be true or false"))),
    }
}

/// The whole of an infer request's parsing: the Content-Type, Content-Encoding and
/// Inference-Header-Content-Length headers and the body, in, the backend's request out.
pub fn parse_infer(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    header_length: Option<&str>,
    body: &[u8],
) -> Result<V2Request, V2Error> {
    check_media(content_type, content_encoding)?;
    let (header, binary) = match header_length.map(str::trim) {
        Some(v) => {
            let n = if !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()) { v.parse::<usize>().ok() } else { None };
            let Some(n) = n else {
                return Err(bad("bad_header_length", "Inference-Header-Content-Length must be a number of bytes, digits only"));
            };
            if n > body.len() {
                return Err(bad(
                    "bad_header_length",
                    format!("Inference-Header-Content-Length is {n} but the body has {} bytes", body.len()),
                ));
            }
            body.split_at(n)
        }
        None if media_type(content_type) == "application/octet-stream" => {
            return Err(bad("bad_header_length", "an application/octet-stream body needs Inference-Header-Content-Length"));
        }
        None => (body, &[][..]),
    };
    let v = parse_json(header)?;
    let req = as_object(&v, "the request")?;
    let id = match req.get("id") {
        None => None,
        Some(Value::String(s)) if s.len() <= MAX_ID_LEN => Some(s.clone()),
        Some(Value::String(_)) => return Err(bad("bad_id", format!("\"id\" is over {MAX_ID_LEN} bytes"))),
        Some(_) => return Err(bad("bad_id", "\"id\" must be a string")),
    };
    let req_params = params(req, "the request")?;
    let binary_output_all = opt_bool(req_params, "binary_data_output", "the request")?;

    // The output first: a request for the full tensor is refused before any image is decoded.
    let outputs = match req.get("outputs") {
        Some(Value::Array(a)) => a,
        Some(_) => return Err(bad("bad_outputs", "\"outputs\" must be an array")),
        None => return Err(bad("full_output_refused", FULL_OUTPUT_REFUSED)),
    };
    let [output] = outputs.as_slice() else {
        return Err(bad("bad_outputs", format!("this model has exactly one output, \"{OUTPUT}\"; the request names {}", outputs.len())));
    };
    let output = as_object(output, "an output")?;
    match output.get("name") {
        Some(Value::String(n)) if n == OUTPUT => {}
        Some(Value::String(_)) => return Err(bad("unknown_output", format!("unknown output name; this model's one output is \"{OUTPUT}\""))),
        _ => return Err(bad("bad_outputs", "an output needs a \"name\" string")),
    }
    let out_params = params(output, "output \"probabilities\"")?;
    let k = match out_params.and_then(|p| p.get("classification")).map(Value::as_u64) {
        None | Some(Some(0)) => return Err(bad("full_output_refused", FULL_OUTPUT_REFUSED)),
        Some(Some(k)) if k <= MAX_TOP_K as u64 => k as u16,
        Some(_) => return Err(bad("bad_classification", format!("\"classification\" must be a whole number from 1 to {MAX_TOP_K}"))),
    };
    let binary_output = binary_output_all || opt_bool(out_params, "binary_data", "output \"probabilities\"")?;
    // The input.
    let inputs = match req.get("inputs") {
        Some(Value::Array(a)) => a,
        Some(_) => return Err(bad("bad_inputs", "\"inputs\" must be an array")),
        None => return Err(bad("missing_inputs", "the request has no \"inputs\"")),
    };
    let [input] = inputs.as_slice() else {
        return Err(bad("bad_inputs", format!("this model has exactly one input, \"{INPUT}\"; the request has {}", inputs.len())));
    };
    let input = as_object(input, "an input")?;
    match input.get("name") {
        Some(Value::String(n)) if n == INPUT => {}
        Some(Value::String(_)) => return Err(bad("unknown_input", format!("unknown input name; this model's one input is \"{INPUT}\""))),
        _ => return Err(bad("bad_inputs", "an input needs a \"name\" string")),
    }
    match input.get("datatype") {
        Some(Value::String(d)) if d == "BYTES" => {}
        Some(Value::String(_)) => return Err(bad("unsupported_datatype", TENSOR_INPUT_REFUSED)),
        _ => return Err(bad("bad_inputs", "input \"image\" needs a \"datatype\" string (BYTES)")),
    }
    let shape: Vec<u64> = match input.get("shape") {
        Some(Value::Array(dims)) => dims.iter().map(Value::as_u64).collect::<Option<_>>().ok_or_else(|| {
            bad("bad_shape", "the shape of input \"image\" must be non-negative integers")
        })?,
        _ => return Err(bad("bad_shape", "input \"image\" needs a \"shape\" array")),
    };
    let n = match shape.as_slice() {
        [n] | [n, 1] => *n,
        _ => return Err(bad("bad_shape", "the shape of input \"image\" must be [N] or [N, 1] (N encoded images)")),
    };
    if n == 0 {
        return Err(bad("empty_batch", "no images in the request (shape [0])"));
    }
    if n > MAX_IMAGES as u64 {
        return Err(err(413, "too_many_images", format!("{n} images in one request, over the limit of {MAX_IMAGES}")));
    }
    let n = n as usize;
    let in_params = params(input, "input \"image\"")?;
    let binary_size = match in_params.and_then(|p| p.get("binary_data_size")) {
        None => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| bad("bad_parameter", "\"binary_data_size\" must be a non-negative integer"))?),
    };
    let base64 = match in_params.and_then(|p| p.get("content_type")) {
        None => false,
        Some(Value::String(s)) if s == "base64" => true,
        Some(_) => return Err(bad("bad_parameter", "the only \"content_type\" accepted for input \"image\" is \"base64\"")),
    };
    let images: Vec<Vec<u8>> = match binary_size {
        Some(size) => {
            if input.contains_key("data") {
                return Err(bad("bad_inputs", "input \"image\" has both \"data\" and \"binary_data_size\""));
            }
            if size != binary.len() as u64 {
                return Err(bad(
                    "bad_binary_data",
                    format!("\"binary_data_size\" is {size} but {} bytes follow the header", binary.len()),
                ));
            }
            let (kept, count) = bytes_elements(binary)?;
            if count != n {
                return Err(bad("bad_shape", format!("input \"image\" has {count} elements but its shape says {n}")));
            }
            kept.into_iter().map(<[u8]>::to_vec).collect()
        }
        None => {
            if !binary.is_empty() {
                return Err(bad("bad_binary_data", "binary data follows the header but no input has \"binary_data_size\""));
            }
            let data = match input.get("data") {
                Some(Value::Array(d)) => d,
                _ => return Err(bad("bad_inputs", "input \"image\" needs \"data\" (or binary data)")),
            };
            if !base64 {
                return Err(bad(
                    "bytes_not_base64",
                    "BYTES elements in JSON are UTF-8 strings, which a JPEG or PNG never is: send the images in \
                     binary form (Inference-Header-Content-Length), or as base64 strings with \
                     \"parameters\": {\"content_type\": \"base64\"} on the input",
                ));
            }
            if data.len() != n {
                return Err(bad("bad_shape", format!("input \"image\" has {} elements but its shape says {n}", data.len())));
            }
            let mut images = Vec::with_capacity(n);
            for (i, d) in data.iter().enumerate() {
                let Value::String(s) = d else {
                    return Err(bad("bad_inputs", format!("element {i} of input \"image\" is not a string (a flat array of base64 strings)")));
                };
                images.push(B64.decode(s.as_bytes()).map_err(|_| bad("bad_base64", format!("element {i} of input \"image\" is not valid base64")))?);
            }
            images
        }
    };
    for (i, img) in images.iter().enumerate() {
        check_image(i, img).map_err(|e| match e {
            ApiError::UnsupportedImageFormat { format, .. } => err(
                415,
                "unsupported_format",
                format!("element {i} of input \"image\" is {format}; only JPEG and PNG are supported"),
            ),
            _ => bad("not_an_image", format!("element {i} of input \"image\" is not an image (expected JPEG or PNG bytes)")),
        })?;
    }

    Ok(V2Request { infer: InferRequest { top_k: k, images }, id, binary_output })
}

/// Triton's classification string: `score:class_id:label` (`score:class_id` without a label).
fn classification(score: f32, class_id: u32, label: &str) -> String {
    if label.is_empty() {
        format!("{score:.6}:{class_id}")
    } else {
        format!("{score:.6}:{class_id}:{label}")
    }
}

/// An infer reply: the body, its Content-Type, and the Inference-Header-Content-Length value
/// when it is binary. `Err` when the backend's lists are not all of one length.
pub fn render_infer(model: &str, id: Option<&str>, binary: bool, info: &ModelInfo, reply: &InferReply) -> Result<(Vec<u8>, &'static str, Option<usize>), V2Error> {
    let k = reply.images.first().map_or(0, |i| i.top.len());
    if reply.images.iter().any(|i| i.top.len() != k) {
        return Err(err(502, "bad_backend_reply", "the model server's top-k lists are not all of one length"));
    }
    let label = |id: u32| -> &str { info.labels.get(id as usize).map(String::as_str).unwrap_or("") };
    let strings: Vec<String> =
        reply.images.iter().flat_map(|i| i.top.iter().map(|c| classification(c.score, c.class_id, label(c.class_id)))).collect();
    let mut out = json!({ "name": OUTPUT, "datatype": "BYTES", "shape": [reply.images.len(), k] });
    let mut tail = Vec::new();
    if binary {
        for s in &strings {
            tail.extend_from_slice(&(s.len() as u32).to_le_bytes());
            tail.extend_from_slice(s.as_bytes());
        }
        out["parameters"] = json!({ "binary_data_size": tail.len() });
    } else {
        out["data"] = json!(strings);
    }
    let mut v = json!({ "model_name": model, "model_version": VERSION, "outputs": [out] });
    if let Some(id) = id {
        v["id"] = json!(id);
    }
    let mut body = v.to_string().into_bytes();
    if binary {
        let header_len = body.len();
        body.extend_from_slice(&tail);
        Ok((body, "application/octet-stream", Some(header_len)))
    } else {
        Ok((body, "application/json", None))
    }
}

/// Server metadata (`GET /v2`).
pub fn server_metadata() -> Value {
    json!({
        "name": "nitro-parent",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["classification", "binary_tensor_data"],
    })
}

/// Model metadata (`GET /v2/models/{name}`).
pub fn model_metadata(name: &str, info: &ModelInfo) -> Value {
    json!({
        "name": name,
        "versions": [VERSION],
        "platform": "onnx",
        "inputs": [{ "name": INPUT, "datatype": "BYTES", "shape": [-1] }],
        "outputs": [{ "name": OUTPUT, "datatype": "FP32", "shape": [-1, info.num_classes] }],
    })
}

/// The backend a model name selects and the model it serves, by the name's suffix: `-secure`
/// only ever selects the secure backend. The base name is checked against that backend's model
/// (or, before it was ever reached, the other's: both serve the same model). `Err` is 404 for a
/// name that is not served, 503 before either model server was reached.
pub fn resolve<'b>(secure: &'b Backend, public: &'b Backend, name: &str) -> Result<(&'b Backend, Arc<ModelInfo>), V2Error> {
    let not_found = || err(404, "model_not_found", "unknown model name: the models are <model>-secure and <model>-public, <model> as /v2/models/... metadata or /ready reports it");
    let (base, backend, other) = if let Some(b) = name.strip_suffix("-secure") {
        (b, secure, public)
    } else if let Some(b) = name.strip_suffix("-public") {
        (b, public, secure)
    } else {
        return Err(not_found());
    };
    let Some(info) = backend.info().or_else(|| other.info()) else {
        return Err(err(503, "backend_unavailable", "no model server has been reached yet"));
    };
    if info.name != base {
        return Err(not_found());
    }
    Ok((backend, info))
}

/// 404 for a version other than [`VERSION`].
pub fn check_version(version: Option<&str>) -> Result<(), V2Error> {
    match version {
        None | Some(VERSION) => Ok(()),
        Some(_) => Err(err(404, "version_not_found", format!("unknown model version: the only one is \"{VERSION}\""))),
    }
}

/// A V2 error as a reply: the protocol's `{"error"}` plus our `code`; `Retry-After: 1` on 503.
fn error_reply(e: &V2Error) -> Reply {
    let mut r = Reply::json(e.status, &error_body(e));
    if e.status == 503 {
        r.headers.push(("Retry-After", "1".to_string()));
    }
    r
}

/// A health or readiness answer: 200, or 400 (the protocol's "false" is a 4xx).
fn health(ok: bool, what: &str) -> Reply {
    if ok {
        Reply::json(200, &json!({ what: true }))
    } else {
        error_reply(&bad("not_ready", format!("not {what}: a model server does not answer")))
    }
}

/// Answers one `/v2` request (the route's headers and framing already checked).
pub(crate) fn handle(app: &App, rq: &mut Request, path: &str) -> Reply {
    const GET: &str = "GET, HEAD";
    let is_get = matches!(rq.method(), Method::Get | Method::Head);
    let is_post = *rq.method() == Method::Post;
    let not_allowed = |allow: &'static str| Reply::error(&ApiError::MethodNotAllowed { allow });
    match parse_path(path) {
        V2Path::Unknown => error_reply(&err(404, "not_found", "no such endpoint under /v2")),
        V2Path::Server | V2Path::Live | V2Path::Ready if !is_get => not_allowed(GET),
        V2Path::Server => Reply::json(200, &server_metadata()),
        V2Path::Live => health(true, "live"),
        V2Path::Ready => health(app.secure.is_up() && app.public.is_up(), "ready"),
        V2Path::Model { op: ModelOp::Metadata | ModelOp::Ready, .. } if !is_get => not_allowed(GET),
        V2Path::Model { op: ModelOp::Infer, .. } if !is_post => not_allowed("POST"),
        V2Path::Model { name, version, op } => {
            let resolved = check_version(version).and_then(|()| resolve(&app.secure, &app.public, name));
            let (backend, info) = match resolved {
                Ok(x) => x,
                Err(e) => return error_reply(&e),
            };
            match op {
                ModelOp::Metadata => Reply::json(200, &model_metadata(name, &info)),
                ModelOp::Ready => health(backend.is_up(), "ready"),
                // `--sealed-only`: no plaintext reaches the enclave (metadata and readiness still answer).
                ModelOp::Infer if app.sealed_only && std::ptr::eq(backend, app.secure.as_ref()) => {
                    Reply::error(&ApiError::SealedOnly)
                }
                ModelOp::Infer => infer(app, backend, rq, name),
            }
        }
    }
}

fn infer(app: &App, backend: &Backend, rq: &mut Request, name: &str) -> Reply {
    let content_type = header(rq, "Content-Type").map(str::to_string);
    let content_encoding = header(rq, "Content-Encoding").map(str::to_string);
    let header_length = header(rq, "Inference-Header-Content-Length").map(str::to_string);
    // Refused media is not read.
    if let Err(e) = check_media(content_type.as_deref(), content_encoding.as_deref()) {
        return error_reply(&e);
    }
    let body = match read_body(rq, app.max_body) {
        Ok(b) => b,
        Err(e) => return Reply::error(&e),
    };
    let req = match parse_infer(content_type.as_deref(), content_encoding.as_deref(), header_length.as_deref(), &body) {
        Ok(r) => r,
        Err(e) => return error_reply(&e),
    };
    drop(body);
    let V2Request { infer, id, binary_output } = req;
    // The backend the name selected, and only it: `-secure` fails closed here.
    let (reply, info) = match backend.infer(infer) {
        Ok(x) => x,
        Err(e) => return Reply::error(&ApiError::Backend(e)),
    };
    match render_infer(name, id.as_deref(), binary_output, &info, &reply) {
        Ok((body, content_type, header_len)) => {
            let mut r = Reply { status: 200, body, content_type, headers: Vec::new() };
            if let Some(n) = header_len {
                r.headers.push(("Inference-Header-Content-Length", n.to_string()));
            }
            r
        }
        Err(e) => error_reply(&e),
    }
}

/// The JSON error body.
pub fn error_body(e: &V2Error) -> Value {
    json!({ "error": e.message, "code": e.code })
}

#[cfg(test)]
mod tests {
    use super::*;

    const JPEG: &[u8] = &[0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3];
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n....";

    fn binary(header: &Value, elements: &[&[u8]]) -> (String, Vec<u8>) {
        let mut body = header.to_string().into_bytes();
        let n = body.len();
        for e in elements {
            body.extend_from_slice(&(e.len() as u32).to_le_bytes());
            body.extend_from_slice(e);
        }
        (n.to_string(), body)
    }

    fn header(shape: Value, size: usize, k: Value) -> Value {
        json!({
            "inputs": [{ "name": "image", "datatype": "BYTES", "shape": shape, "parameters": { "binary_data_size": size } }],
            "outputs": [{ "name": "probabilities", "parameters": { "classification": k, "binary_data": true } }],
        })
    }

    fn code(r: Result<V2Request, V2Error>) -> (u16, &'static str) {
        let e = r.unwrap_err();
        (e.status, e.code)
    }

    #[test]
    fn paths() {
        assert_eq!(parse_path("/v2"), V2Path::Server);
        assert_eq!(parse_path("/v2/health/live"), V2Path::Live);
        assert_eq!(parse_path("/v2/models/m-secure"), V2Path::Model { name: "m-secure", version: None, op: ModelOp::Metadata });
        assert_eq!(
            parse_path("/v2/models/m-public/versions/1/infer"),
            V2Path::Model { name: "m-public", version: Some("1"), op: ModelOp::Infer }
        );
        assert_eq!(parse_path("/v2/models/m/ready"), V2Path::Model { name: "m", version: None, op: ModelOp::Ready });
        for p in ["/v2/models/", "/v2/models//infer", "/v2/models/m/infer/x", "/v2/models/m/versions//infer", "/v2x", "/v2/health"] {
            assert_eq!(parse_path(p), V2Path::Unknown, "{p}");
        }
        assert_eq!(route_of("/v2/models/anything-secure/infer"), Route::V2InferSecure);
        assert_eq!(route_of("/v2/models/x-public/versions/1/infer"), Route::V2InferPublic);
        assert_eq!(route_of("/v2/models/x/infer"), Route::Other);
        assert_eq!(route_of("/v2/models/x"), Route::V2Metadata);
    }

    #[test]
    fn binary_and_json_forms() {
        let (hl, body) = binary(&header(json!([2]), 4 + JPEG.len() + 4 + PNG.len(), json!(3)), &[JPEG, PNG]);
        let r = parse_infer(Some("application/octet-stream"), None, Some(&hl), &body).unwrap();
        assert_eq!(r.infer, InferRequest { top_k: 3, images: vec![JPEG.to_vec(), PNG.to_vec()] });
        assert!(r.binary_output);
        let b64 = base64::engine::general_purpose::STANDARD.encode(JPEG);
        let j = json!({
            "id": "x1",
            "inputs": [{ "name": "image", "datatype": "BYTES", "shape": [1, 1], "parameters": { "content_type": "base64" }, "data": [b64] }],
            "outputs": [{ "name": "probabilities", "parameters": { "classification": 5 } }],
        });
        let r = parse_infer(Some("application/json"), None, None, j.to_string().as_bytes()).unwrap();
        assert_eq!((r.infer.top_k, r.infer.images.len(), r.id.as_deref(), r.binary_output), (5, 1, Some("x1"), false));
    }

    #[test]
    fn refusals() {
        let ok = header(json!([1]), 4 + JPEG.len(), json!(5));
        let (hl, body) = binary(&ok, &[JPEG]);
        let p = |hl: &str, body: &[u8]| parse_infer(None, None, Some(hl), body);
        assert_eq!(code(p("x", &body)), (400, "bad_header_length"));
        assert_eq!(code(p("+1", &body)), (400, "bad_header_length"));
        assert_eq!(code(p(&(body.len() + 1).to_string(), &body)), (400, "bad_header_length"));
        assert_eq!(code(p("99999999999999999999999", &body)), (400, "bad_header_length"));
        assert_eq!(code(parse_infer(Some("text/plain"), None, Some(&hl), &body)), (415, "unsupported_media_type"));
        assert_eq!(code(parse_infer(None, Some("gzip"), Some(&hl), &body)), (415, "unsupported_content_encoding"));
        assert_eq!(code(parse_infer(Some("application/octet-stream"), None, None, &body)), (400, "bad_header_length"));
        // Sizes that do not add up, a length past the end, a count that is not the shape's.
        let (hl2, body2) = binary(&header(json!([1]), 4 + JPEG.len() + 1, json!(5)), &[JPEG]);
        assert_eq!(code(p(&hl2, &body2)), (400, "bad_binary_data"));
        let (hl3, mut body3) = binary(&header(json!([1]), 4 + JPEG.len(), json!(5)), &[JPEG]);
        let at = body3.len() - JPEG.len() - 4;
        body3[at..at + 4].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(code(p(&hl3, &body3)), (400, "bad_binary_data"));
        let (hl4, body4) = binary(&header(json!([2]), 4 + JPEG.len(), json!(5)), &[JPEG]);
        assert_eq!(code(p(&hl4, &body4)), (400, "bad_shape"));
        let (hl5, body5) = binary(&header(json!([65]), 4 + JPEG.len(), json!(5)), &[JPEG]);
        assert_eq!(code(p(&hl5, &body5)), (413, "too_many_images"));
        let (hl6, body6) = binary(&header(json!([1]), 4 + JPEG.len(), json!(0)), &[JPEG]);
        assert_eq!(code(p(&hl6, &body6)), (400, "full_output_refused"));
        let (hl7, body7) = binary(&header(json!([1]), 4 + JPEG.len(), json!(101)), &[JPEG]);
        assert_eq!(code(p(&hl7, &body7)), (400, "bad_classification"));
        let (hl8, body8) = binary(&header(json!([1]), 4 + 5, json!(5)), &[b"hello"]);
        assert_eq!(code(p(&hl8, &body8)), (400, "not_an_image"));
        let (hl9, body9) = binary(&header(json!([1]), 4 + 10, json!(5)), &[b"GIF89a...."]);
        assert_eq!(code(p(&hl9, &body9)), (415, "unsupported_format"));
        // JSON: no outputs, a tensor input, raw BYTES strings, the budget.
        let j = |v: Value| parse_infer(Some("application/json"), None, None, v.to_string().as_bytes());
        let input = json!({ "name": "image", "datatype": "BYTES", "shape": [1], "data": ["abc"] });
        let out = json!([{ "name": "probabilities", "parameters": { "classification": 5 } }]);
        assert_eq!(code(j(json!({ "inputs": [input] }))), (400, "full_output_refused"));
        assert_eq!(code(j(json!({ "inputs": [input], "outputs": [{ "name": "probabilities" }] }))), (400, "full_output_refused"));
        assert_eq!(code(j(json!({ "inputs": [input], "outputs": out }))), (400, "bytes_not_base64"));
        let fp32 = json!({ "name": "image", "datatype": "FP32", "shape": [1, 3, 224, 224], "data": [0.0] });
        assert_eq!(code(j(json!({ "inputs": [fp32], "outputs": out }))), (400, "unsupported_datatype"));
        assert_eq!(code(j(json!({ "inputs": [{ "name": "x", "datatype": "BYTES", "shape": [1] }], "outputs": out }))), (400, "unknown_input"));
        assert_eq!(code(j(json!({ "inputs": [input], "outputs": [{ "name": "logits" }] }))), (400, "unknown_output"));
        assert_eq!(code(j(json!({ "outputs": out }))), (400, "missing_inputs"));
        assert_eq!(code(j(json!({ "inputs": [input, input], "outputs": out }))), (400, "bad_inputs"));
        let zeros = format!("{{\"inputs\": [{}]}}", vec!["0"; 100_000].join(","));
        assert_eq!(code(parse_infer(None, None, None, zeros.as_bytes())), (413, "too_many_json_values"));
        assert_eq!(code(parse_infer(None, None, None, b"{\"inputs\": [")), (400, "bad_json"));
        assert_eq!(code(parse_infer(None, None, None, b"{\"id\": 1, \"id\": 2}")), (400, "bad_json"));
        assert_eq!(code(parse_infer(None, None, None, &"[".repeat(100_000).into_bytes())), (400, "bad_json"));
    }

    #[test]
    fn renders_classification() {
        use shared::frame::{ClassScore, ImageResult, StageTimings};
        let info = ModelInfo {
            name: "m".into(),
            sha256: [0; 32],
            synthetic: false,
            input_shape: [1, 3, 224, 224],
            num_classes: 2,
            label_source: "x".into(),
            labels: vec!["zero".into(), "tiger cat".into()],
        };
        let img = ImageResult {
            timings: StageTimings::default(),
            top: vec![ClassScore { class_id: 1, score: 0.75 }, ClassScore { class_id: 0, score: 0.25 }],
        };
        let reply = InferReply { images: vec![img.clone(), img] };
        let (body, ct, hl) = render_infer("m-secure", Some("a"), false, &info, &reply).unwrap();
        assert_eq!((ct, hl), ("application/json", None));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["outputs"][0]["shape"], json!([2, 2]));
        assert_eq!(v["outputs"][0]["data"][0], "0.750000:1:tiger cat");
        assert_eq!(v["id"], "a");
        let (body, ct, hl) = render_infer("m-secure", None, true, &info, &reply).unwrap();
        let hl = hl.unwrap();
        assert_eq!(ct, "application/octet-stream");
        let v: Value = serde_json::from_slice(&body[..hl]).unwrap();
        assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], body.len() - hl);
        assert_eq!(&body[hl..hl + 4], &20u32.to_le_bytes());
        assert_eq!(&body[hl + 4..hl + 24], b"0.750000:1:tiger cat");
    }
}
