//! Max pooling over channels-first planes, in place of tract's `OptMaxPool`.
//!
//! tract pools by walking each output's window through its generic patch
//! machinery (any rank, any layout), value by value. ResNet18's one max pool
//! (3x3, stride 2, over 64 planes of 112 x 112) took 1.5-3.4 ms of its 75-90 ms
//! per image on a 2-core AMD EPYC (BENCHMARKS.md, "Engine levers").
//!
//! This pools each plane in two passes per output row, both over contiguous
//! memory, loops the compiler vectorises: the maximum down the window's rows
//! into one padded row, then across. For the second, the row is split into
//! its `stride` phases (the columns `b, b + stride, ..`), where each of the
//! window's columns is one slice over all the outputs. It is safe code, for
//! any CPU.
//!
//! It is a tract model transform ([`NAME`], registered with tract's
//! re-export of `inventory` like [`crate::direct_conv`]), which replaces each
//! eligible `MaxPool` of a decluttered model by [`MaxPool2d`]. Eligible: f32,
//! channels first, two spatial axes, dilation 1, no index output. The output
//! shape and padding are tract's own ([`PoolSpec`]'s arithmetic, any padding
//! rule, ceiling mode included), so the op computes what tract's would;
//! `max_pool::tests` checks it against tract's op on padded, uneven, strided
//! and ceiling-mode windows, and `enclave/tests/plan.rs` checks the served
//! plan against tract's default plan on every model.
//!
//! A ReLU that only the pool reads (ResNet18's stem: convolution, ReLU, max
//! pool) is folded in: the pool of `relu(x)` is the pool of `x` started from
//! zero instead of minus infinity, wherever every window holds at least one
//! of the plane's values. That costs the pool nothing, where tract's ReLU is
//! a pass of its own over the four times larger plane before it.

use std::cell::RefCell;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{MaxPool, PoolSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_core::transform::{ModelTransform, ModelTransformFactory};

/// The transform's name, as [`crate::model::TRANSFORMS`] and `bench profile --transform` use it.
pub const NAME: &str = "enclave_max_pool";

/// One line for the start-up log and `bench profile`.
pub fn describe() -> String {
    format!("max pooling by rows ({NAME})")
}

#[derive(Debug)]
struct MaxPoolTransform;

impl ModelTransform for MaxPoolTransform {
    fn name(&self) -> StaticName {
        NAME.into()
    }

    fn transform(&self, model: &mut TypedModel) -> TractResult<()> {
        Rewriter::<()>::default().with_rule_for(NAME, rewrite_max_pool).rewrite(&(), model)
    }
}

inventory::submit! {
    ModelTransformFactory {
        name: NAME,
        build_default: || Ok(Box::new(MaxPoolTransform)),
        build: |_| Ok(Box::new(MaxPoolTransform)),
    }
}

fn rewrite_max_pool(_: &(), model: &TypedModel, node: &TypedNode, _name: &str, pool: &MaxPool) -> TractResult<Option<TypedModelPatch>> {
    let spec = &pool.pool_spec;
    rule_if!(pool.with_index_outputs.is_none() && node.inputs.len() == 1);
    rule_if!(spec.data_format == DataFormat::NCHW && spec.kernel_shape.len() == 2);
    rule_if!(spec.dilations().iter().all(|&d| d == 1) && spec.kernel_shape.iter().all(|&k| k > 0));
    rule_if!(spec.strides().iter().all(|&s| s > 0));
    let fact = model.outlet_fact(node.inputs[0])?;
    rule_if!(fact.datum_type == f32::datum_type() && fact.rank() == 4);
    // A ReLU that only this pool reads is folded in: relu(x) is never below zero, so pooling it
    // is pooling `x` from zero instead of minus infinity, where every window holds a value.
    let relu = crate::model::relu_input(model, model.node(node.inputs[0].node)).filter(|_| {
        let meet = fact.shape.as_concrete().is_some_and(|s| Windows::new(spec, s[2], s[3]).every_window_meets_the_plane());
        meet && crate::model::read_only_by(model, node.inputs[0], node.id)
    });
    let op = MaxPool2d { spec: spec.clone(), relu: relu.is_some() };
    Ok(Some(TypedModelPatch::replace_single_op(model, node, &[relu.unwrap_or(node.inputs[0])], op)?))
}

/// One plane's pooling: sizes, window, where the windows start, and the row the vertical
/// maximum goes into.
#[derive(Debug)]
struct Windows {
    h: usize,
    w: usize,
    kernel: [usize; 2],
    strides: [usize; 2],
    pad_top: usize,
    pad_left: usize,
    out_h: usize,
    out_w: usize,
    /// The padded row: `pad_left` columns of padding, the plane's `w`, and padding to the last
    /// window's end.
    row_len: usize,
    /// The padded row's columns per phase, `row_len / strides[1]` rounded up.
    phase_len: usize,
}

impl Windows {
    fn new(spec: &PoolSpec, h: usize, w: usize) -> Windows {
        let dims = spec.computed_padding(&[h, w]);
        let (kernel, strides) = ([spec.kernel_shape[0], spec.kernel_shape[1]], [spec.stride(0), spec.stride(1)]);
        let (out_h, out_w) = (dims[0].convoluted, dims[1].convoluted);
        let (pad_top, pad_left) = (dims[0].pad_before, dims[1].pad_before);
        let last_window_end = (out_w.saturating_sub(1)) * strides[1] + kernel[1];
        let row_len = (pad_left + w).max(last_window_end);
        let phase_len = row_len.div_ceil(strides[1]);
        Windows { h, w, kernel, strides, pad_top, pad_left, out_h, out_w, row_len, phase_len }
    }

    /// Whether every window holds at least one of the plane's values, none padding alone: the
    /// first window ends past the padding before the plane, the last starts before its end (on
    /// both axes; the windows in between start in order).
    fn every_window_meets_the_plane(&self) -> bool {
        let axis = |size: usize, out: usize, pad: usize, k: usize, s: usize| out > 0 && k > pad && (out - 1) * s < size + pad;
        axis(self.h, self.out_h, self.pad_top, self.kernel[0], self.strides[0])
            && axis(self.w, self.out_w, self.pad_left, self.kernel[1], self.strides[1])
    }

    /// One plane `[h][w]` into `out` `[out_h][out_w]`, each output the maximum of `floor` and
    /// its window. `row` is `row_len` long and `phases` `strides[1] * phase_len`, and both hold
    /// minus infinity (which padding is to a maximum) where the plane's columns do not land.
    fn pool(&self, plane: &[f32], out: &mut [f32], row: &mut [f32], phases: &mut [f32], floor: f32) {
        // A select, not `f32::max`: the same answer here (a maximum that starts at minus
        // infinity is never NaN) in one vector instruction. (A conditional store would not be
        // vectorised at all.)
        let max = |m: &mut f32, v: f32| *m = if v > *m { v } else { *m };
        for (oy, out_row) in out.chunks_exact_mut(self.out_w).enumerate() {
            // The window's rows in the padded plane are `oy * stride ..`; those in the plane:
            let top = oy * self.strides[0];
            let first = top.saturating_sub(self.pad_top).min(self.h);
            let end = (top + self.kernel[0]).saturating_sub(self.pad_top).min(self.h);
            let maxima = &mut row[self.pad_left..][..self.w];
            maxima.fill(f32::NEG_INFINITY);
            for y in first..end {
                for (m, &v) in maxima.iter_mut().zip(&plane[y * self.w..][..self.w]) {
                    max(m, v);
                }
            }
            let stride = self.strides[1];
            for (b, phase) in phases.chunks_exact_mut(self.phase_len).enumerate() {
                for (p, &v) in phase.iter_mut().zip(row[b..].iter().step_by(stride)) {
                    *p = v;
                }
            }
            // Output `ox`'s window column `j` is padded column `ox * stride + j`: phase
            // `j % stride`, at `ox + j / stride`.
            out_row.fill(floor);
            for j in 0..self.kernel[1] {
                let column = &phases[(j % stride) * self.phase_len + j / stride..][..self.out_w];
                for (o, &v) in out_row.iter_mut().zip(column) {
                    max(o, v);
                }
            }
        }
    }
}

/// Max pooling of `[n, c, h, w]` f32 (channels first, dilation 1) by tract's [`PoolSpec`]: the op
/// [`NAME`] puts in the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaxPool2d {
    spec: PoolSpec,
    /// Pools from zero: the pool of a ReLU's output, the ReLU folded in ([`rewrite_max_pool`]).
    relu: bool,
}

impl Op for MaxPool2d {
    fn name(&self) -> StaticName {
        "MaxPool2d".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let mut info = self.spec.info();
        if self.relu {
            info.push("of the ReLU before it, folded in".into());
        }
        Ok(info)
    }

    op_as_typed_op!();
}

impl EvalOp for MaxPool2d {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let &[n, c, h, w] = input.shape() else { bail!("MaxPool2d wants [n, c, h, w], got {:?}", input.shape()) };
        let g = Windows::new(&self.spec, h, w);
        let mut output = Tensor::zero::<f32>(&[n, c, g.out_h, g.out_w])?;
        if output.len() == 0 {
            return Ok(tvec!(output.into_tvalue()));
        }
        ensure!(h * w > 0, "MaxPool2d given empty planes of {h} x {w}");
        let x = input.try_as_plain_ram()?;
        let mut y = output.try_as_plain_ram_mut()?;
        let (x, y) = (x.as_slice::<f32>()?, y.as_slice_mut::<f32>()?);
        thread_local! {
            static ROWS: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
        }
        ROWS.with_borrow_mut(|(row, phases)| {
            row.clear();
            row.resize(g.row_len, f32::NEG_INFINITY);
            phases.clear();
            phases.resize(g.strides[1] * g.phase_len, f32::NEG_INFINITY);
            for (plane, out) in x.chunks_exact(h * w).zip(y.chunks_exact_mut(g.out_h * g.out_w)) {
                g.pool(plane, out, row, phases, if self.relu { 0.0 } else { f32::NEG_INFINITY });
            }
        });
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for MaxPool2d {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].rank() == 4 && inputs[0].datum_type == f32::datum_type());
        self.spec.output_facts(inputs)
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::cnn::PaddingSpec;

    fn spec(c: usize, k: [usize; 2], s: [usize; 2], padding: PaddingSpec) -> PoolSpec {
        PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec!(k[0], k[1]),
            padding,
            dilations: None,
            strides: Some(tvec!(s[0], s[1])),
            input_channels: c,
            output_channels: c,
        }
    }

    #[test]
    fn every_window_matches_tract_s_own_max_pool() {
        let mut next = crate::test_numbers(11);
        let pads = |t: usize, l: usize, b: usize, r: usize| PaddingSpec::Explicit(tvec!(t, l), tvec!(b, r));
        let onnx = |p: usize, ceil| PaddingSpec::ExplicitOnnxPool(tvec!(p, p), tvec!(p, p), ceil);
        // ResNet18's pool, windows that do not tile the plane, uneven and wide padding, ceiling
        // mode (windows past the padding), tract's SAME rule, windows wider than strides and
        // strides wider than windows, one-row planes, several images.
        let mut folded = 0;
        for (n, c, h, w, k, s, padding) in [
            (1, 4, 112, 112, [3, 3], [2, 2], pads(1, 1, 1, 1)),
            (1, 3, 13, 11, [3, 3], [2, 2], pads(1, 1, 1, 1)),
            (2, 2, 9, 10, [2, 2], [2, 2], PaddingSpec::Valid),
            (1, 3, 8, 7, [3, 2], [1, 3], pads(2, 0, 1, 1)),
            (1, 2, 10, 9, [3, 3], [2, 2], onnx(1, true)),
            (1, 2, 7, 8, [2, 3], [2, 2], onnx(0, true)),
            (1, 2, 9, 12, [3, 3], [2, 2], PaddingSpec::SameUpper),
            (1, 2, 6, 6, [5, 5], [1, 1], PaddingSpec::SameLower),
            (3, 1, 1, 9, [1, 3], [1, 2], onnx(0, false)),
            (1, 2, 5, 5, [1, 1], [3, 3], PaddingSpec::Valid),
        ] {
            let spec = spec(c, k, s, padding);
            let x: Vec<f32> = (0..n * c * h * w).map(|_| next()).collect();
            let input = || tvec!(Tensor::from_shape(&[n, c, h, w], &x).unwrap().into_tvalue());
            let ours = MaxPool2d { spec: spec.clone(), relu: false }.eval(&EvalContext::out_of_plan(), input()).unwrap().remove(0);
            let tracts = MaxPool { pool_spec: spec.clone(), with_index_outputs: None };
            let want = tracts.eval(&EvalContext::out_of_plan(), input()).unwrap().remove(0);
            let what = format!("{n}x{c}x{h}x{w}, {k:?} by {s:?}, {:?}", spec.padding);
            assert_eq!(ours.shape(), want.shape(), "{what}");
            let facts = MaxPool2d { spec: spec.clone(), relu: false }.output_facts(&[&f32::fact([n, c, h, w])]).unwrap();
            assert_eq!(facts[0].shape.as_concrete().unwrap(), want.shape(), "{what}");
            let (ours, want) = (ours.try_as_plain_ram().unwrap(), want.try_as_plain_ram().unwrap());
            assert_eq!(ours.as_slice::<f32>().unwrap(), want.as_slice::<f32>().unwrap(), "{what}");
            // The ReLU folded in, where the transform would fold it: tract's pool of the clamped
            // values.
            if Windows::new(&spec, h, w).every_window_meets_the_plane() {
                folded += 1;
                let clamped: Vec<f32> = x.iter().map(|v| v.max(0.0)).collect();
                let clamped = tvec!(Tensor::from_shape(&[n, c, h, w], &clamped).unwrap().into_tvalue());
                let want = tracts.eval(&EvalContext::out_of_plan(), clamped).unwrap().remove(0);
                let ours = MaxPool2d { spec, relu: true }.eval(&EvalContext::out_of_plan(), input()).unwrap().remove(0);
                let (ours, want) = (ours.try_as_plain_ram().unwrap(), want.try_as_plain_ram().unwrap());
                assert_eq!(ours.as_slice::<f32>().unwrap(), want.as_slice::<f32>().unwrap(), "{what}, ReLU folded");
            }
        }
        assert_eq!(folded, 10, "no window of these cases is padding alone");
    }

    #[test]
    fn a_window_of_padding_alone_is_told_apart() {
        // ResNet18's pool and padding narrower than the window, then windows of padding alone:
        // padding before the plane as wide as the window, and a last window that starts past it.
        let meet = |h: usize, w: usize, k: usize, s: usize, padding| Windows::new(&spec(1, [k, k], [s, s], padding), h, w).every_window_meets_the_plane();
        let pads = |b: usize, a: usize| PaddingSpec::Explicit(tvec!(b, b), tvec!(a, a));
        assert!(meet(112, 112, 3, 2, pads(1, 1)));
        assert!(meet(5, 5, 2, 2, pads(1, 1)));
        assert!(!meet(5, 5, 2, 2, pads(2, 0)));
        assert!(meet(5, 5, 2, 2, pads(0, 2)));
        assert!(!meet(4, 4, 2, 2, pads(0, 2)));
        assert!(!meet(5, 5, 1, 3, pads(0, 3)));
    }

    #[test]
    fn the_transform_takes_the_eligible_pools_only() {
        let pool = |padding, dilation: usize, index| MaxPool {
            pool_spec: PoolSpec { dilations: Some(tvec!(dilation, dilation)), ..spec(4, [3, 3], [2, 2], padding) },
            with_index_outputs: index,
        };
        let same = || PaddingSpec::SameUpper;
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, 4, 16, 16])).unwrap();
        let cases = [
            ("plain", pool(same(), 1, None), true),
            ("dilated", pool(same(), 2, None), false),
            ("with_indices", pool(same(), 1, Some(i64::datum_type())), false),
        ];
        let mut outputs = vec![];
        for (name, op, _) in &cases {
            outputs.extend(model.wire_node(*name, op.clone(), &[x]).unwrap());
        }
        model.select_output_outlets(&outputs).unwrap();
        MaxPoolTransform.transform(&mut model).unwrap();
        for (name, _, taken) in cases {
            let node = model.nodes().iter().find(|n| n.name == name).unwrap();
            assert_eq!(node.op_is::<MaxPool2d>(), taken, "{name}");
        }
    }

    #[test]
    fn the_transform_folds_a_relu_that_only_the_pool_reads() {
        use tract_onnx::tract_core::ops::math::max;
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, 4, 16, 16])).unwrap();
        let zero = model.add_const("zero", Tensor::zero::<f32>(&[1, 1, 1, 1]).unwrap()).unwrap();
        let pool = MaxPool { pool_spec: spec(4, [3, 3], [2, 2], PaddingSpec::Explicit(tvec!(1, 1), tvec!(1, 1))), with_index_outputs: None };
        let relu = model.wire_node("relu", max(), &[x, zero]).unwrap();
        let folded = model.wire_node("folded", pool.clone(), &relu).unwrap();
        let shared = model.wire_node("shared.relu", max(), &[x, zero]).unwrap();
        let left = model.wire_node("left", pool, &shared).unwrap();
        model.select_output_outlets(&[folded[0], left[0], shared[0]]).unwrap();
        let values: Vec<f32> = (0..4 * 16 * 16).map(|i| ((i * 37 % 101) as f32 - 85.0) / 7.0).collect();
        let run = |model: &TypedModel| {
            let input = Tensor::from_shape(&[1, 4, 16, 16], &values).unwrap();
            let out = model.clone().into_runnable().unwrap().run(tvec!(input.into_tvalue())).unwrap();
            out.iter().map(|t| t.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec()).collect::<Vec<_>>()
        };
        let want = run(&model);
        MaxPoolTransform.transform(&mut model).unwrap();
        let op = |name: &str| model.nodes().iter().find(|n| n.name == name).unwrap().op_as::<MaxPool2d>().unwrap().relu;
        assert!(op("folded") && !op("left"), "the ReLU read by the pool alone is folded in, the shared one is not");
        assert_eq!(model.nodes().iter().filter(|n| n.op().name() == "Max").count(), 1);
        assert_eq!(run(&model), want);
        assert!(want[0].contains(&0.0), "some windows are all negative: the fold is not a vacuous one");
    }
}
