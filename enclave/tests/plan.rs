//! The served plan against tract's default plan: the model server runs the
//! 3x3 convolutions (and on AVX-512 the strided and 7x7 ones) directly, without
//! im2col, the max pools by rows, and the other convolutions channel-last (`enclave::model::TRANSFORMS`) and gathers
//! small im2col patches eagerly (`enclave::model::IM2COL_KNOBS`, which change
//! ResNet18's plan), a different set of kernels from the plan tract builds by
//! default. Both must give the same answers, to float rounding, on every model
//! we serve and every test photo: every class's probability within 1e-5 and
//! the same top-5.
//!
//! Needs `models/tiny-test`, `models/efficientnet-lite0`,
//! `models/resnet18-synthetic` and `testdata/` (`make test` prepares them); the
//! real ResNet18 is compared too when it is there (`make model MODEL=resnet18`).

use std::path::{Path, PathBuf};

use enclave::config::Config;
use enclave::model::{softmax, Model, CONV_TRANSFORM, IM2COL_KNOBS};
use tract_onnx::prelude::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Tract's default plan of the model (no transform, no knob), for `size` x `size` images.
fn default_plan(model_dir: &Path, size: usize) -> enclave::model::Plan {
    let bytes = std::fs::read(model_dir.join("model.onnx")).unwrap();
    enclave::model::plan(&bytes, size, &[], &[]).unwrap()
}

/// A plan's probabilities on one input.
fn plan_scores(plan: &enclave::model::Plan, input: Tensor) -> Vec<f32> {
    let out = plan.run(tvec!(input.into())).unwrap();
    softmax(out[0].to_plain_array_view::<f32>().unwrap().iter().copied())
}

fn top5(scores: &[f32]) -> Vec<u32> {
    enclave::model::top_k(scores, 5).iter().map(|c| c.class_id).collect()
}

fn compare(name: &str) -> usize {
    let dir = root().join("models").join(name);
    let cfg = Config::from_args(vec!["--model".into(), dir.display().to_string(), "--workers".into(), "1".into()]).unwrap();
    let model = Model::load(&cfg).unwrap();
    let mut state = model.new_state().unwrap();
    let tract_default = default_plan(&dir, cfg.preprocess.input_size as usize);
    let mut photos: Vec<PathBuf> = std::fs::read_dir(root().join("testdata"))
        .expect("testdata/ is missing: run `make testdata` (make test does it)")
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("jpg" | "png")))
        .collect();
    photos.sort();
    assert!(photos.len() >= 5, "expected the test photos in testdata/, found {photos:?}");
    for photo in &photos {
        let input = model.preprocess.prepare(&std::fs::read(photo).unwrap()).unwrap();
        let served = model.scores(&mut state, input.clone()).unwrap();
        let default = plan_scores(&tract_default, input);
        let worst = served.iter().zip(&default).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-5, "{name}, {}: a probability differs by {worst}", photo.display());
        assert_eq!(top5(&served), top5(&default), "{name}, {}: top-5 differs", photo.display());
    }
    photos.len()
}

#[test]
fn the_served_plan_answers_as_tract_s_default_plan_on_every_model() {
    assert_eq!(CONV_TRANSFORM, "conv_nhwc");
    for name in ["tiny-test", "efficientnet-lite0", "resnet18-synthetic"] {
        assert!(root().join("models").join(name).exists(), "models/{name} is missing: run `make model MODEL={name}`");
        compare(name);
    }
    for name in ["resnet18"] {
        if root().join("models").join(name).exists() {
            compare(name);
        } else {
            eprintln!("models/{name} is not there: not compared (make model MODEL={name})");
        }
    }
}

/// How many of a plan's nodes gather im2col patches eagerly (tract's `Im2col`).
fn eager_im2col_nodes(plan: &enclave::model::Plan) -> usize {
    plan.model().nodes().iter().filter(|n| n.op.name() == "Im2col").count()
}

#[test]
fn the_im2col_knobs_reach_the_plan_and_nothing_else_does() {
    let bytes = std::fs::read(root().join("models/resnet18-synthetic/model.onnx"))
        .expect("models/resnet18-synthetic is missing: run `make model MODEL=resnet18-synthetic`");
    // Without the direct convolution, which takes most of the convolutions the knobs would
    // gather eagerly.
    let served = enclave::model::plan(&bytes, 224, &[CONV_TRANSFORM], &IM2COL_KNOBS).unwrap();
    let lazy = enclave::model::plan(&bytes, 224, &[CONV_TRANSFORM], &[]).unwrap();
    // tract's default gathers every 3x3 convolution lazily; the knobs gather the ones whose
    // patches fit 2 MiB eagerly (ResNet18's layer2.0.conv1, layer3 and layer4).
    assert_eq!(eager_im2col_nodes(&lazy), 0);
    assert!(eager_im2col_nodes(&served) >= 5, "{} eager im2col nodes", eager_im2col_nodes(&served));
    // A knob tract does not have, or a value of the wrong type, is refused, not ignored.
    for knobs in [[("TRACT_NO_SUCH_KNOB", "1")], [("TRACT_LAZY_IM2COL_MAX_EAGER_BYTES", "two")]] {
        match enclave::model::plan(&bytes, 224, &[], &knobs) {
            Err(e) => assert!(e.to_string().contains("TRACT_"), "{e}"),
            Ok(_) => panic!("{knobs:?} was accepted"),
        }
    }
}
