//! A model from its files by name, as the browser has them (downloaded or picked).

mod common;

use burn_tensor::Device;
use captioner::{Engine, Error, Flow, ModelFiles, Request, SamplingOptions};
use common::fixtures;

fn named(dir: &str, prefix: &str) -> Vec<(String, Vec<u8>)> {
    std::fs::read_dir(fixtures().join(dir))
        .expect("fixture dir")
        .map(|e| {
            let path = e.expect("entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).expect("name");
            (
                format!("{prefix}{name}"),
                std::fs::read(&path).expect("read"),
            )
        })
        .collect()
}

fn caption(files: ModelFiles) -> String {
    let engine = Engine::load(files, &Device::flex()).expect("load");
    let image = std::fs::read(fixtures().join("images/small_100x80.png")).expect("image");
    let request = Request {
        sampling: SamplingOptions::greedy(6),
        ..Request::default()
    };
    engine
        .caption(&[&image], &request, &mut |_| Flow::Continue)
        .expect("caption")
        .text
}

#[test]
fn files_by_name_load_the_same_model_as_the_folder() {
    for dir in ["tiny-a", "tiny-b"] {
        // Folder prefixes (a picked folder's relative paths) and unrelated files are fine.
        let mut files = named(dir, "SmolVLM-tiny/");
        files.push((
            "SmolVLM-tiny/README.md".into(),
            b"# not a model file".to_vec(),
        ));
        let by_name = caption(ModelFiles::from_named(files).expect("from_named"));
        let by_path = caption(ModelFiles::from_path(&fixtures().join(dir)).expect("from_path"));
        assert_eq!(by_name, by_path, "{dir}");
    }
}

#[test]
fn missing_files_are_named() {
    let without = |skip: &str| {
        named("tiny-b", "")
            .into_iter()
            .filter(|(n, _)| n != skip)
            .collect::<Vec<_>>()
    };
    match ModelFiles::from_named(without("config.json")) {
        Err(Error::MissingFile(name)) => assert_eq!(name, "config.json"),
        other => panic!("expected a missing config.json, got {:?}", other.err()),
    }
    match ModelFiles::from_named(without("model.safetensors")) {
        Err(Error::MissingFile(name)) => assert_eq!(name, "model.safetensors"),
        other => panic!("expected missing weights, got {:?}", other.err()),
    }
    let mut bad = without("config.json");
    bad.push(("config.json".into(), vec![0xff, 0xfe, 0x00]));
    let err = ModelFiles::from_named(bad).err().expect("an error");
    assert!(err.to_string().contains("config.json: not UTF-8"), "{err}");
}
