//! The served plan against tract's default plan: the model server runs the
//! convolutions channel-last (`enclave::model::CONV_TRANSFORM`), a different
//! set of kernels from the plan tract builds by default. Both must give the
//! same answers, to float rounding, on every model we serve and every test
//! photo: every class's probability within 1e-5 and the same top-5.
//!
//! Needs `models/tiny-test`, `models/efficientnet-lite0` and `testdata/`
//! (`make test` prepares them); the ResNet18 models are compared too when
//! they are there (`make model MODEL=resnet18-synthetic`).

use std::path::{Path, PathBuf};

use enclave::config::Config;
use enclave::model::{softmax, Model, CONV_TRANSFORM};
use tract_onnx::prelude::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Tract's default plan of the model (no transform), on the same input.
fn default_plan_scores(model_dir: &Path, input: Tensor) -> Vec<f32> {
    let bytes = std::fs::read(model_dir.join("model.onnx")).unwrap();
    let plan = enclave::model::plan(&bytes, input.shape()[2], &[]).unwrap();
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
        let default = default_plan_scores(&dir, input);
        let worst = served.iter().zip(&default).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-5, "{name}, {}: a probability differs by {worst}", photo.display());
        assert_eq!(top5(&served), top5(&default), "{name}, {}: top-5 differs", photo.display());
    }
    photos.len()
}

#[test]
fn the_channel_last_plan_answers_as_tract_s_default_plan_on_every_model() {
    assert_eq!(CONV_TRANSFORM, "conv_nhwc");
    for name in ["tiny-test", "efficientnet-lite0"] {
        assert!(root().join("models").join(name).exists(), "models/{name} is missing: run `make model MODEL={name}`");
        compare(name);
    }
    for name in ["resnet18", "resnet18-synthetic"] {
        if root().join("models").join(name).exists() {
            compare(name);
        } else {
            eprintln!("models/{name} is not there: not compared (make model MODEL={name})");
        }
    }
}
