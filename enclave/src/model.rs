//! The model: loaded once at start, shared read-only by every worker.
//!
//! Loading reads the ONNX file, checks its SHA-256 against the manifest (a
//! corrupted or substituted model is refused, not served), fixes the input
//! fact to [1, 3, S, S], gives tract its share of the last-level cache
//! ([`crate::llc`]), runs the 3x3 convolutions of stride 1 directly, the max
//! pools by rows and the other convolutions channel-last ([`TRANSFORMS`]), optimises with the im2col choice of [`IM2COL_KNOBS`]
//! and builds one runnable plan. Each worker
//! then owns its own [`WorkerState`] on that shared plan: no lock is taken on
//! the inference path.
//!
//! Scores are the softmax of the model's output (classifiers here end in
//! logits). Ranking uses `f32::total_cmp`, so a NaN can never panic a worker.

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use shared::frame::{ClassScore, ModelInfo};
use shared::limits::{MAX_LABELS, MAX_STRING_LEN};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::math::Max;
use tract_onnx::tract_hir::internal::DimLike;

use crate::config::{read_small, Config};
use crate::preprocess::Preprocess;

pub type Plan = Arc<TypedRunnableModel>;
pub type WorkerState = tract_onnx::tract_core::plan::SimpleState<TypedFact, Box<dyn TypedOp>>;

/// tract's transform that runs every convolution channel-last (NHWC): the
/// input is moved channel-last once and the convolutions, depthwise ones
/// included, run on that layout. Its depthwise kernel then reads channels
/// contiguously instead of walking small strided planes, and the pointwise
/// convolutions skip most packing. Measured with `bench engine` and
/// `bench profile` (BENCHMARKS.md, "Engine levers"); the plan's outputs are
/// checked against tract's default plan in `enclave/tests/plan.rs`.
pub const CONV_TRANSFORM: &str = "conv_nhwc";

/// The transforms of the served plan, in order: ours that runs the 3x3 convolutions of stride 1
/// directly, without im2col ([`crate::direct_conv`], on x86-64; it leaves the model unchanged on
/// a CPU without AVX2 and FMA), ours that pools by rows ([`crate::max_pool`]), then
/// [`CONV_TRANSFORM`] for the other convolutions.
#[cfg(target_arch = "x86_64")]
pub const TRANSFORMS: [&str; 3] = [crate::direct_conv::NAME, crate::max_pool::NAME, CONV_TRANSFORM];
#[cfg(not(target_arch = "x86_64"))]
pub const TRANSFORMS: [&str; 2] = [crate::max_pool::NAME, CONV_TRANSFORM];

/// tract's knobs for the served plan, which decide how a convolution's patches are gathered
/// (im2col) for its matrix product. tract's default gathers them lazily, panel by panel, for
/// every kernel of 6 taps or more; a product whose weights do not fit the core's cache then
/// re-reads them once per panel of patches (ResNet18's 3x3 convolutions of 256 and 512
/// channels). These values gather the patches eagerly, once, whenever they take at most
/// 2 MiB (cache-resident), and lazily above that. Measured with `bench profile`: ResNet18
/// 51-52 -> 40-42 ms per image, EfficientNet-Lite0 unchanged (BENCHMARKS.md, "Engine levers"). Set
/// in a `KnobScope` while the plan is built, so the environment's values do not reach it.
pub const IM2COL_KNOBS: [(&str, &str); 2] =
    [("TRACT_LAZY_IM2COL_MIN_KERNEL", "4294967295"), ("TRACT_LAZY_IM2COL_MAX_EAGER_BYTES", "2097152")];

/// tract's runnable plan of an ONNX model for one `size` x `size` RGB image: tract's own pipeline
/// (to typed, decluttered), then tract's transforms named in `transforms`, in order, then
/// optimised, with tract's knobs `knobs` (name, value) set while it is built. [`Model::load`]
/// passes [`TRANSFORMS`] and [`IM2COL_KNOBS`]; no transform and no knob is tract's default
/// plan, which the tests and `bench profile` compare it with.
pub fn plan(bytes: &[u8], size: usize, transforms: &[&str], knobs: &[(&str, &str)]) -> Result<Plan, ModelError> {
    let load = |e: TractError| ModelError::Load(format!("{e:#}"));
    let scope = tract_onnx::tract_core::knobs::KnobScope::new(knobs.iter().copied()).map_err(load)?;
    scope.enter(|| {
        let mut typed = tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])
            .map_err(load)?
            .with_input_fact(0, f32::fact([1, 3, size, size]).into())
            .map_err(load)?
            .into_typed()
            .map_err(load)?
            .into_decluttered()
            .map_err(load)?;
        for name in transforms {
            let t = tract_onnx::tract_core::transform::get_transform(name)
                .map_err(load)?
                .ok_or_else(|| ModelError::Load(format!("this build of tract has no {name:?} transform")))?;
            t.transform(&mut typed).map_err(load)?;
        }
        typed.into_optimized().map_err(load)?.into_runnable().map_err(load)
    })
}

/// The data input of `node` when it is a ReLU as tract's ONNX importer writes one: `Max` of the
/// data and a constant of zeros that only broadcasts (all its dimensions 1), f32. For the
/// transforms that fold a ReLU into the op beside it ([`crate::direct_conv`], [`crate::max_pool`]).
pub(crate) fn relu_input(model: &TypedModel, node: &TypedNode) -> Option<OutletId> {
    let op = node.op_as::<TypedBinOp>()?;
    if !op.0.is::<Max>() || node.inputs.len() != 2 {
        return None;
    }
    let zeros = |o: &OutletId| {
        let k = model.outlet_fact(*o).ok().and_then(|f| f.konst.clone());
        k.is_some_and(|k| k.datum_type() == f32::datum_type() && k.shape().iter().all(|&d| d == 1) && k.is_all_zero().unwrap_or(false))
    };
    let data = match (zeros(&node.inputs[0]), zeros(&node.inputs[1])) {
        (false, true) => node.inputs[0],
        (true, false) => node.inputs[1],
        _ => return None,
    };
    let fact = model.outlet_fact(data).ok()?;
    (fact.datum_type == f32::datum_type() && node.outputs[0].fact.shape == fact.shape).then_some(data)
}

/// Whether `node` alone reads `outlet`: no second node does, and it is not a model output. Then
/// the op that computes `outlet` can take `node`'s work over.
pub(crate) fn read_only_by(model: &TypedModel, outlet: OutletId, node: usize) -> bool {
    let readers = model.outlet_successors(outlet);
    readers.len() == 1 && readers[0].node == node && !model.outputs.contains(&outlet)
}

/// Largest model file we load: 2 GiB is ONNX's own protobuf limit.
const MAX_MODEL_LEN: u64 = 2 << 30;
/// Largest labels file: 100k labels of a few dozen bytes.
const MAX_LABELS_FILE_LEN: u64 = 8 << 20;

#[derive(Debug)]
pub enum ModelError {
    Io(String),
    HashMismatch { expected: String, actual: String },
    Load(String),
    Labels(String),
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::Io(why) => write!(f, "cannot read the model: {why}"),
            ModelError::HashMismatch { expected, actual } => write!(
                f,
                "model file SHA-256 is {actual} but the manifest says {expected}: refusing a corrupted or substituted model (run `make model` again)"
            ),
            ModelError::Load(why) => write!(f, "cannot load the model with tract: {why}"),
            ModelError::Labels(why) => write!(f, "bad labels file: {why}"),
        }
    }
}

impl std::error::Error for ModelError {}

pub struct Model {
    plan: Plan,
    pub preprocess: Preprocess,
    pub info: ModelInfo,
    pub load_ms: u128,
}

impl Model {
    pub fn load(cfg: &Config) -> Result<Model, ModelError> {
        let started = Instant::now();
        let bytes = read_model(&cfg.model_path)?;
        let sha256: [u8; 32] = Sha256::digest(&bytes).into();
        let actual: String = sha256.iter().map(|b| format!("{b:02x}")).collect();
        if let Some(expected) = &cfg.expected_sha256 {
            if *expected != actual {
                return Err(ModelError::HashMismatch { expected: expected.clone(), actual });
            }
        }

        let s = cfg.preprocess.input_size as usize;
        let load = |e: TractError| ModelError::Load(format!("{e:#}"));
        crate::llc::apply().map_err(ModelError::Load)?;
        let plan = plan(&bytes, s, &TRANSFORMS, &IM2COL_KNOBS)?;
        let num_classes = output_classes(&plan)?;

        let labels = match &cfg.labels_path {
            Some(p) => read_labels(p, num_classes)?,
            None => Vec::new(),
        };
        let info = ModelInfo {
            name: cfg.name.clone(),
            sha256,
            synthetic: cfg.synthetic,
            input_shape: [1, 3, cfg.preprocess.input_size, cfg.preprocess.input_size],
            num_classes,
            label_source: if labels.is_empty() { "none".into() } else { cfg.label_source.clone() },
            labels,
        };
        let model = Model { plan, preprocess: cfg.preprocess.clone(), info, load_ms: 0 };
        // One warm-up run, so the first request does not pay for lazy set-up.
        let mut state = model.new_state()?;
        let zeros = Tensor::zero::<f32>(&[1, 3, s, s]).map_err(load)?;
        model.scores(&mut state, zeros)?;
        Ok(Model { load_ms: started.elapsed().as_millis(), ..model })
    }

    pub fn new_state(&self) -> Result<WorkerState, ModelError> {
        WorkerState::new(&self.plan).map_err(|e| ModelError::Load(format!("{e:#}")))
    }

    /// Runs the model on one preprocessed input; returns one probability per class.
    pub fn scores(&self, state: &mut WorkerState, input: Tensor) -> Result<Vec<f32>, ModelError> {
        let out = state.run(tvec!(input.into())).map_err(|e| ModelError::Load(format!("inference failed: {e:#}")))?;
        let first = out.first().ok_or_else(|| ModelError::Load("the model produced no output".into()))?;
        let view = first.to_plain_array_view::<f32>().map_err(|e| ModelError::Load(format!("{e:#}")))?;
        Ok(softmax(view.iter().copied()))
    }
}

fn read_model(path: &Path) -> Result<Vec<u8>, ModelError> {
    let io = |e: std::io::Error| ModelError::Io(format!("{}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_MODEL_LEN + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX_MODEL_LEN {
        return Err(ModelError::Io(format!("{} is larger than {MAX_MODEL_LEN} bytes", path.display())));
    }
    Ok(bytes)
}

/// The number of classes: the output must be [1, classes] (or [classes]).
fn output_classes(plan: &Plan) -> Result<u32, ModelError> {
    let model = plan.model();
    let outlet = model.output_outlets().map_err(|e| ModelError::Load(format!("{e:#}")))?;
    let fact = outlet
        .first()
        .and_then(|o| model.outlet_fact(*o).ok())
        .ok_or_else(|| ModelError::Load("the model has no output".into()))?;
    let dims: Vec<usize> = fact.shape.iter().map(|d| d.to_usize().unwrap_or(0)).collect();
    let classes = match dims.as_slice() {
        [1, n] | [n] => *n,
        _ => 0,
    };
    if classes == 0 || classes > MAX_LABELS {
        return Err(ModelError::Load(format!(
            "output shape {dims:?} is not [1, classes] with 1 to {MAX_LABELS} classes (is this an image classifier?)"
        )));
    }
    Ok(classes as u32)
}

/// One label per line, line index = class id. The count must match the model.
fn read_labels(path: &Path, classes: u32) -> Result<Vec<String>, ModelError> {
    let text = read_small(path, MAX_LABELS_FILE_LEN).map_err(|e| ModelError::Labels(e.to_string()))?;
    let labels: Vec<String> = text.lines().map(|l| l.trim_end().to_string()).collect();
    if labels.len() != classes as usize {
        return Err(ModelError::Labels(format!(
            "{} has {} lines but the model has {classes} classes",
            path.display(),
            labels.len()
        )));
    }
    if let Some((i, _)) = labels.iter().enumerate().find(|(_, l)| l.len() > MAX_STRING_LEN) {
        return Err(ModelError::Labels(format!("label {i} is longer than {MAX_STRING_LEN} bytes")));
    }
    Ok(labels)
}

/// Numerically stable softmax. Non-finite inputs give non-finite outputs,
/// never a panic.
pub fn softmax(values: impl Iterator<Item = f32>) -> Vec<f32> {
    let v: Vec<f32> = values.collect();
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = v.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The `k` best classes, best first; ties keep the lower class id first.
pub fn top_k(scores: &[f32], k: usize) -> Vec<ClassScore> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.into_iter().take(k).map(|i| ClassScore { class_id: i as u32, score: scores[i] }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_survives_large_values() {
        let p = softmax([1000.0f32, 1001.0, 999.0].into_iter());
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(p[1] > p[0] && p[0] > p[2]);
    }

    #[test]
    fn top_k_orders_and_never_panics_on_nan() {
        let t = top_k(&[0.1, 0.7, 0.2], 2);
        assert_eq!(t.iter().map(|c| c.class_id).collect::<Vec<_>>(), vec![1, 2]);
        let t = top_k(&[0.1, f32::NAN, 0.2, f32::NAN], 4);
        assert_eq!(t.len(), 4);
        let t = top_k(&[0.5, 0.5, 0.5], 2);
        assert_eq!(t.iter().map(|c| c.class_id).collect::<Vec<_>>(), vec![0, 1]);
        assert!(top_k(&[], 3).is_empty());
        let all_nan = softmax([f32::NAN, 1.0].into_iter());
        assert_eq!(top_k(&all_nan, 1).len(), 1);
    }
}
