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
//! a JPEG or PNG never is). The one output is `probabilities`, in two forms, in JSON or in binary
//! form (`binary_data`): in full, the model's `FP32 [N, num_classes]` softmax probabilities in
//! class order (an output without `classification`, or a request without `outputs`, which asks
//! for all outputs in full); and through Triton's classification extension
//! (`"parameters": {"classification": k}`, 1 <= k <= `MAX_TOP_K`), `BYTES` strings
//! `"score:class_id:label"`, shape `[N, k]`. Both forms may be asked at once, as two outputs of
//! the one name (answered in the order asked, at most one of them binary). For the full form the
//! parent asks the model server for every class (`top_k` = num_classes, at most
//! `MAX_FRAME_TOP_K`), which sends them best first with their class ids; [`full_rows`] puts them
//! back in class order and refuses a reply that does not hold every class exactly once (502
//! `bad_backend_reply`): no value is made up.
//!
//! What it refuses (each a `{"error": ..., "code": ...}` with its status, the protocol's error
//! shape plus our stable code): a preprocessed tensor (`FP32`, `UINT8`...) as input, since the
//! enclave's frames carry encoded images in, and a new frame kind in the trusted base (shared/,
//! enclave/) is out of scope; the full output of a model with more than `MAX_FRAME_TOP_K` classes
//! (`full_output_refused`: a frame cannot carry them). Also every malformed request: a header
//! length that is not digits or exceeds the body, binary sizes that do not add up to the body, an
//! element count that is not the shape's, more than `MAX_IMAGES` images, an element length past
//! its buffer, unknown input or output names, one form asked twice or both binary, compressed bodies.
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
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{json, Map, Value};
use shared::frame::{InferReply, InferRequest, ModelInfo};
use shared::limits::{MAX_FRAME_TOP_K, MAX_ID_LEN, MAX_IMAGES, MAX_JSON_VALUES, MAX_TOP_K};

use crate::api::{check_image, ApiError, B64};
use crate::backend::Backend;
use crate::metrics::Route;
use crate::server::{header, read_body, App, Reply};
use tiny_http::{Method, Request};

/// The one input's name.
pub const INPUT: &str = "image";
/// The one output's name (in full, or through the classification extension).
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

/// The message for a preprocessed tensor as input.
pub const TENSOR_INPUT_REFUSED: &str = "input \"image\" must be BYTES (encoded JPEG or PNG images): a preprocessed \
     tensor (FP32, UINT8...) would need a new frame kind in the enclave's trusted base, which takes encoded images only";

/// A form of output `probabilities`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The model's output: FP32 `[N, num_classes]`, every class's probability in class order.
    Full,
    /// Triton's classification extension: the `k` best, BYTES `"score:class_id:label"`, `[N, k]`.
    Classification(u16),
}

/// One requested output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    pub form: Form,
    /// In binary form (after the JSON header), else in the header's `data`.
    pub binary: bool,
}

/// What an infer request asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct V2Request {
    /// Encoded images (JPEG or PNG), 1 to `MAX_IMAGES`.
    pub images: Vec<Vec<u8>>,
    /// The request's `id`, echoed in the reply.
    pub id: Option<String>,
    /// The outputs to answer, in the order asked: one, or both forms (at most one binary).
    pub outputs: Vec<Output>,
}

impl V2Request {
    /// The `top_k` to ask the model server for: every class when the full output is asked
    /// (`full_output_refused` when a frame cannot carry them), else the classification's `k`.
    pub fn top_k(&self, num_classes: u32) -> Result<u16, V2Error> {
        if self.outputs.iter().any(|o| o.form == Form::Full) {
            return match usize::try_from(num_classes) {
                Ok(n @ 1..=MAX_FRAME_TOP_K) => Ok(n as u16),
                Ok(0) => Err(err(502, "bad_backend_reply", "the model server reports a model without classes")),
                _ => Err(bad(
                    "full_output_refused",
                    format!(
                        "this model has {num_classes} classes and a frame carries at most {MAX_FRAME_TOP_K} scores \
                         per image: ask for output \"probabilities\" with \"parameters\": {{\"classification\": k}}, \
                         1 <= k <= {MAX_TOP_K}"
                    ),
                )),
            };
        }
        Ok(self.outputs.iter().map(|o| if let Form::Classification(k) = o.form { k } else { 1 }).max().unwrap_or(1))
    }
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

    // The outputs: none listed (or an empty list) means all outputs, in full.
    let outputs = match req.get("outputs") {
        None => vec![Output { form: Form::Full, binary: binary_output_all }],
        Some(Value::Array(a)) if a.is_empty() => vec![Output { form: Form::Full, binary: binary_output_all }],
        Some(Value::Array(a)) => parse_outputs(a, binary_output_all)?,
        Some(_) => return Err(bad("bad_outputs", "\"outputs\" must be an array")),
    };
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

    Ok(V2Request { images, id, outputs })
}

/// The listed outputs: `probabilities` once, or twice in its two forms (at most one binary:
/// tritonclient finds a binary output's data by its name, which both forms share).
fn parse_outputs(list: &[Value], binary_output_all: bool) -> Result<Vec<Output>, V2Error> {
    if list.len() > 2 {
        return Err(bad(
            "bad_outputs",
            format!("this model has one output, \"{OUTPUT}\", in two forms at most (full and classification); the request names {}", list.len()),
        ));
    }
    let mut outputs: Vec<Output> = Vec::with_capacity(list.len());
    for output in list {
        let output = as_object(output, "an output")?;
        match output.get("name") {
            Some(Value::String(n)) if n == OUTPUT => {}
            Some(Value::String(_)) => return Err(bad("unknown_output", format!("unknown output name; this model's one output is \"{OUTPUT}\""))),
            _ => return Err(bad("bad_outputs", "an output needs a \"name\" string")),
        }
        let out_params = params(output, "output \"probabilities\"")?;
        let form = match out_params.and_then(|p| p.get("classification")).map(Value::as_u64) {
            None | Some(Some(0)) => Form::Full,
            Some(Some(k)) if k <= MAX_TOP_K as u64 => Form::Classification(k as u16),
            Some(_) => return Err(bad("bad_classification", format!("\"classification\" must be a whole number from 1 to {MAX_TOP_K}"))),
        };
        let binary = binary_output_all || opt_bool(out_params, "binary_data", "output \"probabilities\"")?;
        if let Some(first) = outputs.first() {
            if matches!((first.form, form), (Form::Full, Form::Full) | (Form::Classification(_), Form::Classification(_))) {
                return Err(bad("bad_outputs", format!("output \"{OUTPUT}\" is asked twice in the same form")));
            }
            if first.binary && binary {
                return Err(bad(
                    "bad_outputs",
                    format!(
                        "both forms of output \"{OUTPUT}\" in binary form: clients find binary data by output name, \
                         which they share; ask one of them with \"binary_data\": false"
                    ),
                ));
            }
        }
        outputs.push(Output { form, binary });
    }
    Ok(outputs)
}

/// Triton's classification string: `score:class_id:label` (`score:class_id` without a label).
fn classification(score: f32, class_id: u32, label: &str) -> String {
    if label.is_empty() {
        format!("{score:.6}:{class_id}")
    } else {
        format!("{score:.6}:{class_id}:{label}")
    }
}

fn bad_reply(message: String) -> V2Error {
    err(502, "bad_backend_reply", message)
}

/// The rows of the full FP32 output, flat, row-major: each image's scores, which the model
/// server sends best first with their class ids, put back in class order. Each image must carry
/// every class id below `num_classes` exactly once (a missing, repeated or out-of-range id is a
/// bad backend reply, 502): no value is made up or left out.
pub fn full_rows(num_classes: u32, reply: &InferReply) -> Result<Vec<f32>, V2Error> {
    let classes = num_classes as usize;
    // Checked first, so nothing is sized by num_classes alone: the frame decoder bounds each
    // list by MAX_FRAME_TOP_K.
    if let Some((i, img)) = reply.images.iter().enumerate().find(|(_, img)| img.top.len() != classes) {
        return Err(bad_reply(format!("image {i}: the model server sent {} scores for {classes} classes", img.top.len())));
    }
    let mut rows = vec![0f32; reply.images.len() * classes];
    let mut seen = vec![false; classes];
    for (i, (img, row)) in reply.images.iter().zip(rows.chunks_exact_mut(classes.max(1))).enumerate() {
        seen.fill(false);
        for c in &img.top {
            let id = c.class_id as usize;
            match seen.get_mut(id) {
                None => return Err(bad_reply(format!("image {i}: class id {id} out of range (the model has {classes})"))),
                Some(true) => return Err(bad_reply(format!("image {i}: class id {id} sent twice"))),
                Some(s) => {
                    *s = true;
                    row[id] = c.score;
                }
            }
        }
    }
    Ok(rows)
}

/// An output tensor's data.
enum Data {
    Fp32(Vec<f32>),
    Bytes(Vec<String>),
}

impl Data {
    /// Appends the binary tensor data extension's bytes, little-endian FP32 or each BYTES element
    /// as a 4-byte little-endian length and its bytes; returns how many.
    fn append_binary(&self, out: &mut Vec<u8>) -> usize {
        let start = out.len();
        match self {
            Data::Fp32(v) => v.iter().for_each(|f| out.extend_from_slice(&f.to_le_bytes())),
            Data::Bytes(v) => v.iter().for_each(|s| {
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }),
        }
        out.len() - start
    }
}

/// One output of the reply as it appears in the JSON header: its data, or its binary size.
struct OutputJson<'a> {
    datatype: &'static str,
    shape: [usize; 2],
    data: Result<&'a Data, usize>,
}

impl Serialize for OutputJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("name", OUTPUT)?;
        m.serialize_entry("datatype", self.datatype)?;
        m.serialize_entry("shape", &self.shape)?;
        match self.data {
            // f32 written as f32 (the shortest text that reads back as the same f32), not widened to f64.
            Ok(Data::Fp32(v)) => m.serialize_entry("data", v)?,
            Ok(Data::Bytes(v)) => m.serialize_entry("data", v)?,
            Err(size) => m.serialize_entry("parameters", &json!({ "binary_data_size": size }))?,
        }
        m.end()
    }
}

/// The reply's JSON header.
struct ReplyJson<'a> {
    model: &'a str,
    id: Option<&'a str>,
    outputs: Vec<OutputJson<'a>>,
}

impl Serialize for ReplyJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(id) = self.id {
            m.serialize_entry("id", id)?;
        }
        m.serialize_entry("model_name", self.model)?;
        m.serialize_entry("model_version", VERSION)?;
        m.serialize_entry("outputs", &self.outputs)?;
        m.end()
    }
}

/// An infer reply: the body, its Content-Type, and the Inference-Header-Content-Length value
/// when an output is binary. The outputs come in the order asked, binary data after the header
/// in that order. `Err` (502) when the backend's reply cannot make them: a list shorter than the
/// min(k, num_classes) best the classification needs, or a full row without every class exactly
/// once ([`full_rows`]).
pub fn render_infer(
    model: &str,
    id: Option<&str>,
    outputs: &[Output],
    info: &ModelInfo,
    reply: &InferReply,
) -> Result<(Vec<u8>, &'static str, Option<usize>), V2Error> {
    let n = reply.images.len();
    let mut tensors = Vec::with_capacity(outputs.len());
    for out in outputs {
        let tensor = match out.form {
            Form::Full => ("FP32", [n, info.num_classes as usize], Data::Fp32(full_rows(info.num_classes, reply)?)),
            Form::Classification(k) => {
                // The k best of each image's list, which is best first: min(k, num_classes) of them
                // (the list holds every class when the full output is asked too).
                let k = usize::from(k).min(info.num_classes as usize);
                if reply.images.iter().any(|i| i.top.len() < k) {
                    return Err(bad_reply(format!("the model server sent fewer than the {k} best classes of an image")));
                }
                let label = |id: u32| -> &str { info.labels.get(id as usize).map(String::as_str).unwrap_or("") };
                let strings =
                    reply.images.iter().flat_map(|i| i.top[..k].iter().map(|c| classification(c.score, c.class_id, label(c.class_id))));
                ("BYTES", [n, k], Data::Bytes(strings.collect()))
            }
        };
        tensors.push((out.binary, tensor));
    }
    let mut tail = Vec::new();
    let mut json_outputs = Vec::with_capacity(tensors.len());
    for (binary, (datatype, shape, data)) in &tensors {
        let data = if *binary {
            Err(data.append_binary(&mut tail))
        } else {
            Ok(data)
        };
        json_outputs.push(OutputJson { datatype, shape: *shape, data });
    }
    let header = ReplyJson { model, id, outputs: json_outputs };
    let mut body = serde_json::to_vec(&header).map_err(|e| err(500, "internal", format!("cannot write the reply: {e}")))?;
    if outputs.iter().any(|o| o.binary) {
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
                ModelOp::Infer => infer(app, backend, rq, name, &info),
            }
        }
    }
}

fn infer(app: &App, backend: &Backend, rq: &mut Request, name: &str, model: &ModelInfo) -> Reply {
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
    // Every class for the full output, else the classification's k.
    let top_k = match req.top_k(model.num_classes) {
        Ok(k) => k,
        Err(e) => return error_reply(&e),
    };
    let V2Request { images, id, outputs } = req;
    // The backend the name selected, and only it: `-secure` fails closed here.
    let (reply, info) = match backend.infer(InferRequest { top_k, images }) {
        Ok(x) => x,
        Err(e) => return Reply::error(&ApiError::Backend(e)),
    };
    // The rows are checked against the model of the connection that answered.
    match render_infer(name, id.as_deref(), &outputs, &info, &reply) {
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
    use shared::frame::{ClassScore, ImageResult, StageTimings};

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
        assert_eq!(r.images, vec![JPEG.to_vec(), PNG.to_vec()]);
        assert_eq!(r.outputs, vec![Output { form: Form::Classification(3), binary: true }]);
        assert_eq!(r.top_k(1000), Ok(3));
        let b64 = base64::engine::general_purpose::STANDARD.encode(JPEG);
        let j = json!({
            "id": "x1",
            "inputs": [{ "name": "image", "datatype": "BYTES", "shape": [1, 1], "parameters": { "content_type": "base64" }, "data": [b64] }],
            "outputs": [{ "name": "probabilities", "parameters": { "classification": 5 } }],
        });
        let r = parse_infer(Some("application/json"), None, None, j.to_string().as_bytes()).unwrap();
        assert_eq!((r.images.len(), r.id.as_deref()), (1, Some("x1")));
        assert_eq!(r.outputs, vec![Output { form: Form::Classification(5), binary: false }]);
    }

    #[test]
    fn output_forms() {
        let outs = |outputs: Option<Value>, params: Value| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(JPEG);
            let mut j = json!({
                "parameters": params,
                "inputs": [{ "name": "image", "datatype": "BYTES", "shape": [1], "parameters": { "content_type": "base64" }, "data": [b64] }],
            });
            if let Some(o) = outputs {
                j["outputs"] = o;
            }
            parse_infer(None, None, None, j.to_string().as_bytes()).map(|r| r.outputs)
        };
        let full = |binary| Output { form: Form::Full, binary };
        let class = |k, binary| Output { form: Form::Classification(k), binary };
        // No outputs, or an empty list: all outputs in full, binary as the request says.
        assert_eq!(outs(None, json!({})), Ok(vec![full(false)]));
        assert_eq!(outs(None, json!({ "binary_data_output": true })), Ok(vec![full(true)]));
        assert_eq!(outs(Some(json!([])), json!({})), Ok(vec![full(false)]));
        // Without classification, or with 0: in full.
        assert_eq!(outs(Some(json!([{ "name": "probabilities" }])), json!({})), Ok(vec![full(false)]));
        assert_eq!(
            outs(Some(json!([{ "name": "probabilities", "parameters": { "classification": 0, "binary_data": true } }])), json!({})),
            Ok(vec![full(true)])
        );
        // Both forms, in the order asked, one of them binary.
        let both = json!([
            { "name": "probabilities", "parameters": { "binary_data": true } },
            { "name": "probabilities", "parameters": { "classification": 5 } },
        ]);
        assert_eq!(outs(Some(both), json!({})), Ok(vec![full(true), class(5, false)]));
        let both = json!([{ "name": "probabilities", "parameters": { "classification": 100, "binary_data": true } }, { "name": "probabilities" }]);
        assert_eq!(outs(Some(both), json!({})), Ok(vec![class(100, true), full(false)]));
        // Refused: one form twice, both binary, three outputs, a bad classification.
        let code = |r: Result<Vec<Output>, V2Error>| r.map_err(|e| (e.status, e.code));
        let p = json!({ "name": "probabilities" });
        let c = json!({ "name": "probabilities", "parameters": { "classification": 3 } });
        assert_eq!(code(outs(Some(json!([p, p])), json!({}))), Err((400, "bad_outputs")));
        assert_eq!(code(outs(Some(json!([c, c])), json!({}))), Err((400, "bad_outputs")));
        assert_eq!(code(outs(Some(json!([p, c, p])), json!({}))), Err((400, "bad_outputs")));
        assert_eq!(code(outs(Some(json!([p, c])), json!({ "binary_data_output": true }))), Err((400, "bad_outputs")));
        let pb = json!({ "name": "probabilities", "parameters": { "binary_data": true } });
        let cb = json!({ "name": "probabilities", "parameters": { "classification": 3, "binary_data": true } });
        assert_eq!(code(outs(Some(json!([pb, cb])), json!({}))), Err((400, "bad_outputs")));
        let e = outs(Some(json!([pb, cb])), json!({})).unwrap_err();
        assert!(e.message.contains("\"binary_data\": false"), "{}", e.message);
        let c101 = json!({ "name": "probabilities", "parameters": { "classification": 101 } });
        assert_eq!(code(outs(Some(json!([p, c101])), json!({}))), Err((400, "bad_classification")));
        let cneg = json!({ "name": "probabilities", "parameters": { "classification": -1 } });
        assert_eq!(code(outs(Some(json!([cneg])), json!({}))), Err((400, "bad_classification")));
        assert_eq!(code(outs(Some(json!([p, { "name": "logits" }])), json!({}))), Err((400, "unknown_output")));
        assert_eq!(code(outs(Some(json!([p, 7])), json!({}))), Err((400, "bad_request")));
        assert_eq!(code(outs(Some(json!({ "name": "probabilities" })), json!({}))), Err((400, "bad_outputs")));
    }

    #[test]
    fn top_k_asked_of_the_backend() {
        let req = |outputs: Vec<Output>| V2Request { images: vec![JPEG.to_vec()], id: None, outputs };
        let full = Output { form: Form::Full, binary: true };
        let class = Output { form: Form::Classification(7), binary: false };
        assert_eq!(req(vec![class]).top_k(1000), Ok(7));
        assert_eq!(req(vec![full]).top_k(1000), Ok(1000));
        assert_eq!(req(vec![class, full]).top_k(10), Ok(10));
        assert_eq!(req(vec![full]).top_k(MAX_FRAME_TOP_K as u32), Ok(MAX_FRAME_TOP_K as u16));
        // More classes than a frame carries: only the classification form is served.
        let e = req(vec![full]).top_k(MAX_FRAME_TOP_K as u32 + 1).unwrap_err();
        assert_eq!((e.status, e.code), (400, "full_output_refused"));
        assert_eq!(req(vec![class]).top_k(100_000), Ok(7));
        assert_eq!(req(vec![full]).top_k(0).map_err(|e| e.code), Err("bad_backend_reply"));
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
        assert_eq!(p(&hl6, &body6).unwrap().outputs, vec![Output { form: Form::Full, binary: true }]);
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
        assert_eq!(code(j(json!({ "inputs": [input] }))), (400, "bytes_not_base64"));
        assert_eq!(code(j(json!({ "inputs": [input], "outputs": [{ "name": "probabilities" }] }))), (400, "bytes_not_base64"));
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

    fn model(num_classes: u32) -> ModelInfo {
        ModelInfo {
            name: "m".into(),
            sha256: [0; 32],
            synthetic: false,
            input_shape: [1, 3, 224, 224],
            num_classes,
            label_source: "x".into(),
            labels: (0..num_classes).map(|i| if i == 1 { "tiger cat".into() } else { format!("c{i}") }).collect(),
        }
    }

    /// One image's scores as the model server sends them: best first, with class ids.
    fn image(scores: &[(u32, f32)]) -> ImageResult {
        ImageResult { timings: StageTimings::default(), top: scores.iter().map(|&(class_id, score)| ClassScore { class_id, score }).collect() }
    }

    #[test]
    fn renders_classification() {
        let info = model(2);
        let img = image(&[(1, 0.75), (0, 0.25)]);
        let reply = InferReply { images: vec![img.clone(), img] };
        let two = |binary| [Output { form: Form::Classification(2), binary }];
        let (body, ct, hl) = render_infer("m-secure", Some("a"), &two(false), &info, &reply).unwrap();
        assert_eq!((ct, hl), ("application/json", None));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["outputs"][0]["shape"], json!([2, 2]));
        assert_eq!(v["outputs"][0]["data"][0], "0.750000:1:tiger cat");
        assert_eq!((&v["id"], &v["model_name"], &v["model_version"]), (&json!("a"), &json!("m-secure"), &json!("1")));
        let (body, ct, hl) = render_infer("m-secure", None, &two(true), &info, &reply).unwrap();
        let hl = hl.unwrap();
        assert_eq!(ct, "application/octet-stream");
        let v: Value = serde_json::from_slice(&body[..hl]).unwrap();
        assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], body.len() - hl);
        assert!(v.get("id").is_none() && v["outputs"][0].get("data").is_none());
        assert_eq!(&body[hl..hl + 4], &20u32.to_le_bytes());
        assert_eq!(&body[hl + 4..hl + 24], b"0.750000:1:tiger cat");
        // k over the classes: the classes there are; fewer than min(k, classes): a bad backend reply.
        let (body, _, _) = render_infer("m", None, &[Output { form: Form::Classification(5), binary: false }], &info, &reply).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["outputs"][0]["shape"], json!([2, 2]));
        let short = InferReply { images: vec![image(&[(1, 0.75), (0, 0.25)]), image(&[(1, 0.75)])] };
        let e = render_infer("m", None, &two(false), &info, &short).unwrap_err();
        assert_eq!((e.status, e.code), (502, "bad_backend_reply"));
    }

    #[test]
    fn assembles_full_rows_by_class_id() {
        // Best first as sent; rows come out in class order.
        let reply = InferReply { images: vec![image(&[(2, 0.5), (0, 0.3), (1, 0.2)]), image(&[(0, 0.9), (2, 0.06), (1, 0.04)])] };
        assert_eq!(full_rows(3, &reply), Ok(vec![0.3, 0.2, 0.5, 0.9, 0.04, 0.06]));
        let refused = |images: Vec<ImageResult>| {
            let e = full_rows(3, &InferReply { images }).unwrap_err();
            assert_eq!((e.status, e.code), (502, "bad_backend_reply"), "{}", e.message);
            e.message
        };
        // A class id missing (fewer scores than classes), sent twice, out of range; more scores than classes.
        assert!(refused(vec![image(&[(2, 0.5), (0, 0.5)])]).contains("2 scores for 3 classes"));
        assert!(refused(vec![image(&[(2, 0.5), (0, 0.3), (1, 0.2)]), image(&[(2, 0.5), (0, 0.5)])]).starts_with("image 1:"));
        assert!(refused(vec![image(&[(2, 0.5), (0, 0.3), (2, 0.2)])]).contains("class id 2 sent twice"));
        assert!(refused(vec![image(&[(2, 0.5), (0, 0.3), (3, 0.2)])]).contains("class id 3 out of range"));
        assert!(refused(vec![image(&[(2, 0.5), (0, 0.3), (u32::MAX, 0.2)])]).contains("out of range"));
        assert!(refused(vec![image(&[(2, 0.4), (0, 0.3), (1, 0.2), (1, 0.1)])]).contains("4 scores for 3 classes"));
        // A model without classes, and an empty reply, make no rows and do not panic.
        assert_eq!(full_rows(0, &InferReply { images: vec![image(&[])] }), Ok(vec![]));
        assert_eq!(full_rows(3, &InferReply { images: vec![] }), Ok(vec![]));
    }

    #[test]
    fn renders_the_full_output_and_both_forms() {
        let info = model(3);
        let reply = InferReply { images: vec![image(&[(2, 0.5), (0, 0.3), (1, 0.2)]), image(&[(1, 0.7), (0, 0.2), (2, 0.1)])] };
        let full = |binary| Output { form: Form::Full, binary };
        // JSON: FP32 written as f32 (0.3, not 0.30000001192092896), flat and row-major.
        let (body, ct, hl) = render_infer("m-public", Some("r"), &[full(false)], &info, &reply).unwrap();
        assert_eq!((ct, hl), ("application/json", None));
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains(r#""data":[0.3,0.2,0.5,0.2,0.7,0.1]"#), "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["outputs"][0], json!({ "name": "probabilities", "datatype": "FP32", "shape": [2, 3], "data": [0.3, 0.2, 0.5, 0.2, 0.7, 0.1] }));
        // Binary: little-endian f32, row-major, its size in binary_data_size.
        let (body, ct, hl) = render_infer("m-public", None, &[full(true)], &info, &reply).unwrap();
        let hl = hl.unwrap();
        assert_eq!(ct, "application/octet-stream");
        let v: Value = serde_json::from_slice(&body[..hl]).unwrap();
        assert_eq!(v["outputs"][0], json!({ "name": "probabilities", "datatype": "FP32", "shape": [2, 3], "parameters": { "binary_data_size": 24 } }));
        let floats: Vec<f32> = body[hl..].chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        assert_eq!(floats, vec![0.3, 0.2, 0.5, 0.2, 0.7, 0.1]);
        // Every f32 bit pattern survives JSON exactly, except the non-finite ones (JSON has no NaN: null).
        let odd = InferReply { images: vec![image(&[(0, f32::MIN_POSITIVE), (1, 1.0 - f32::EPSILON), (2, f32::NAN)])] };
        let (body, _, _) = render_infer("m", None, &[full(false)], &info, &odd).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        let data = v["outputs"][0]["data"].as_array().unwrap();
        assert_eq!(data[0].as_f64().map(|f| f as f32), Some(f32::MIN_POSITIVE));
        assert_eq!(data[1].as_f64().map(|f| f as f32), Some(1.0 - f32::EPSILON));
        assert!(data[2].is_null());
        // Both forms, in the order asked: the classification from the head of the full list.
        let class2 = |binary| Output { form: Form::Classification(2), binary };
        let (body, _, hl) = render_infer("m", None, &[class2(false), full(true)], &info, &reply).unwrap();
        let hl = hl.unwrap();
        let v: Value = serde_json::from_slice(&body[..hl]).unwrap();
        assert_eq!(v["outputs"][0], json!({ "name": "probabilities", "datatype": "BYTES", "shape": [2, 2], "data": ["0.500000:2:c2", "0.300000:0:c0", "0.700000:1:tiger cat", "0.200000:0:c0"] }));
        assert_eq!(v["outputs"][1]["parameters"]["binary_data_size"], 24);
        assert_eq!(body.len() - hl, 24);
        let (body, _, hl) = render_infer("m", None, &[full(false), class2(true)], &info, &reply).unwrap();
        let hl = hl.unwrap();
        let v: Value = serde_json::from_slice(&body[..hl]).unwrap();
        assert_eq!(v["outputs"][0]["data"], json!([0.3, 0.2, 0.5, 0.2, 0.7, 0.1]));
        assert_eq!((&v["outputs"][1]["datatype"], &v["outputs"][1]["shape"]), (&json!("BYTES"), &json!([2, 2])));
        assert_eq!(&body[hl..hl + 4], &13u32.to_le_bytes());
        assert_eq!(&body[hl + 4..hl + 17], b"0.500000:2:c2");
        // A full row that is not every class once: 502, whichever form comes first.
        let dup = InferReply { images: vec![image(&[(2, 0.5), (2, 0.3), (1, 0.2)])] };
        let e = render_infer("m", None, &[class2(false), full(false)], &info, &dup).unwrap_err();
        assert_eq!((e.status, e.code), (502, "bad_backend_reply"));
    }
}
