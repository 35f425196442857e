//! A direct convolution for x86-64 with AVX2 and FMA (and AVX-512F where the
//! CPU has it), in place of tract's im2col and matrix product: 3x3 kernels,
//! and 7x7 ones (ResNet18's first convolution), at stride 1 or 2.
//!
//! tract runs every such convolution as a matrix product over gathered
//! patches (im2col): each input value is copied once per tap (nine times for
//! 3x3), lazily panel by panel or eagerly into a buffer, before the product
//! reads it. onnxruntime runs them without a gather, on its own blocked layout
//! (docs/TRACT.md, item 7). ResNet18's thirteen 3x3 convolutions of stride 1
//! are 83% of its multiply-adds, and the gathers and padding took 6-14 ms of
//! its 63-96 ms on a 2-core AMD EPYC (BENCHMARKS.md, "Engine levers").
//!
//! This computes them without a gather. Each input channel's plane is copied
//! once into a padded plane, split by the stride into phase planes
//! ([`Geometry`]: at stride 2, four planes of every other row and column).
//! Output `(y, x)` is position `q = y * phase_w + x` (the columns past the
//! output's width are computed and thrown away), and every tap reads the
//! channel's phase planes at `q` plus an offset that is the same for every
//! position. So sixteen consecutive positions are two vector loads per tap
//! and input channel, and a tile of six output channels by sixteen positions
//! keeps its twelve vectors of sums in registers over all `taps * c` terms,
//! with each weight broadcast once per tile (tiles of four channels take what
//! a multiple of six leaves). On a CPU with AVX-512F the same tile is two
//! vectors of sixteen, thirty-two positions ([`Isa`]): on an AVX-512 machine
//! tract's own products run sixteen lanes wide, and the eight-lane tile lost
//! to them (BENCHMARKS.md, "Engine levers").
//!
//! On AVX-512 a second tiling runs the vectors along the output channels
//! instead ([`Tiling::Channels`]): a tile of thirty-two output channels by
//! seven positions of one output row keeps its fourteen vectors of sums in
//! registers, loads two vectors of weights per tap and input channel, and
//! broadcasts each position's input value. It computes no thrown-away column,
//! which on small planes are many (ResNet18's layer4: rows of 9 for outputs of
//! 7), but it stores its sums one float at a time, so it takes the
//! convolutions of many terms per output value ([`MIN_TERMS`]): ResNet18's
//! sixteen 3x3 ones, 8-15% faster each than on the tiles along the positions
//! and layer4's a third faster than tract, on a Zen 5.
//!
//! Of those, the 3x3 ones of stride 1 (ResNet18's thirteen) run by Winograd's
//! F(2x2, 3x3) instead ([`Tiling::Winograd`], [`crate::winograd`]): each 2 x 2
//! block of outputs takes 16 multiply-adds per input channel where the
//! convolution takes 36, in sixteen matrix products whose tile is the one
//! along the channels with one tap; the transforms around them are additions.
//! On a Zen 4 that made those convolutions 23-39% faster each and ResNet18's
//! plan a fifth faster (BENCHMARKS.md, "Engine levers").
//!
//! The sums start at the bias and are fused multiply-adds, so they round once
//! per term:
//! `enclave/tests/plan.rs` checks the served plan against tract's default
//! plan on every model (every probability within 1e-5, the same top-5), and
//! `direct_conv::tests` checks the op against a term-by-term f64 sum.
//!
//! It is a tract model transform ([`NAME`], registered with tract's
//! re-export of `inventory` and run by name like tract's own), which
//! replaces each eligible `Conv` of a decluttered model by [`DirectConv`] and
//! leaves every other node alone. Eligible: f32, channels first, a kernel of
//! [`KERNELS`] of stride 1 or 2 (the same along both axes) and dilation 1,
//! explicit padding narrower than the kernel on each side, one group,
//! constant weights and bias, a known input shape whose output fills a tile,
//! output channels a multiple of 4 (of 32 along the channels), a CPU with AVX2
//! and FMA (elsewhere the transform changes nothing), and what was measured a
//! gain on the CPU's widest tiles ([`tiling`]): on AVX-512, along the channels
//! every such convolution of [`MIN_TERMS`] terms per output value or more, and
//! along the positions the others with at least [`MIN_OUTPUT`] values per
//! output channel (the stems of ResNet18 and EfficientNet-Lite0); on AVX2, the
//! 3x3 ones of stride 1 along the positions (strided ones on phase planes lost
//! to tract's im2col on a Zen 3, with the earlier tiles of four channels).
//!
//! The same transform folds the ReLU after such a convolution into it, and
//! the sum before that ReLU where its other term has the output's shape (a
//! residual block: `relu(conv(x) + r)`), when nothing else reads the
//! convolution's output or the sum ([`fold_relu`]): the op adds and clamps
//! while it copies its sums out, where tract would run one or two more passes
//! over the output (ResNet18's thirteen: 0.5 ms of 24-25 on a Zen 5,
//! BENCHMARKS.md, "Engine levers").
//!
//! Where the op after it reads channel-last data, the op writes its output
//! that way: tract's `conv_nhwc` moves the channel axis last before each
//! convolution it makes channel-last (EfficientNet-Lite0's first depthwise
//! one, after the stem), and tract's own axis pass, part of every plan's
//! declutter, offers that move to the op ([`DirectConv::change_axes`]). On
//! AVX-512 it takes it, with tiles along the channels, whose sums then leave
//! the tile by vectors, side by side as the output wants them; tract's pass
//! over the whole output is gone (EfficientNet-Lite0's stem and that move:
//! 0.95-1.20 ms before, 0.50-0.55 after, on a Zen 4).

#![deny(unsafe_op_in_unsafe_fn)]
#![allow(unsafe_code)] // reason: the tiles' raw-pointer loads and stores, bounds checked before each tile, and the calls of winograd.rs's AVX-512 functions

use std::cell::RefCell;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::math::Add;
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_core::transform::{ModelTransform, ModelTransformFactory};

use crate::winograd::{self, POINTS};

/// The transform's name, as [`crate::model::TRANSFORMS`] and `bench profile --transform` use it.
pub const NAME: &str = "enclave_direct_conv";

/// Output channels per tile (broadcast weights): twelve vectors of sums, so that the two FMA
/// units' four-cycle latency is hidden, and two vectors of input and one weight beside them,
/// fifteen of AVX2's sixteen registers.
const WIDE: usize = 6;
/// Output channels per tile where six do not divide what is left; the rewrite asks `o % 4 == 0`.
const NARROW: usize = 4;
/// Floats the last tile may read past the padded planes (for thrown-away columns).
const SLACK: usize = 8;
/// The kernels (rows, columns) the op runs, at stride 1 or 2.
const KERNELS: [[usize; 2]; 2] = [[3, 3], [7, 7]];
/// On AVX-512, output values per channel below which a convolution that does not run along the
/// channels is left to tract ([`tiling`]).
const MIN_OUTPUT: usize = 64;
/// On AVX-512, terms per output value (input channels times taps) from which a convolution runs
/// on tiles along the channels ([`tiling`]): such a tile stores its sums into a channels-first
/// output one float at a time, and below this that costs more than the tiles along the positions
/// lose to thrown-away columns (into a channel-last output it stores by vectors).
const MIN_TERMS: usize = 256;
/// Output channels per tile along the channels: two vectors of sixteen (Winograd's product tile's
/// too, [`winograd::product`]).
pub(crate) const CHANNEL_TILE: usize = 32;
/// Floats of transformed input and sums (Winograd's) up to which a block of rows of tiles grows,
/// 1 MiB, about a core's L2 cache: each block is transformed, multiplied and transformed back
/// before the next, its weights read again, unless they are larger than the whole image's.
const BLOCK: usize = 1 << 18;
/// Positions of one output row per tile along the channels: fourteen vectors of sums, two of
/// weights and one broadcast input value, seventeen of AVX-512's thirty-two registers. Seven
/// divides the rows of ResNet18's every plane (224 halved five times is 7).
const RUN: usize = 7;

/// How the op tiles a convolution of `kernel` and `stride` from `c` to `o` channels on `g`, on
/// the CPU's widest instruction set `isa`, where that was measured a gain over tract's im2col and
/// products and over the other tiling (BENCHMARKS.md, "Engine levers"); `None` leaves it to
/// tract. On AVX-512 (a Zen 5), every kernel of [`KERNELS`] at stride 1 or 2: where there are
/// [`MIN_TERMS`] terms per output value or more (ResNet18's sixteen 3x3 ones), by Winograd's
/// transform the 3x3 ones of stride 1 (ResNet18's thirteen: each 23-39% faster than along the
/// channels on a Zen 4) and along the channels the others, else along the positions where the
/// output has at least [`MIN_OUTPUT`] values per channel (the
/// stems of ResNet18 and EfficientNet-Lite0, 147 and 27 terms; on fewer values, tract's products
/// on its sixteen-lane kernels beat those tiles). On AVX2 (a Zen 3): 3x3 of stride 1 along the
/// positions, all that was measured a gain there (strided ones, on phase planes and tiles of four
/// channels, lost to tract then; the tiles of six were not tried on them there). An output that
/// tract's axis pass later makes channel-last goes along the channels on AVX-512, whatever its
/// terms ([`DirectConv::change_axes`]).
fn tiling(isa: Isa, kernel: [usize; 2], stride: usize, c: usize, o: usize, g: &Geometry) -> Option<Tiling> {
    let tiling = match isa {
        Isa::Avx512 if c * kernel[0] * kernel[1] >= MIN_TERMS && kernel == [3, 3] && stride == 1 && Tiling::Winograd.fits(o, g) => {
            Tiling::Winograd
        }
        Isa::Avx512 if c * kernel[0] * kernel[1] >= MIN_TERMS && Tiling::Channels.fits(o, g) => Tiling::Channels,
        Isa::Avx512 if g.out_h * g.out_w >= MIN_OUTPUT => Tiling::Positions,
        Isa::Avx2 if kernel == [3, 3] && stride == 1 => Tiling::Positions,
        _ => return None,
    };
    Some(tiling).filter(|t| t.fits(o, g))
}

/// Whether this machine runs the direct convolution (AVX2 and FMA).
pub fn available() -> bool {
    Isa::Avx2.available()
}

/// The instruction set of a tile: two vectors of sums per output channel. Its vector width
/// ([`Isa::lanes`]) is the one the tile's code and the loop over tiles both take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    /// AVX2 and FMA: vectors of 8 floats, 16 positions per tile.
    Avx2,
    /// AVX-512F: vectors of 16 floats, 32 positions per tile.
    Avx512,
}

impl Isa {
    /// The widest this machine has (given [`available`]).
    fn widest() -> Isa {
        if Isa::Avx512.available() {
            Isa::Avx512
        } else {
            Isa::Avx2
        }
    }

    /// Whether this CPU has the instructions of `self`'s tile. An AVX-512F machine runs planes
    /// under 32 positions on the AVX2 tile, so [`Isa::Avx512`] asks for AVX2 and FMA too.
    fn available(self) -> bool {
        match self {
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            Isa::Avx512 => Isa::Avx2.available() && is_x86_feature_detected!("avx512f"),
        }
    }

    /// Floats per vector.
    const fn lanes(self) -> usize {
        match self {
            Isa::Avx2 => 8,
            Isa::Avx512 => 16,
        }
    }

    /// Output positions per tile: two vectors.
    const fn positions(self) -> usize {
        2 * self.lanes()
    }
}

/// Which way a tile's vectors run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tiling {
    /// Along the positions: [`WIDE`] or [`NARROW`] output channels by [`Isa::positions`]
    /// positions (two vectors), each weight broadcast.
    Positions,
    /// Along the output channels, on AVX-512 alone: [`CHANNEL_TILE`] channels (two vectors) by
    /// [`RUN`] positions of one output row, each input value broadcast. A tile along the
    /// positions computes the thrown-away columns too, and on a small plane they are many (7 x 7
    /// outputs in rows of 9: 63 positions in two tiles of 32, for 49); this one computes the
    /// output alone.
    Channels,
    /// 3x3 of stride 1 on AVX-512 alone: Winograd's F(2x2, 3x3) ([`crate::winograd`]), whose
    /// sixteen products per point run on tiles of [`CHANNEL_TILE`] channels by seven or eight
    /// 2 x 2 blocks of outputs, 16 multiply-adds per input channel for 4 outputs instead of 36.
    Winograd,
}

impl Tiling {
    /// Whether `o` output channels and the output of `g` fill its tiles.
    fn fits(self, o: usize, g: &Geometry) -> bool {
        match self {
            Tiling::Positions => o.is_multiple_of(NARROW) && g.positions >= Isa::Avx2.positions(),
            Tiling::Channels => o.is_multiple_of(CHANNEL_TILE) && g.out_w >= RUN && Isa::Avx512.available(),
            Tiling::Winograd => o.is_multiple_of(CHANNEL_TILE) && Isa::Avx512.available(),
        }
    }
}

/// One line for the start-up log and `bench profile`.
pub fn describe() -> String {
    if available() {
        let what = match Isa::widest() {
            Isa::Avx512 => format!(
                "3x3 and 7x7 convolutions of stride 1 and 2 direct, without im2col, on AVX-512 (along the channels from {MIN_TERMS} terms per output or for a channel-last output)"
            ),
            Isa::Avx2 => "3x3 convolutions of stride 1 direct, without im2col, on AVX2".into(),
        };
        format!("{what} ({NAME})")
    } else {
        "3x3 convolutions on tract's im2col (no AVX2 and FMA here)".into()
    }
}

#[derive(Debug)]
struct DirectConvTransform;

impl ModelTransform for DirectConvTransform {
    fn name(&self) -> StaticName {
        NAME.into()
    }

    fn transform(&self, model: &mut TypedModel) -> TractResult<()> {
        if !available() {
            return Ok(());
        }
        Rewriter::<()>::default()
            .with_rule_for(NAME, rewrite_conv)
            .with_rule_for("enclave_direct_conv_relu", fold_relu)
            .rewrite(&(), model)
    }
}

inventory::submit! {
    ModelTransformFactory {
        name: NAME,
        build_default: || Ok(Box::new(DirectConvTransform)),
        build: |_| Ok(Box::new(DirectConvTransform)),
    }
}

fn rewrite_conv(_: &(), model: &TypedModel, node: &TypedNode, _name: &str, conv: &Conv) -> TractResult<Option<TypedModelPatch>> {
    let spec = &conv.pool_spec;
    rule_if!(conv.q_params.is_none() && conv.group == 1 && conv.kernel_fmt == KernelFormat::OIHW);
    rule_if!(spec.data_format == DataFormat::NCHW && spec.kernel_shape.len() == 2);
    let kernel = [spec.kernel_shape[0], spec.kernel_shape[1]];
    rule_if!(KERNELS.contains(&kernel));
    rule_if!(spec.dilations.as_ref().is_none_or(|d| d.iter().all(|&x| x == 1)));
    let stride = match spec.strides.as_deref() {
        None => 1,
        Some(&[a, b]) if a == b => a,
        _ => return Ok(None),
    };
    rule_if!(stride == 1 || stride == 2);
    let pads = match &spec.padding {
        PaddingSpec::Explicit(b, a) | PaddingSpec::ExplicitOnnxPool(b, a, false) if b.len() == 2 && a.len() == 2 => {
            [b[0], b[1], a[0], a[1]]
        }
        _ => return Ok(None),
    };
    rule_if!(pads[0] < kernel[0] && pads[2] < kernel[0] && pads[1] < kernel[1] && pads[3] < kernel[1]);
    rule_if!(node.inputs.len() == 3);
    let fact = model.outlet_fact(node.inputs[0])?;
    rule_if_some!(shape = fact.shape.as_concrete());
    rule_if!(fact.datum_type == f32::datum_type() && shape.len() == 4);
    let (c, o, h, w) = (shape[1], spec.output_channels, shape[2], shape[3]);
    rule_if!(c == spec.input_channels && c > 0);
    rule_if_some!(g = Geometry::new(h, w, kernel, stride, pads));
    rule_if_some!(tiling = tiling(Isa::widest(), kernel, stride, c, o, &g));
    rule_if_some!(weights = model.outlet_fact(node.inputs[1])?.konst.clone());
    rule_if_some!(bias = model.outlet_fact(node.inputs[2])?.konst.clone());
    rule_if!(weights.datum_type() == f32::datum_type() && weights.shape() == [o, c, kernel[0], kernel[1]]);
    rule_if!(bias.datum_type() == f32::datum_type() && (bias.len() == 1 || bias.len() == o));
    let (weights, bias) = (weights.try_as_plain_ram()?, bias.try_as_plain_ram()?);
    let op = DirectConv::new(c, o, kernel, stride, pads, tiling, weights.as_slice::<f32>()?, bias.as_slice::<f32>()?);
    Ok(Some(TypedModelPatch::replace_single_op(model, node, &node.inputs[..1], op)?))
}

/// A ReLU after a [`DirectConv`], `relu(conv(x))`, or after its sum with a tensor of its own
/// shape, `relu(conv(x) + r)` (a residual network's block), into the [`DirectConv`]: it adds `r`
/// and clamps in the copy out of its sums, where tract would run one or two passes of their own
/// over the output. Only where the convolution's output and the sum are read by nothing else.
fn fold_relu(_: &(), model: &TypedModel, node: &TypedNode, _name: &str, _: &TypedBinOp) -> TractResult<Option<TypedModelPatch>> {
    use crate::model::{read_only_by, relu_input};
    rule_if_some!(before = relu_input(model, node));
    let is_open_conv = |o: &OutletId, reader: usize| {
        model.node(o.node).op_as::<DirectConv>().is_some_and(|c| c.then == Then::Sums) && read_only_by(model, *o, reader)
    };
    let (conv, residual) = if is_open_conv(&before, node.id) {
        (before, None)
    } else {
        let add = model.node(before.node);
        rule_if!(add.op_as::<TypedBinOp>().is_some_and(|op| op.0.is::<Add>()) && add.inputs.len() == 2);
        rule_if!(read_only_by(model, before, node.id));
        rule_if_some!(i = (0..2).find(|&i| is_open_conv(&add.inputs[i], add.id)));
        let (conv, residual) = (add.inputs[i], add.inputs[1 - i]);
        let (c, r) = (model.outlet_fact(conv)?, model.outlet_fact(residual)?);
        rule_if!(r.datum_type == f32::datum_type() && r.shape == c.shape && add.outputs[0].fact.shape == c.shape);
        (conv, Some(residual))
    };
    let conv_node = model.node(conv.node);
    rule_if_some!(op = conv_node.op_as::<DirectConv>());
    let then = if residual.is_some() { Then::AddRelu } else { Then::Relu };
    let op = DirectConv { then, ..op.clone() };
    let mut patch = TypedModelPatch::default();
    let inputs = patch.taps(model, std::iter::once(&conv_node.inputs[0]).chain(&residual))?;
    let fused = patch.wire_node(&conv_node.name, op, &inputs)?;
    patch.shunt_outside(model, node.id.into(), fused[0])?;
    Ok(Some(patch))
}

/// Where one image's padded planes sit in the scratch buffer.
///
/// Each input channel's plane, padded (`pads`: top, left, bottom, right), is `padded_h` rows of
/// `padded_w`, split by the stride `s` into `s * s` phase planes of `phase_h` rows of `phase_w`:
/// phase `(py, px)` holds the padded plane's `(s * r + py, s * x + px)` at `(r, x)` (one phase,
/// the padded plane itself, at stride 1). Output `(y, x)` is position `q = y * phase_w + x` (the
/// columns from `out_w` on are computed and thrown away). Its tap `(ky, kx)` reads the padded
/// plane at `(s * y + ky, s * x + kx)`, which is phase `(ky % s, kx % s)` at
/// `(y + ky / s, x + kx / s)`: `q` plus an offset in the channel's phase planes that is the same
/// for every position.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Geometry {
    h: usize,
    w: usize,
    stride: usize,
    pad_top: usize,
    pad_left: usize,
    phase_h: usize,
    phase_w: usize,
    out_h: usize,
    out_w: usize,
    /// Output positions per output channel, the thrown-away columns of each row included.
    positions: usize,
    /// Per tap `(ky, kx)`, row-major, the offset of what it reads from the position, in its
    /// channel's phase planes.
    taps: Vec<usize>,
    /// The largest of `taps`.
    furthest_tap: usize,
}

impl Geometry {
    /// `None` when the padded plane is smaller than the kernel.
    fn new(h: usize, w: usize, kernel: [usize; 2], stride: usize, pads: [usize; 4]) -> Option<Geometry> {
        let (padded_h, padded_w) = (h + pads[0] + pads[2], w + pads[1] + pads[3]);
        if padded_h < kernel[0] || padded_w < kernel[1] || stride == 0 {
            return None;
        }
        let s = stride;
        let (out_h, out_w) = ((padded_h - kernel[0]) / s + 1, (padded_w - kernel[1]) / s + 1);
        let (phase_h, phase_w) = (padded_h.div_ceil(s), padded_w.div_ceil(s));
        let phase = |ky: usize, kx: usize| ((ky % s) * s + kx % s) * phase_h * phase_w;
        let taps: Vec<usize> = (0..kernel[0] * kernel[1])
            .map(|t| (t / kernel[1], t % kernel[1]))
            .map(|(ky, kx)| phase(ky, kx) + (ky / s) * phase_w + kx / s)
            .collect();
        let furthest_tap = taps.iter().copied().max()?;
        let (pad_top, pad_left, positions) = (pads[0], pads[1], out_h * phase_w);
        Some(Geometry { h, w, stride, pad_top, pad_left, phase_h, phase_w, out_h, out_w, positions, taps, furthest_tap })
    }

    /// Floats per input channel: its phase planes.
    fn channel_len(&self) -> usize {
        self.stride * self.stride * self.phase_h * self.phase_w
    }

    /// Channel `ci` of `input` (`[c][h][w]`) into its phase planes, `planes` (`channel_len`).
    fn fill(&self, input: &[f32], ci: usize, planes: &mut [f32]) {
        let s = self.stride;
        let phase_len = self.phase_h * self.phase_w;
        for (phase, plane) in planes.chunks_exact_mut(phase_len).enumerate() {
            let (py, px) = (phase / s, phase % s);
            // Column `x` of the phase is padded column `s * x + px`, input column
            // `s * x + px - pad_left`: an input column for `x` in `first .. last`.
            let first = self.pad_left.saturating_sub(px).div_ceil(s);
            let last = (self.pad_left + self.w).saturating_sub(px).div_ceil(s).clamp(first, self.phase_w);
            for (r, row) in plane.chunks_exact_mut(self.phase_w).enumerate() {
                // Phase row `r` is padded row `s * r + py`, input row `s * r + py - pad_top`.
                match (s * r + py).checked_sub(self.pad_top).filter(|&y| y < self.h) {
                    Some(y) => {
                        row[..first].fill(0.0);
                        if first < last {
                            let from = &input[(ci * self.h + y) * self.w..][..self.w][s * first + px - self.pad_left..];
                            if s == 1 {
                                row[first..last].copy_from_slice(&from[..last - first]);
                            } else {
                                row[first..last].iter_mut().zip(from.iter().step_by(s)).for_each(|(v, &x)| *v = x);
                            }
                        }
                        row[last..].fill(0.0);
                    }
                    None => row.fill(0.0),
                }
            }
        }
    }
}

/// A convolution from `c` to `o` channels, on `[n, c, h, w]` f32 input (channels first): the op
/// [`NAME`] puts in the plan.
#[derive(Debug, Clone)]
pub struct DirectConv {
    c: usize,
    o: usize,
    /// Rows, columns.
    kernel: [usize; 2],
    /// The same along both axes.
    stride: usize,
    /// Top, left, bottom, right.
    pads: [usize; 4],
    tiling: Tiling,
    /// The tiles of output channels: first channel and width ([`WIDE`] or [`NARROW`] along the
    /// positions, [`CHANNEL_TILE`] along the channels), in order.
    tiles: Vec<(usize, usize)>,
    /// Weights by tile of output channels, then input channel, tap, output channel: for the tile
    /// at `first` of `width` channels, `[c][taps][width]` from `first * c * taps`, the order the
    /// tile reads them (`taps`: the kernel's rows times its columns).
    weights: Arc<Vec<f32>>,
    bias: Arc<Vec<f32>>,
    then: Then,
    /// The output channel-last, `[n, out_h, out_w, o]`, where the op after it reads that layout
    /// (tract's `conv_nhwc` puts a move of the channel axis before such a reader, which tract's
    /// axis pass then folds into this op: [`DirectConv::change_axes`]); else `[n, o, out_h, out_w]`.
    /// On tiles along the channels alone, whose sums are then stored by vectors.
    channel_last: bool,
}

/// A tile: [`DirectConv`]'s output channels `first ..` (the tile's width) at positions `q0 ..`
/// (its instruction set's [`Isa::positions`], or [`RUN`] along the channels) into `sums`, from
/// the phase planes `padded` of [`Geometry`]. Unsafe: the CPU must have the tile's instructions.
type Tile = unsafe fn(&DirectConv, &[f32], &mut [f32], usize, usize, &Geometry);

/// What [`DirectConv`] does with its sums on their way out: the ReLU after it, and the sum
/// before that ReLU, folded in ([`fold_relu`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// The sums as they are: the convolution alone.
    Sums,
    /// Negative sums to zero.
    Relu,
    /// A second input, the residual, of the output's shape, added; then negative sums to zero.
    AddRelu,
}

impl Then {
    /// The op's inputs: the image, and the residual for [`Then::AddRelu`].
    fn inputs(self) -> usize {
        1 + (self == Then::AddRelu) as usize
    }

    /// One output from its sum `s` and its residual `r` (given for [`Then::AddRelu`]). A select
    /// rather than `f32::max` for the ReLU: the same answer here, NaN included, in one instruction.
    fn apply(self, s: f32, r: Option<f32>) -> f32 {
        let relu = |v: f32| if v > 0.0 { v } else { 0.0 };
        match (self, r) {
            (Then::Relu, _) => relu(s),
            (Then::AddRelu, Some(r)) => relu(s + r),
            _ => s,
        }
    }

    /// [`Then::apply`] over a row of sums into `out`, the residual's row beside it.
    fn copy_out(self, sums: &[f32], residual: Option<&[f32]>, out: &mut [f32]) {
        match (self, residual) {
            (Then::Relu, _) => out.iter_mut().zip(sums).for_each(|(v, &s)| *v = self.apply(s, None)),
            (Then::AddRelu, Some(r)) => out.iter_mut().zip(sums).zip(r).for_each(|((v, &s), &r)| *v = self.apply(s, Some(r))),
            _ => out.copy_from_slice(sums),
        }
    }
}

/// The tile, once per instruction set `$isa`: its vector `$v` of [`Isa::lanes`] floats, and its
/// broadcast, unaligned load, fused multiply-add and unaligned store. Two vectors of sums per
/// output channel, [`Isa::positions`] positions.
macro_rules! tile {
    ($(#[$doc:meta])* $name:ident, $isa:expr, $feature:literal, $v:ident, $set1:ident, $load:ident, $fma:ident, $store:ident) => {
        $(#[$doc])*
        #[target_feature(enable = $feature)]
        unsafe fn $name<const OC: usize, const TAPS: usize>(&self, padded: &[f32], sums: &mut [f32], first: usize, q0: usize, g: &Geometry) {
            use std::arch::x86_64::*;
            const LANES: usize = $isa.lanes();
            const Q: usize = $isa.positions();
            // The taps as an array: a loop of a known length, which the compiler unrolls.
            let taps: &[usize; TAPS] = g.taps.as_slice().try_into().expect("a tile for the kernel's taps");
            let terms = self.c * TAPS;
            assert!((self.c - 1) * g.channel_len() + g.furthest_tap + q0 + Q <= padded.len());
            assert!((first + OC) * terms <= self.weights.len() && q0 + Q <= g.positions);
            assert!((first + OC - 1) * g.positions + q0 + Q <= sums.len());
            // SAFETY: the asserts above bound every pointer below: channel `ci < c`, a tap's
            // offset at most `furthest_tap`, `Q` floats from `q0`; `OC * terms` weights from the
            // tile's first, `first * terms`; the stores to rows `first .. first + OC` of `sums`,
            // `Q` floats from `q0`. Loads and stores are unaligned ones.
            unsafe {
                let mut acc: [[$v; 2]; OC] = [[$set1(0.0); 2]; OC];
                for (j, a) in acc.iter_mut().enumerate() {
                    let b = $set1(self.bias[first + j]);
                    *a = [b, b];
                }
                let mut weight = self.weights.as_ptr().add(first * terms);
                for ci in 0..self.c {
                    let base = padded.as_ptr().add(ci * g.channel_len() + q0);
                    for &off in taps {
                        let x0 = $load(base.add(off));
                        let x1 = $load(base.add(off + LANES));
                        for a in acc.iter_mut() {
                            let wv = $set1(*weight);
                            a[0] = $fma(wv, x0, a[0]);
                            a[1] = $fma(wv, x1, a[1]);
                            weight = weight.add(1);
                        }
                    }
                }
                for (j, a) in acc.iter().enumerate() {
                    let row = sums.as_mut_ptr().add((first + j) * g.positions + q0);
                    $store(row, a[0]);
                    $store(row.add(LANES), a[1]);
                }
            }
        }
    };
}

impl DirectConv {
    /// From weights `[o][c][kernel[0]][kernel[1]]` and a bias of `o` values (or one for all).
    #[allow(clippy::too_many_arguments)] // reason: the convolution's every parameter, each named at the call
    fn new(
        c: usize,
        o: usize,
        kernel: [usize; 2],
        stride: usize,
        pads: [usize; 4],
        tiling: Tiling,
        weights: &[f32],
        bias: &[f32],
    ) -> DirectConv {
        let terms = c * kernel[0] * kernel[1];
        assert!(stride > 0 && KERNELS.contains(&kernel));
        assert!(weights.len() == o * terms && (bias.len() == 1 || bias.len() == o));
        let widths: Vec<usize> = match tiling {
            Tiling::Positions => {
                assert!(o.is_multiple_of(NARROW));
                // Six wide, and what that leaves (4, or 8 = 6 + 2) four wide.
                let narrow = match o % WIDE {
                    0 => 0,
                    4 => 1,
                    _ => 2,
                };
                let wide = (o - narrow * NARROW) / WIDE;
                std::iter::repeat_n(WIDE, wide).chain(std::iter::repeat_n(NARROW, narrow)).collect()
            }
            Tiling::Channels | Tiling::Winograd => {
                assert!(o.is_multiple_of(CHANNEL_TILE));
                assert!(tiling != Tiling::Winograd || (kernel == [3, 3] && stride == 1), "Winograd's F(2x2, 3x3) is 3x3 of stride 1");
                vec![CHANNEL_TILE; o / CHANNEL_TILE]
            }
        };
        let tiles: Vec<(usize, usize)> = widths
            .into_iter()
            .scan(0, |first, width| {
                *first += width;
                Some((*first - width, width))
            })
            .collect();
        let mut packed = Vec::with_capacity(weights.len());
        if tiling == Tiling::Winograd {
            // Per point of the transform, tile of channels and input channel, the tile's
            // transformed weights: `[POINTS][o / CHANNEL_TILE][c][CHANNEL_TILE]`.
            let mut u = vec![0.0; POINTS * o * c];
            for (pair, g) in weights.chunks_exact(9).enumerate() {
                winograd::transform_weights(g).into_iter().enumerate().for_each(|(point, v)| u[point * o * c + pair] = v);
            }
            for u in u.chunks_exact(o * c) {
                for &(first, width) in &tiles {
                    for ci in 0..c {
                        packed.extend((first..first + width).map(|oc| u[oc * c + ci]));
                    }
                }
            }
        } else {
            for &(first, width) in &tiles {
                for term in 0..terms {
                    packed.extend((first..first + width).map(|oc| weights[oc * terms + term]));
                }
            }
        }
        let bias = (0..o).map(|i| bias[if bias.len() == 1 { 0 } else { i }]).collect();
        DirectConv { c, o, kernel, stride, pads, tiling, tiles, weights: Arc::new(packed), bias: Arc::new(bias), then: Then::Sums, channel_last: false }
    }

    /// The weights as [`DirectConv::new`] takes them, `[o][c][kernel[0]][kernel[1]]` (not on
    /// [`Tiling::Winograd`], which keeps them transformed alone).
    fn weights_oihw(&self) -> Vec<f32> {
        assert!(self.tiling != Tiling::Winograd, "Winograd's weights are kept transformed");
        let terms = self.c * self.kernel[0] * self.kernel[1];
        let mut weights = vec![0.0; self.o * terms];
        let mut packed = self.weights.iter();
        for &(first, width) in &self.tiles {
            for term in 0..terms {
                (first..first + width).zip(&mut packed).for_each(|(oc, &v)| weights[oc * terms + term] = v);
            }
        }
        weights
    }

    /// The output's shape for `n` images on `g`, in the op's layout.
    fn output_shape<D: From<usize>>(&self, n: D, g: &Geometry) -> [D; 4] {
        let (o, h, w) = (self.o.into(), g.out_h.into(), g.out_w.into());
        if self.channel_last { [n, h, w, o] } else { [n, o, h, w] }
    }

    /// Where an image of `h` x `w` sits in the scratch buffer, if its output fills a tile.
    fn geometry(&self, h: usize, w: usize) -> Option<Geometry> {
        Geometry::new(h, w, self.kernel, self.stride, self.pads).filter(|g| self.tiling.fits(self.o, g))
    }

    /// One image: `input` `[c][h][w]`, `output` (and `residual`, given one) `[o][out_h][out_w]`
    /// of `g` (`[out_h][out_w][o]` channel-last), on the widest tiles this machine has and the
    /// output fills.
    fn run(&self, g: &Geometry, input: &[f32], residual: Option<&[f32]>, output: &mut [f32]) {
        let isa = match (self.tiling, Isa::widest()) {
            (Tiling::Channels | Tiling::Winograd, _) => Isa::Avx512,
            (Tiling::Positions, Isa::Avx512) if g.positions >= Isa::Avx512.positions() => Isa::Avx512,
            _ => Isa::Avx2,
        };
        self.run_on(isa, g, input, residual, output)
    }

    /// [`DirectConv::run`] on tiles of `isa`.
    fn run_on(&self, isa: Isa, g: &Geometry, input: &[f32], residual: Option<&[f32]>, output: &mut [f32]) {
        assert!(isa.available() && self.tiling.fits(self.o, g));
        if self.tiling == Tiling::Winograd {
            assert!(isa == Isa::Avx512);
            return self.run_winograd(g, input, residual, output);
        }
        // Where each tile starts: along the positions, every `q`-th; along the channels, every
        // `RUN`-th of each output row. The last one (of each row) starts early enough to end at
        // the last position (it recomputes a few, storing the same sums).
        let starts: Vec<usize> = match self.tiling {
            Tiling::Positions => {
                let q = isa.positions();
                assert!(g.positions >= q);
                (0..g.positions.div_ceil(q)).map(|t| (t * q).min(g.positions - q)).collect()
            }
            Tiling::Winograd => unreachable!("run_winograd, above"),
            Tiling::Channels => {
                assert!(isa == Isa::Avx512);
                let row = move |y: usize| (0..g.out_w.div_ceil(RUN)).map(move |t| y * g.phase_w + (t * RUN).min(g.out_w - RUN));
                (0..g.out_h).flat_map(row).collect()
            }
        };
        assert!(input.len() == self.c * g.h * g.w && output.len() == self.o * g.out_h * g.out_w);
        assert!(residual.is_some() == (self.then == Then::AddRelu) && residual.is_none_or(|r| r.len() == output.len()));
        assert!(!self.channel_last || self.tiling == Tiling::Channels, "channel-last sums come from tiles along the channels");
        thread_local! {
            static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
        }
        SCRATCH.with_borrow_mut(|(padded, sums)| {
            padded.resize(self.c * g.channel_len() + SLACK, 0.0);
            for (ci, plane) in padded.chunks_exact_mut(g.channel_len()).enumerate() {
                g.fill(input, ci, plane);
            }
            sums.resize(self.o * g.positions, 0.0);
            // The larger operand is read once: weights larger than the planes go outside.
            let weights_outside = self.weights.len() > padded.len();
            let (outer, inner) = if weights_outside { (self.tiles.len(), starts.len()) } else { (starts.len(), self.tiles.len()) };
            for a in 0..outer {
                for b in 0..inner {
                    let (tile, t) = if weights_outside { (a, b) } else { (b, a) };
                    let (first, width) = self.tiles[tile];
                    let tile = self.tile_for(isa, width);
                    // SAFETY: `tile` is a tile of `isa` (`tile_for`), and `isa.available()` was
                    // asserted above.
                    unsafe { tile(self, padded, sums, first, starts[t], g) }
                }
            }
            // Each row of sums, its thrown-away columns left behind, and what follows the sums.
            if self.channel_last {
                // The sums of position `q` side by side, as in the output (tiles along the
                // channels only, asserted above); the residual has the output's layout too.
                for y in 0..g.out_h {
                    for x in 0..g.out_w {
                        let (q, i) = (y * g.phase_w + x, (y * g.out_w + x) * self.o);
                        let r = residual.map(|r| &r[i..][..self.o]);
                        self.then.copy_out(&sums[q * self.o..][..self.o], r, &mut output[i..][..self.o]);
                    }
                }
                return;
            }
            for (oc, out) in output.chunks_exact_mut(g.out_h * g.out_w).enumerate() {
                for (y, row) in out.chunks_exact_mut(g.out_w).enumerate() {
                    let r = residual.map(|r| &r[(oc * g.out_h + y) * g.out_w..][..g.out_w]);
                    self.then.copy_out(&sums[oc * g.positions + y * g.phase_w..][..g.out_w], r, row);
                }
            }
        })
    }

    /// [`DirectConv::run`] by Winograd's F(2x2, 3x3) ([`crate::winograd`]): the 2 x 2 blocks
    /// of outputs (tiles) by blocks of rows of them, each block's input transformed, its
    /// sixteen products taken, and its outputs transformed back and copied out, the way the
    /// other tilings copy their sums.
    fn run_winograd(&self, g: &Geometry, input: &[f32], residual: Option<&[f32]>, output: &mut [f32]) {
        let (c, o) = (self.c, self.o);
        let (th, tw) = (g.out_h.div_ceil(2), g.out_w.div_ceil(2));
        // The padded plane to an even output's, split into its phases at stride 2: each tile's
        // columns are then two contiguous rows of each phase ([`winograd::transform_input`]).
        let p = self.pads;
        let pads = [p[0], p[1], p[2] + 2 * th - g.out_h, p[3] + 2 * tw - g.out_w];
        let phases = Geometry::new(g.h, g.w, [3, 3], 2, pads).expect("a padded plane of 3 x 3 and more");
        let (len, phase_len) = (phases.channel_len(), phases.phase_h * phases.phase_w);
        assert!(input.len() == c * g.h * g.w && output.len() == o * g.out_h * g.out_w);
        assert!(residual.is_some() == (self.then == Then::AddRelu) && residual.is_none_or(|r| r.len() == output.len()));
        // Rows of tiles per block: all of them where the weights are the larger operand (read once).
        let per_row = tw * POINTS * (c + o);
        let block = if self.weights.len() >= th * per_row { th } else { (BLOCK / per_row).clamp(1, th) };
        thread_local! {
            static SCRATCH: RefCell<[Vec<f32>; 4]> = const { RefCell::new([Vec::new(), Vec::new(), Vec::new(), Vec::new()]) };
        }
        SCRATCH.with_borrow_mut(|[planes, v, m, y]| {
            planes.resize(c * len, 0.0);
            for (ci, plane) in planes.chunks_exact_mut(len).enumerate() {
                phases.fill(input, ci, plane);
            }
            let plane = g.out_h * g.out_w;
            for ty0 in (0..th).step_by(block) {
                let rows = block.min(th - ty0);
                let tiles = rows * tw;
                // Runs of eight tiles, or of seven where that leaves fewer tiles computed for nothing.
                let run = if tiles.div_ceil(8) * 8 <= tiles.div_ceil(RUN) * RUN { 8 } else { RUN };
                let padded = tiles.div_ceil(run) * run;
                v.resize(POINTS * c * padded + 8 * (tw + 1), 0.0);
                let (v, scratch) = v.split_at_mut(POINTS * c * padded);
                for (ci, plane) in planes.chunks_exact(len).enumerate() {
                    for r in 0..rows {
                        // SAFETY: this CPU has AVX-512F (`run_on` asserts it).
                        unsafe { winograd::transform_input(plane, phases.phase_w, phase_len, ty0 + r, tw, scratch, v, c * padded, ci * padded + r * tw) };
                    }
                }
                m.resize(POINTS * padded * o, 0.0);
                for (point, (v, m)) in v.chunks_exact(c * padded).zip(m.chunks_exact_mut(padded * o)).enumerate() {
                    for &(first, _) in &self.tiles {
                        let u = &self.weights[(point * o + first) * c..][..CHANNEL_TILE * c];
                        for t0 in (0..padded).step_by(run) {
                            // SAFETY: as above; `product` checks its bounds.
                            unsafe {
                                match run {
                                    8 => winograd::product::<8>(u, v, padded, t0, m, o, first),
                                    _ => winograd::product::<RUN>(u, v, padded, t0, m, o, first),
                                }
                            }
                        }
                    }
                }
                y.resize(4 * o, 0.0);
                for t in 0..tiles {
                    // SAFETY: as above.
                    unsafe { winograd::transform_output(m, padded * o, t, o, &self.bias, y) };
                    let (ty, tx) = (ty0 + t / tw, t % tw);
                    for (d, sums) in y.chunks_exact(o).enumerate() {
                        let (row, col) = (2 * ty + d / 2, 2 * tx + d % 2);
                        if row >= g.out_h || col >= g.out_w {
                            continue;
                        }
                        let at = row * g.out_w + col;
                        if self.channel_last {
                            let r = residual.map(|r| &r[at * o..][..o]);
                            self.then.copy_out(sums, r, &mut output[at * o..][..o]);
                        } else {
                            // One value into each channel's plane.
                            let out = output[at..].iter_mut().step_by(plane).zip(sums);
                            match residual {
                                Some(r) => out.zip(r[at..].iter().step_by(plane)).for_each(|((v, &s), &r)| *v = self.then.apply(s, Some(r))),
                                None => out.for_each(|(v, &s)| *v = self.then.apply(s, None)),
                            }
                        }
                    }
                }
            }
        })
    }

    /// The tile of `width` output channels on `isa` (along the channels, AVX-512's, which
    /// [`DirectConv::run_on`] asserts), for the kernel's taps (one of [`KERNELS`], which
    /// [`DirectConv::new`] asserts).
    fn tile_for(&self, isa: Isa, width: usize) -> Tile {
        match (self.tiling, isa, width == WIDE, self.kernel[0] * self.kernel[1]) {
            (Tiling::Channels, _, _, 9) => Self::tile_channels::<9>,
            (Tiling::Channels, _, _, 49) => Self::tile_channels::<49>,
            (Tiling::Positions, Isa::Avx2, true, 9) => Self::tile_avx2::<WIDE, 9>,
            (Tiling::Positions, Isa::Avx2, false, 9) => Self::tile_avx2::<NARROW, 9>,
            (Tiling::Positions, Isa::Avx512, true, 9) => Self::tile_avx512::<WIDE, 9>,
            (Tiling::Positions, Isa::Avx512, false, 9) => Self::tile_avx512::<NARROW, 9>,
            (Tiling::Positions, Isa::Avx2, true, 49) => Self::tile_avx2::<WIDE, 49>,
            (Tiling::Positions, Isa::Avx2, false, 49) => Self::tile_avx2::<NARROW, 49>,
            (Tiling::Positions, Isa::Avx512, true, 49) => Self::tile_avx512::<WIDE, 49>,
            (Tiling::Positions, Isa::Avx512, false, 49) => Self::tile_avx512::<NARROW, 49>,
            (_, _, _, taps) => panic!("no tile for kernels of {taps} taps"),
        }
    }

    /// Output channels `first .. first + CHANNEL_TILE` at the [`RUN`] positions `q0 ..` of one
    /// output row, into `sums[oc][q]` ([`Tiling::Channels`]): per input channel and tap, two
    /// vectors of weights, and each position's input value broadcast.
    ///
    /// # Safety
    /// The CPU has AVX-512F. Every other bound is checked here, before the loads.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile_channels<const TAPS: usize>(&self, padded: &[f32], sums: &mut [f32], first: usize, q0: usize, g: &Geometry) {
        use std::arch::x86_64::*;
        const LANES: usize = Isa::Avx512.lanes();
        let taps: &[usize; TAPS] = g.taps.as_slice().try_into().expect("a tile for the kernel's taps");
        let terms = self.c * TAPS;
        assert!((self.c - 1) * g.channel_len() + g.furthest_tap + q0 + RUN <= padded.len());
        assert!((first + CHANNEL_TILE) * terms <= self.weights.len() && first + CHANNEL_TILE <= self.bias.len());
        // Per position, its sums along the channels.
        let mut out = [[0.0f32; CHANNEL_TILE]; RUN];
        // SAFETY: the asserts above bound every pointer below: channel `ci < c`, a tap's offset at
        // most `furthest_tap`, `RUN` floats from `q0`; `CHANNEL_TILE * terms` weights from the
        // tile's first, `first * terms`; `CHANNEL_TILE` biases from `first`; the stores to `out`'s
        // rows of `CHANNEL_TILE`. Loads and stores are unaligned ones.
        unsafe {
            let bias = self.bias.as_ptr().add(first);
            let mut acc = [[_mm512_loadu_ps(bias), _mm512_loadu_ps(bias.add(LANES))]; RUN];
            let mut weight = self.weights.as_ptr().add(first * terms);
            for ci in 0..self.c {
                let base = padded.as_ptr().add(ci * g.channel_len() + q0);
                for &off in taps {
                    let w = [_mm512_loadu_ps(weight), _mm512_loadu_ps(weight.add(LANES))];
                    weight = weight.add(CHANNEL_TILE);
                    for (p, a) in acc.iter_mut().enumerate() {
                        let x = _mm512_set1_ps(*base.add(off + p));
                        a[0] = _mm512_fmadd_ps(w[0], x, a[0]);
                        a[1] = _mm512_fmadd_ps(w[1], x, a[1]);
                    }
                }
            }
            for (a, row) in acc.iter().zip(out.iter_mut()) {
                _mm512_storeu_ps(row.as_mut_ptr(), a[0]);
                _mm512_storeu_ps(row.as_mut_ptr().add(LANES), a[1]);
            }
        }
        // Each position's sums to their places: side by side where the sums are kept
        // channel-last, else one into each channel's row.
        for (p, row) in out.iter().enumerate() {
            if self.channel_last {
                sums[(q0 + p) * self.o + first..][..CHANNEL_TILE].copy_from_slice(row);
            } else {
                for (j, &v) in row.iter().enumerate() {
                    sums[(first + j) * g.positions + q0 + p] = v;
                }
            }
        }
    }

    tile!(
        /// Output channels `first .. first + OC` at positions `q0 .. q0 + 16`, into `sums[oc][q]`.
        ///
        /// # Safety
        /// The CPU has AVX2 and FMA. Every other bound is checked here, before the loads.
        tile_avx2, Isa::Avx2, "avx2,fma", __m256, _mm256_set1_ps, _mm256_loadu_ps, _mm256_fmadd_ps, _mm256_storeu_ps
    );
    tile!(
        /// Output channels `first .. first + OC` at positions `q0 .. q0 + 32`, into `sums[oc][q]`.
        ///
        /// # Safety
        /// The CPU has AVX-512F. Every other bound is checked here, before the loads.
        tile_avx512, Isa::Avx512, "avx512f", __m512, _mm512_set1_ps, _mm512_loadu_ps, _mm512_fmadd_ps, _mm512_storeu_ps
    );
}

impl PartialEq for DirectConv {
    fn eq(&self, other: &Self) -> bool {
        (self.c, self.o, self.kernel, self.stride, self.pads) == (other.c, other.o, other.kernel, other.stride, other.pads)
            && self.tiling == other.tiling
            && self.tiles == other.tiles
            && Arc::ptr_eq(&self.weights, &other.weights)
            && Arc::ptr_eq(&self.bias, &other.bias)
            && self.then == other.then
            && self.channel_last == other.channel_last
    }
}

impl Eq for DirectConv {}

impl Op for DirectConv {
    fn name(&self) -> StaticName {
        "DirectConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let p = self.pads;
        // The widest tile, and the narrower one where a plane's output is too small for it.
        let tiles = match (self.tiling, Isa::widest()) {
            (Tiling::Channels, _) => {
                format!("tiles of {CHANNEL_TILE} channels x {RUN} positions of a row")
            }
            (Tiling::Winograd, _) => {
                format!("Winograd F(2x2, 3x3), products on tiles of {CHANNEL_TILE} channels x {RUN} or 8 blocks of 2 x 2")
            }
            (Tiling::Positions, Isa::Avx512) => {
                format!(
                    "tiles of {WIDE} and {NARROW} channels x {} positions ({} under {0})",
                    Isa::Avx512.positions(),
                    Isa::Avx2.positions()
                )
            }
            (Tiling::Positions, Isa::Avx2) => format!("tiles of {WIDE} and {NARROW} channels x {} positions", Isa::Avx2.positions()),
        };
        let then = match self.then {
            Then::Sums => "",
            Then::Relu => ", then ReLU",
            Then::AddRelu => ", then + residual and ReLU",
        };
        let layout = if self.channel_last { ", out channel-last" } else { "" };
        Ok(vec![format!(
            "{} -> {} channels, {}x{}, stride {}, padding {p:?}, {tiles}{then}{layout}",
            self.c, self.o, self.kernel[0], self.kernel[1], self.stride
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for DirectConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == self.then.inputs(), "DirectConv given {} inputs", inputs.len());
        let input = &inputs[0];
        let &[n, c, h, w] = input.shape() else { bail!("DirectConv wants [n, c, h, w], got {:?}", input.shape()) };
        ensure!(c == self.c, "DirectConv of {} channels given {c}", self.c);
        let Some(g) = self.geometry(h, w) else { bail!("DirectConv given planes of {h} x {w}, under a tile") };
        let mut output = Tensor::zero::<f32>(&self.output_shape(n, &g))?;
        if let Some(r) = inputs.get(1) {
            ensure!(r.shape() == output.shape(), "DirectConv's residual is {:?}, its output {:?}", r.shape(), output.shape());
        }
        let x = input.try_as_plain_ram()?;
        let r = inputs.get(1).map(|r| r.try_as_plain_ram()).transpose()?;
        let r = r.as_ref().map(|r| r.as_slice::<f32>()).transpose()?;
        let mut y = output.try_as_plain_ram_mut()?;
        let (x, y) = (x.as_slice::<f32>()?, y.as_slice_mut::<f32>()?);
        let image = self.o * g.out_h * g.out_w;
        for (i, (xi, yi)) in x.chunks_exact(c * h * w).zip(y.chunks_exact_mut(image)).enumerate() {
            self.run(&g, xi, r.map(|r| &r[i * image..][..image]), yi);
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for DirectConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = &inputs[0].shape;
        ensure!(shape.rank() == 4 && shape[1] == self.c.to_dim());
        let (h, w) = (shape[2].to_usize()?, shape[3].to_usize()?);
        let Some(g) = self.geometry(h, w) else { bail!("DirectConv given planes of {h} x {w}, under a tile") };
        let output = f32::fact(self.output_shape(shape[0].clone(), &g));
        ensure!(inputs.len() == self.then.inputs());
        if let Some(r) = inputs.get(1) {
            ensure!(r.datum_type == f32::datum_type() && r.shape == output.shape, "DirectConv's residual is {r:?}, its output {output:?}");
        }
        Ok(tvec!(output))
    }

    /// A move of the output's channel axis last (`conv_nhwc`'s, before a channel-last reader)
    /// becomes the op's own layout: tract's axis pass then drops the move. Nothing else is taken.
    fn change_axes(&self, model: &TypedModel, node: &TypedNode, io: InOut, change: &AxisOp) -> TractResult<Option<AxisChangeConsequence>> {
        rule_if!(io == InOut::Out(0) && *change == AxisOp::Move(1, 3));
        rule_if!(!self.channel_last && self.then != Then::AddRelu);
        let op = if self.tiling == Tiling::Winograd {
            // Its outputs leave the transform by vectors along the channels already.
            DirectConv { channel_last: true, ..self.clone() }
        } else {
            // Re-tiled along the channels, where the output fills those tiles.
            rule_if_some!(shape = model.outlet_fact(node.inputs[0])?.shape.as_concrete());
            rule_if_some!(g = Geometry::new(shape[2], shape[3], self.kernel, self.stride, self.pads));
            rule_if!(Tiling::Channels.fits(self.o, &g));
            let (kernel, weights) = (self.kernel, self.weights_oihw());
            let op = DirectConv::new(self.c, self.o, kernel, self.stride, self.pads, Tiling::Channels, &weights, &self.bias);
            DirectConv { then: self.then, channel_last: true, ..op }
        };
        Ok(Some(AxisChangeConsequence { substitute_op: Some(Box::new(op)), wire_changes: tvec!((io, change.clone())) }))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let outputs = self.output_facts(inputs)?;
        let terms = self.c * self.kernel[0] * self.kernel[1];
        Ok(tvec!((Cost::FMA(f32::datum_type()), outputs[0].shape.iter().product::<TDim>() * terms)))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_numbers;

    /// A convolution's channels in and out, kernel, stride and padding.
    type Shape = (usize, usize, [usize; 2], usize, [usize; 4]);

    /// The output's rows and columns, by ONNX's arithmetic.
    fn out_size(conv: Shape, h: usize, w: usize) -> (usize, usize) {
        let (_, _, k, s, p) = conv;
        ((h + p[0] + p[2] - k[0]) / s + 1, (w + p[1] + p[3] - k[1]) / s + 1)
    }

    /// The convolution, term by term, in f64.
    fn reference(conv: Shape, h: usize, w: usize, x: &[f32], wt: &[f32], b: &[f32]) -> Vec<f32> {
        let (c, o, k, s, p) = conv;
        let (out_h, out_w) = out_size(conv, h, w);
        let mut out = vec![0.0; o * out_h * out_w];
        for oc in 0..o {
            for y in 0..out_h {
                for xx in 0..out_w {
                    let mut sum = b[oc] as f64;
                    for ci in 0..c {
                        for ky in 0..k[0] {
                            for kx in 0..k[1] {
                                let (iy, ix) = ((s * y + ky).wrapping_sub(p[0]), (s * xx + kx).wrapping_sub(p[1]));
                                if iy < h && ix < w {
                                    sum += x[(ci * h + iy) * w + ix] as f64 * wt[((oc * c + ci) * k[0] + ky) * k[1] + kx] as f64;
                                }
                            }
                        }
                    }
                    out[(oc * out_h + y) * out_w + xx] = sum as f32;
                }
            }
        }
        out
    }

    /// A constant of `shape` in `model`: `value` everywhere, or numbers from `next`.
    fn constant(model: &mut TypedModel, name: &str, shape: &[usize], value: Option<f32>, next: &mut impl FnMut() -> f32) -> OutletId {
        let values: Vec<f32> = (0..shape.iter().product()).map(|_| value.unwrap_or_else(&mut *next)).collect();
        model.add_const(name, Tensor::from_shape(shape, &values).unwrap()).unwrap()
    }

    /// tract's `Conv`, 3x3 of stride 1 and padding 1, from `input`'s channels to `o`, weights and bias
    /// from `next`, on `input` in `model`.
    fn conv_3x3(model: &mut TypedModel, name: &str, input: OutletId, o: usize, next: &mut impl FnMut() -> f32) -> OutletId {
        use tract_onnx::tract_core::ops::cnn::PoolSpec;
        let c = model.outlet_fact(input).unwrap().shape[1].to_usize().unwrap();
        let op = Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec!(3, 3),
                padding: PaddingSpec::Explicit(tvec!(1, 1), tvec!(1, 1)),
                dilations: None,
                strides: None,
                input_channels: c,
                output_channels: o,
            },
            kernel_fmt: KernelFormat::OIHW,
            group: 1,
            q_params: None,
        };
        let wt = constant(model, &format!("{name}.k"), &[o, c, 3, 3], None, next);
        let b = constant(model, &format!("{name}.b"), &[o], None, next);
        model.wire_node(name, op, &[input, wt, b]).unwrap()[0]
    }

    /// `model` run on `values`, its outputs.
    fn run_model(model: &TypedModel, shape: &[usize], values: &[f32]) -> Vec<Vec<f32>> {
        let input = Tensor::from_shape(shape, values).unwrap();
        let out = model.clone().into_runnable().unwrap().run(tvec!(input.into_tvalue())).unwrap();
        out.iter().map(|t| t.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec()).collect()
    }

    /// Each output of `got` within 1e-5 (relative) of `want`'s.
    fn assert_close(got: &[Vec<f32>], want: &[Vec<f32>]) {
        assert_eq!(got.len(), want.len());
        for (output, (got, want)) in got.iter().zip(want).enumerate() {
            for (j, (g, w)) in got.iter().zip(want).enumerate() {
                assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "output {output} value {j}: {g} against {w}");
            }
        }
    }

    #[test]
    fn every_shape_matches_the_term_by_term_sum() {
        if !available() {
            eprintln!("no AVX2 and FMA here: nothing to check");
            return;
        }
        let mut next = test_numbers(7);
        // On an AVX-512 machine, the AVX2 tiles too (below).
        // 3x3 of stride 1: ResNet18's four plane sizes, paddings of 0 and 2 and uneven ones,
        // planes of odd sides, planes narrower than a tile's row, one just large enough for a
        // tile, odd channel counts, output channels that make every mix of tiles (4 and 8: narrow
        // ones only; 12 and 24: wide ones only; 16 and 20: both), several images. Then stride 2
        // and 7x7: ResNet18's stem and EfficientNet-Lite0's (padding after only) on smaller
        // planes, planes of odd and even sides, uneven padding, padding as wide as all but one of
        // the kernel's columns, and 7x7 of stride 1. Then output channels in tiles of 32 along the
        // channels (where this CPU has AVX-512): ResNet18's layer4 on fewer channels, rows of
        // outputs that seven divides and ones it does not (the last run of a row starting early),
        // stride 2, 7x7 and uneven padding; the earlier cases of 32 and 64 output channels too.
        // Those of 3x3 and stride 1 by Winograd's transform too, odd outputs among them, and the
        // last in blocks of rows of tiles (BLOCK), runs of seven with tiles computed for nothing.
        let (one, three, seven) = ([1; 4], [3, 3], [7, 7]);
        for (n, (c, o, k, s, p), h, w) in [
            (1, (3, 4, three, 1, one), 56, 56),
            (1, (5, 8, three, 1, one), 28, 28),
            (1, (16, 12, three, 1, one), 14, 14),
            (1, (6, 20, three, 1, one), 9, 11),
            (1, (3, 24, three, 1, [1, 0, 1, 0]), 8, 18),
            (1, (9, 16, three, 1, one), 7, 7),
            (1, (7, 4, three, 1, one), 13, 9),
            (1, (4, 4, three, 1, [2, 0, 1, 2]), 11, 10),
            (1, (4, 8, three, 1, [0, 0, 1, 1]), 17, 20),
            (2, (3, 4, three, 1, one), 4, 2),
            (1, (1, 4, three, 1, one), 2, 6),
            (3, (2, 8, three, 1, [0; 4]), 6, 9),
            (1, (3, 64, seven, 2, [3; 4]), 30, 30),
            (1, (3, 32, three, 2, [0, 0, 1, 1]), 23, 23),
            (1, (5, 12, three, 2, one), 14, 14),
            (1, (4, 8, three, 2, one), 15, 9),
            (1, (6, 20, three, 2, [2; 4]), 10, 13),
            (2, (2, 4, seven, 2, [3, 1, 2, 0]), 19, 17),
            (1, (3, 4, seven, 2, [6, 6, 6, 6]), 8, 9),
            (1, (2, 8, seven, 1, [3; 4]), 9, 9),
            (1, (16, 32, three, 1, one), 7, 7),
            (1, (8, 64, three, 1, one), 9, 13),
            (2, (5, 32, three, 2, one), 14, 14),
            (1, (2, 32, seven, 1, [3; 4]), 8, 10),
            (1, (3, 32, three, 1, [0, 2, 1, 0]), 6, 16),
            (1, (32, 32, three, 1, one), 50, 50),
        ] {
            let conv = (c, o, k, s, p);
            let x: Vec<f32> = (0..n * c * h * w).map(|_| next()).collect();
            let wt: Vec<f32> = (0..o * c * k[0] * k[1]).map(|_| next()).collect();
            let b: Vec<f32> = (0..o).map(|_| next()).collect();
            let geometry = Geometry::new(h, w, k, s, p).unwrap();
            let winograd = (k, s) == (three, 1);
            let tilings = [Tiling::Positions, Tiling::Channels, Tiling::Winograd].into_iter();
            let tilings = tilings.filter(|&t| t.fits(o, &geometry) && (t != Tiling::Winograd || winograd));
            let tilings: Vec<Tiling> = tilings.collect();
            assert!(tilings.contains(&Tiling::Positions), "{conv:?}: every case runs along the positions");
            for tiling in tilings {
                let op = DirectConv::new(c, o, k, s, p, tiling, &wt, &b);
                let input = Tensor::from_shape(&[n, c, h, w], &x).unwrap();
                let out = op.eval(&EvalContext::out_of_plan(), tvec!(input.clone().into_tvalue())).unwrap().remove(0);
                let (out_h, out_w) = out_size(conv, h, w);
                assert_eq!(out.shape(), [n, o, out_h, out_w]);
                let got = out.try_as_plain_ram().unwrap();
                let got = got.as_slice::<f32>().unwrap();
                let len = o * out_h * out_w;
                for i in 0..n {
                    let image = &x[i * c * h * w..][..c * h * w];
                    let want = reference(conv, h, w, image, &wt, &b);
                    let close = |got: &[f32], isa: &str| {
                        for (j, (g, r)) in got.iter().zip(&want).enumerate() {
                            let what = format!("{n}x{c}->{o} {k:?}/{s} {p:?} {h}x{w} {tiling:?}, {isa}: image {i} value {j}");
                            assert!((g - r).abs() <= 1e-5 * (1.0 + r.abs()), "{what}: {g} against {r}");
                        }
                    };
                    close(&got[i * len..][..len], "the widest tiles");
                    // Along the positions, each instruction set's tiles where this CPU has it and the
                    // output fills one.
                    for isa in [Isa::Avx2, Isa::Avx512] {
                        if tiling == Tiling::Positions && isa.available() && geometry.positions >= isa.positions() {
                            let mut y = vec![f32::NAN; len];
                            op.run_on(isa, &geometry, image, None, &mut y);
                            close(&y, &format!("{isa:?}"));
                        }
                    }
                }
                // The folded ReLU, alone and after a residual: the same sums, then + r, then clamped.
                let r: Vec<f32> = (0..n * len).map(|_| next()).collect();
                for residual in [false, true] {
                    let fused = DirectConv { then: if residual { Then::AddRelu } else { Then::Relu }, ..op.clone() };
                    let mut inputs = tvec!(input.clone().into_tvalue());
                    if residual {
                        inputs.push(Tensor::from_shape(&[n, o, out_h, out_w], &r).unwrap().into_tvalue());
                    }
                    let out = fused.eval(&EvalContext::out_of_plan(), inputs).unwrap().remove(0);
                    let out = out.try_as_plain_ram().unwrap();
                    for (j, (f, plain)) in out.as_slice::<f32>().unwrap().iter().zip(got).enumerate() {
                        let want = (plain + if residual { r[j] } else { 0.0 }).max(0.0);
                        assert!(
                            *f == want,
                            "{n}x{c}->{o} {k:?}/{s} {p:?} {h}x{w} {tiling:?}, residual {residual}: value {j} is {f}, not {want}"
                        );
                    }
                    // A residual of another shape is refused.
                    if residual {
                        let wrong = Tensor::zero::<f32>(&[n, o, out_h, out_w + 1]).unwrap().into_tvalue();
                        assert!(fused.eval(&EvalContext::out_of_plan(), tvec!(input.clone().into_tvalue(), wrong)).is_err());
                    }
                }
                // Channel-last (along the channels): the same values, each position's channels side
                // by side, after each fold (the residual in that layout too).
                let plane = out_h * out_w;
                let moved = |v: &[f32]| -> Vec<f32> {
                    (0..n * len).map(|j| v[j / len * len + j % len % o * plane + j % len / o]).collect()
                };
                if tiling != Tiling::Winograd {
                    assert_eq!(op.weights_oihw(), wt, "the weights unpacked as given");
                }
                for then in [Then::Sums, Then::Relu, Then::AddRelu].into_iter().filter(|_| tiling != Tiling::Positions) {
                    let (first, last) = (DirectConv { then, ..op.clone() }, DirectConv { then, channel_last: true, ..op.clone() });
                    let (mut inputs, mut moved_inputs) = (tvec!(input.clone().into_tvalue()), tvec!(input.clone().into_tvalue()));
                    if then == Then::AddRelu {
                        inputs.push(Tensor::from_shape(&[n, o, out_h, out_w], &r).unwrap().into_tvalue());
                        moved_inputs.push(Tensor::from_shape(&[n, out_h, out_w, o], &moved(&r)).unwrap().into_tvalue());
                    }
                    let want = first.eval(&EvalContext::out_of_plan(), inputs).unwrap().remove(0);
                    let got = last.eval(&EvalContext::out_of_plan(), moved_inputs).unwrap().remove(0);
                    assert_eq!(got.shape(), [n, out_h, out_w, o]);
                    let facts = [f32::fact([n, c, h, w]), f32::fact([n, out_h, out_w, o])];
                    let facts: Vec<&TypedFact> = facts.iter().take(then.inputs()).collect();
                    let fact = last.output_facts(&facts).unwrap().remove(0);
                    assert_eq!(fact.shape.as_concrete(), Some(&[n, out_h, out_w, o][..]));
                    let want = moved(want.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap());
                    let got = got.try_as_plain_ram().unwrap();
                    assert!(got.as_slice::<f32>().unwrap() == want, "{n}x{c}->{o} {k:?}/{s} {p:?} {h}x{w} {tiling:?} {then:?}, channel-last");
                }
            }
        }
        // Planes too small for a tile, or for the kernel, are refused, not run.
        let small = |h, w| tvec!(Tensor::zero::<f32>(&[1, 1, h, w]).unwrap().into_tvalue());
        let positions = Tiling::Positions;
        let op = DirectConv::new(1, 4, three, 1, one, positions, &[0.0; 36], &[0.0; 4]);
        assert!(op.eval(&EvalContext::out_of_plan(), small(2, 2)).is_err());
        let op = DirectConv::new(1, 4, three, 1, [0; 4], positions, &[0.0; 36], &[0.0; 4]);
        assert!(op.eval(&EvalContext::out_of_plan(), small(2, 40)).is_err());
        let op = DirectConv::new(1, 4, seven, 2, [0; 4], positions, &[0.0; 196], &[0.0; 4]);
        assert!(op.eval(&EvalContext::out_of_plan(), small(6, 80)).is_err());
        // Along the channels, rows of outputs shorter than a run (and anything on a CPU without
        // AVX-512).
        let op = DirectConv::new(1, 32, three, 1, one, Tiling::Channels, &[0.0; 288], &[0.0; 32]);
        assert!(op.eval(&EvalContext::out_of_plan(), small(40, 6)).is_err());
        // One bias for all channels.
        let op = DirectConv::new(1, 4, three, 1, one, positions, &[0.0; 36], &[0.5]);
        let out = op.eval(&EvalContext::out_of_plan(), tvec!(Tensor::from_shape(&[1, 1, 4, 4], &[1.0f32; 16]).unwrap().into_tvalue()));
        let out = out.unwrap().remove(0);
        assert!(out.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().iter().all(|&v| v == 0.5));
    }

    #[test]
    fn the_transform_takes_the_eligible_convolutions_only() {
        if !available() {
            return;
        }
        use tract_onnx::tract_core::ops::cnn::PoolSpec;
        let conv = |k: usize, stride: usize, c: usize, o: usize, pad: usize, dilation: usize| Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec!(k, k),
                padding: PaddingSpec::Explicit(tvec!(pad, pad), tvec!(pad, pad)),
                dilations: Some(tvec!(dilation, dilation)),
                strides: Some(tvec!(stride, stride)),
                input_channels: c,
                output_channels: o,
            },
            kernel_fmt: KernelFormat::OIHW,
            group: 1,
            q_params: None,
        };
        let mut model = TypedModel::default();
        let wide = model.add_source("wide", f32::fact([1, 16, 16, 16])).unwrap();
        let narrow = model.add_source("narrow", f32::fact([1, 3, 16, 16])).unwrap();
        let small = model.add_source("small", f32::fact([1, 8, 7, 7])).unwrap();
        let deep = model.add_source("deep", f32::fact([1, 32, 7, 7])).unwrap();
        let mut outputs = vec![];
        // Outputs of 16 x 16 and 8 x 8 values per channel (MIN_OUTPUT), and from `small` 7 x 7
        // (ResNet18's layer4) and 4 x 4, and from `deep` 7 x 7 and 4 x 4 on 288 terms (MIN_TERMS).
        // Strided and 7x7 ones where this CPU has AVX-512 only, small outputs where it has not,
        // unless along the channels.
        let avx512 = Isa::widest() == Isa::Avx512;
        let cases = [
            ("three", conv(3, 1, 16, 4, 1, 1), true),
            ("strided", conv(3, 2, 16, 4, 1, 1), avx512),
            ("three_channels", conv(3, 1, 3, 4, 1, 1), true),
            ("seven", conv(7, 2, 3, 8, 3, 1), avx512),
            ("seven_stride_one", conv(7, 1, 16, 8, 3, 1), avx512),
            ("small_output", conv(3, 2, 8, 8, 1, 1), false),
            ("small_output_stride_one", conv(3, 1, 8, 8, 1, 1), !avx512),
            ("along_the_channels", conv(3, 1, 32, 32, 1, 1), true),
            ("along_the_channels_strided", conv(3, 2, 32, 64, 1, 1), false),
            ("few_terms", conv(3, 1, 8, 32, 1, 1), !avx512),
            ("deep_and_narrow", conv(3, 1, 32, 8, 1, 1), !avx512),
            ("five", conv(5, 1, 16, 4, 2, 1), false),
            ("pointwise", conv(1, 1, 16, 4, 0, 1), false),
            ("pointwise_strided", conv(1, 2, 16, 4, 0, 1), false),
            ("six_outputs", conv(3, 1, 16, 6, 1, 1), false),
            ("stride_three", conv(3, 3, 16, 4, 1, 1), false),
            ("padding_of_the_kernel", conv(3, 1, 16, 4, 3, 1), false),
            ("dilated", conv(3, 1, 16, 4, 2, 2), false),
        ];
        for (name, op, _) in &cases {
            let (k, c, o) = (op.pool_spec.kernel_shape[0], op.pool_spec.input_channels, op.pool_spec.output_channels);
            let wt = model.add_const(format!("{name}.k"), Tensor::zero::<f32>(&[o, c, k, k]).unwrap()).unwrap();
            let b = model.add_const(format!("{name}.b"), Tensor::zero::<f32>(&[o]).unwrap()).unwrap();
            let x = match c {
                3 => narrow,
                8 => small,
                32 => deep,
                _ => wide,
            };
            outputs.push(model.wire_node(*name, op.clone(), &[x, wt, b]).unwrap()[0]);
        }
        model.select_output_outlets(&outputs).unwrap();
        DirectConvTransform.transform(&mut model).unwrap();
        for (name, _, taken) in cases {
            let node = model.nodes().iter().find(|n| n.name == name).unwrap();
            assert_eq!(node.op().name() == "DirectConv", taken, "{name}: {}", node.op().name());
            // On AVX-512 where there are MIN_TERMS terms, by Winograd's transform (3x3 of stride 1),
            // else along the positions.
            if let Some(op) = node.op_as::<DirectConv>() {
                let winograd = avx512 && name == "along_the_channels";
                assert_eq!(op.tiling, if winograd { Tiling::Winograd } else { Tiling::Positions }, "{name}");
            }
        }
    }

    #[test]
    fn the_transform_folds_a_relu_where_nothing_else_reads_what_it_clamps() {
        if !available() {
            return;
        }
        use tract_onnx::tract_core::ops::math::{add, max};
        let mut next = test_numbers(5);
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, 8, 12, 12])).unwrap();
        let zero = constant(&mut model, "zero", &[1, 1, 1, 1], Some(0.0), &mut next);
        let half = constant(&mut model, "half", &[1, 1, 1, 1], Some(0.5), &mut next);
        let per_channel = constant(&mut model, "per_channel", &[1, 8, 1, 1], None, &mut next);
        let mut conv = |model: &mut TypedModel, name: &str, input: OutletId| conv_3x3(model, name, input, 8, &mut next);
        let wire = |model: &mut TypedModel, name: &str, op: TypedBinOp, inputs: [OutletId; 2]| model.wire_node(name, op, &inputs).unwrap()[0];
        // Folded: relu(conv), and relu(conv + r) with `r` of the output's shape.
        let a = conv(&mut model, "a", x);
        let a = wire(&mut model, "a.relu", max(), [a, zero]);
        let b = conv(&mut model, "b", a);
        let b = wire(&mut model, "b.add", add(), [x, b]);
        let b = wire(&mut model, "b.relu", max(), [zero, b]);
        // Left alone: a maximum with 0.5, a convolution that is an output too, and a sum that
        // broadcasts.
        let c = conv(&mut model, "c", b);
        let c = wire(&mut model, "c.max", max(), [c, half]);
        let d = conv(&mut model, "d", b);
        let d_relu = wire(&mut model, "d.relu", max(), [d, zero]);
        let e = conv(&mut model, "e", b);
        let e = wire(&mut model, "e.add", add(), [e, per_channel]);
        let e = wire(&mut model, "e.relu", max(), [e, zero]);
        model.select_output_outlets(&[c, d, d_relu, e]).unwrap();

        let mut value = test_numbers(6);
        let values: Vec<f32> = (0..8 * 12 * 12).map(|_| 4.0 * value()).collect();
        let want = run_model(&model, &[1, 8, 12, 12], &values);
        DirectConvTransform.transform(&mut model).unwrap();
        let info = |name: &str| {
            let node = model.nodes().iter().find(|n| n.name == name).unwrap();
            assert_eq!(node.op().name(), "DirectConv", "{name}");
            node.op().info().unwrap()[0].clone()
        };
        assert!(info("a").ends_with(", then ReLU"), "{}", info("a"));
        assert!(info("b").ends_with(", then + residual and ReLU"), "{}", info("b"));
        for name in ["c", "d", "e"] {
            assert!(!info(name).contains("then"), "{name}: {}", info(name));
        }
        let ops = |name: &str| model.nodes().iter().filter(|n| n.op().name() == name).count();
        assert_eq!((ops("Max"), ops("Add")), (3, 1), "the three maxima and the sum left alone, no other");
        // Not a vacuous check: a ReLU's output holds zeros and values above.
        assert!(want[2].contains(&0.0) && want[2].iter().any(|&v| v > 0.0));
        assert_close(&run_model(&model, &[1, 8, 12, 12], &values), &want);
    }

    #[test]
    fn a_move_of_the_channel_axis_last_becomes_the_op_s_layout() {
        if !available() {
            return;
        }
        use tract_onnx::tract_core::ops::math::{add, max, min};
        let mut next = test_numbers(11);
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, 8, 12, 12])).unwrap();
        let zero = constant(&mut model, "zero", &[1, 1, 1, 1], Some(0.0), &mut next);
        let cap = constant(&mut model, "cap", &[1, 1, 1, 1], Some(0.3), &mut next);
        let mut conv = |model: &mut TypedModel, name: &str, input: OutletId, o: usize| conv_3x3(model, name, input, o, &mut next);
        let wire = |model: &mut TypedModel, name: &str, op: TypedBinOp, inputs: [OutletId; 2]| model.wire_node(name, op, &inputs).unwrap()[0];
        let last = |model: &mut TypedModel, name: &str, input: OutletId| model.wire_node(name, AxisOp::Move(1, 3), &[input]).unwrap()[0];
        // Taken (where the tiles along the channels run: AVX-512): EfficientNet-Lite0's stem,
        // min(relu(conv), cap), then moved channel-last.
        let a = conv(&mut model, "a", x, 32);
        let a = wire(&mut model, "a.relu", max(), [a, zero]);
        let a = wire(&mut model, "a.min", min(), [a, cap]);
        let a = last(&mut model, "a.last", a);
        // Taken too: a convolution on Winograd's transform (32 channels in, 288 terms).
        let c = conv(&mut model, "c.in", x, 32);
        let c = conv(&mut model, "c", c, 32);
        let c = wire(&mut model, "c.relu", max(), [c, zero]);
        let c = last(&mut model, "c.last", c);
        // Left alone: a residual block's (its residual would move too).
        let b = conv(&mut model, "b", x, 8);
        let b = wire(&mut model, "b.add", add(), [x, b]);
        let b = wire(&mut model, "b.relu", max(), [zero, b]);
        let b = last(&mut model, "b.last", b);
        model.select_output_outlets(&[a, b, c]).unwrap();

        let mut value = test_numbers(12);
        let values: Vec<f32> = (0..8 * 12 * 12).map(|_| 4.0 * value()).collect();
        let want = run_model(&model, &[1, 8, 12, 12], &values);
        DirectConvTransform.transform(&mut model).unwrap();
        // tract's own axis pass, part of its declutter (and so of every plan's optimisation).
        let model = model.into_decluttered().unwrap();
        let info = |name: &str| {
            let node = model.nodes().iter().find(|n| n.name == name).unwrap();
            assert_eq!(node.op().name(), "DirectConv", "{name}");
            node.op().info().unwrap()[0].clone()
        };
        let taken = Isa::Avx512.available();
        assert!(info("a").ends_with(if taken { ", then ReLU, out channel-last" } else { ", then ReLU" }), "{}", info("a"));
        assert!(info("b").ends_with(", then + residual and ReLU"), "{}", info("b"));
        let winograd = if taken { "Winograd F(2x2, 3x3)" } else { "" };
        assert!(info("c").contains(winograd) && info("c").ends_with(if taken { ", then ReLU, out channel-last" } else { ", then ReLU" }));
        let moves = model.nodes().iter().filter(|n| n.op().name() == "MoveAxis").count();
        assert_eq!(moves, if taken { 1 } else { 3 }, "b's move is left, and a's and c's without AVX-512");
        // Not a vacuous check: the clamp leaves zeros, the cap and values between.
        assert!(want[0].contains(&0.0) && want[0].contains(&0.3) && want[0].iter().any(|&v| v > 0.0 && v < 0.3));
        assert_close(&run_model(&model, &[1, 8, 12, 12], &values), &want);
    }
}
