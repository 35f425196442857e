//! Where tract's time goes: the served model's plan run on one preprocessed
//! photo, each node timed on its own, summed by operator and by node.
//! `--transform none` profiles tract's default plan instead (no transform, no
//! knob), `--transform NAME` that plan with tract's transform NAME, and
//! `--knob NAME=VALUE` that plan with tract's knob NAME set while it is built.
//!
//! The plan is the model server's own (`enclave::model::Model::load`: the
//! same optimisation and the same kernels); each run goes through tract's
//! `run_plan_with_eval` with tract's own `eval` wrapped in a clock, so what is
//! timed is exactly what `Model::scores` runs, node by node. One warm-up run
//! is not counted. Single-threaded, like one model-server worker.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use enclave::config::Config;
use enclave::model::Model;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::OpState;
use tract_onnx::tract_core::plan::{eval, EvalContext};

pub fn run(model_dir: &Path, image: &[u8], runs: u32, top: usize, transforms: &[&str], knobs: &[(&str, &str)]) -> Result<(), String> {
    let args = vec!["--model".to_string(), model_dir.display().to_string(), "--workers".into(), "1".into()];
    let cfg = Config::from_args(args).map_err(|e| format!("profile: {e}"))?;
    let model = Model::load(&cfg).map_err(|e| format!("profile: {e}"))?;
    let input = model.preprocess.prepare(image).map_err(|e| format!("profile: {e}"))?;
    let mut state = if transforms.is_empty() && knobs.is_empty() {
        model.new_state().map_err(|e| format!("profile: {e}"))?
    } else {
        // tract's default pipeline (declutter, optimise) with the named transforms, none for
        // `none`, applied to the decluttered model, and the knobs given, instead of the served
        // plan (`enclave::model::TRANSFORMS` and `enclave::model::IM2COL_KNOBS`).
        let bytes = std::fs::read(&cfg.model_path).map_err(|e| format!("profile: {e}"))?;
        let names: Vec<&str> = transforms.iter().copied().filter(|n| *n != "none").collect();
        let plan = enclave::model::plan(&bytes, cfg.preprocess.input_size as usize, &names, knobs).map_err(|e| format!("profile: {e}"))?;
        let knobs: Vec<String> = knobs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("profile: tract's default plan, transforms: {}; knobs: {}", names.join(", "), knobs.join(", "));
        enclave::model::WorkerState::new(&plan).map_err(|e| format!("profile: {e:#}"))?
    };

    // Per node id: (node name, operator name, operator details, time over the counted runs).
    let mut nodes: BTreeMap<usize, (String, String, String, Duration)> = BTreeMap::new();
    let mut whole = Duration::ZERO;
    for run in 0..=runs {
        let started = Instant::now();
        state
            .run_plan_with_eval(tvec!(input.clone().into()), |ctx: &EvalContext, op_state: Option<&mut (dyn OpState + 'static)>, node: &TypedNode, inputs: TVec<TValue>| {
                let t = Instant::now();
                let out = eval(ctx, op_state, node, inputs);
                if run > 0 {
                    let e = nodes.entry(node.id).or_insert_with(|| {
                        (node.name.clone(), node.op.name().to_string(), node.op.info().unwrap_or_default().join("; "), Duration::ZERO)
                    });
                    e.3 += t.elapsed();
                }
                out
            })
            .map_err(|e| format!("profile: {e:#}"))?;
        if run > 0 {
            whole += started.elapsed();
        }
    }
    let per_run = |d: Duration| d.as_secs_f64() * 1000.0 / f64::from(runs);
    let total: Duration = nodes.values().map(|n| n.3).sum();
    println!(
        "profile: {} nodes, {} runs on one thread: {:.2} ms per run ({:.2} ms inside the nodes)",
        nodes.len(),
        runs,
        per_run(whole),
        per_run(total)
    );
    for line in enclave::engine_kernels() {
        println!("profile: {line}");
    }

    let mut by_op: BTreeMap<&str, (usize, Duration)> = BTreeMap::new();
    for (_, op, _, d) in nodes.values() {
        let e = by_op.entry(op.as_str()).or_default();
        e.0 += 1;
        e.1 += *d;
    }
    let mut by_op: Vec<_> = by_op.into_iter().collect();
    by_op.sort_by(|a, b| b.1 .1.cmp(&a.1 .1));
    println!("\nby operator: ms per run, share, nodes");
    for (op, (count, d)) in by_op {
        println!("{:>9.3} ms {:>5.1}% {:>4}  {op}", per_run(d), d.as_secs_f64() / total.as_secs_f64() * 100.0, count);
    }

    let mut slowest: Vec<_> = nodes.values().collect();
    slowest.sort_by(|a, b| b.3.cmp(&a.3));
    println!("\nslowest {top} nodes: ms per run, share, operator, node, details");
    for (name, op, info, d) in slowest.into_iter().take(top) {
        println!("{:>9.3} ms {:>5.1}%  {op}  {name}  {info}", per_run(*d), d.as_secs_f64() / total.as_secs_f64() * 100.0);
    }
    Ok(())
}
