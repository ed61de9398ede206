//! Batch captioning of JSONL rows, end to end through `captioner caption-jsonl` and the library
//! runner: row semantics, bad inputs, resume after an interruption, pipes.

mod common;

use burn_tensor::Device;
use captioner::caption_run::DEFAULT_PROMPT_MANY;
use captioner::jsonl::{self, FolderImages, Input, Output};
use captioner::preprocess::rgb_from_rgba;
use captioner::{
    CaptionRun, Engine, Flow, ImageSource, ModelFiles, Outcome, Request, RowOptions,
    SamplingOptions,
};
use common::fixtures;
use image::RgbImage;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const MAX_TOKENS: usize = 8;

fn captioner() -> Command {
    Command::new(env!("CARGO_BIN_EXE_captioner"))
}

fn model() -> PathBuf {
    fixtures().join("tiny-b")
}

fn images() -> PathBuf {
    fixtures().join("images")
}

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/rows.jsonl")
}

/// `caption-jsonl` on the tiny model, greedy unless `extra` says otherwise.
fn caption_jsonl(input: &Path, output: &Path, extra: &[&str]) -> Command {
    let mut cmd = captioner();
    cmd.arg("caption-jsonl")
        .arg("--model")
        .arg(model())
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output);
    if !extra.contains(&"--image-root") {
        cmd.arg("--image-root").arg(images());
    }
    if !extra.contains(&"--max-tokens") {
        cmd.args(["--max-tokens", &MAX_TOKENS.to_string()]);
    }
    if !extra.contains(&"--temperature") {
        cmd.args(["--temperature", "0"]);
    }
    cmd.args(extra);
    cmd
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("output line {l}: {e}")))
        .collect()
}

fn engine() -> Engine {
    Engine::load(
        ModelFiles::from_path(&model()).expect("files"),
        &Device::flex(),
    )
    .expect("load")
}

/// The single-image (or several-image) API's greedy caption.
fn api_caption(engine: &Engine, names: &[&str], prompt: &str) -> String {
    let bytes: Vec<Vec<u8>> = names
        .iter()
        .map(|n| std::fs::read(images().join(n)).expect("image"))
        .collect();
    let refs: Vec<&[u8]> = bytes.iter().map(|b| b.as_slice()).collect();
    let request = Request {
        prompt: prompt.into(),
        sampling: SamplingOptions::greedy(MAX_TOKENS),
        ..Request::default()
    };
    engine
        .caption(&refs, &request, &mut |_| Flow::Continue)
        .expect("caption")
        .text
}

#[test]
fn every_row_comes_out_in_order_with_its_fields_and_a_caption_or_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("out.jsonl");
    let stderr = run_ok(&mut caption_jsonl(&example(), &out_path, &[]));
    let input = read(&example());
    let output = read(&out_path);

    // One output line per input line that holds something (the blank line holds no row).
    let input_lines: Vec<&str> = input.lines().filter(|l| !l.trim().is_empty()).collect();
    let rows = parse_lines(&output);
    assert_eq!(rows.len(), input_lines.len(), "{output}");
    assert_eq!(input_lines.len(), 12);

    // Fields are kept byte for byte: numbers stay as written (1.50, not 1.5; an integer past u64 whole).
    let first = output.lines().next().expect("a line");
    assert!(
        first.starts_with(
            r#"{"image":["photo_640x480.jpg"],"id":1,"source":"web","score":0.75,"exact":1.50,"huge":123456789012345678901234567890,"ok":true,"none":null,"tags":["a", "b"],"meta":{"w": 640, "nested": [1, {"x": "y"}]},"caption":""#
        ),
        "{first}"
    );
    // Every row: the input's fields, values and key order; the caption where the input had one
    // (even null), else last; the error only on failed rows.
    for (i, (line, row)) in input_lines.iter().zip(&rows).enumerate() {
        let Ok(Value::Object(input_row)) = serde_json::from_str::<Value>(line) else {
            continue; // the malformed line, checked below
        };
        let out = row.as_object().expect("an object");
        let data = |m: &serde_json::Map<String, Value>| -> Vec<(String, Value)> {
            m.iter()
                .filter(|(k, _)| *k != "caption" && *k != "error")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        assert_eq!(data(out), data(&input_row), "row {}", i + 1);
        let keys: Vec<&String> = out.keys().collect();
        match input_row.keys().position(|k| k == "caption") {
            Some(at) => assert_eq!(keys[at], "caption", "row {}", i + 1),
            None => assert_eq!(keys[input_row.len()], "caption", "row {}", i + 1),
        }
    }

    let engine = engine();
    let caption = |i: usize| rows[i]["caption"].as_str().map(str::to_string);
    let error = |i: usize| rows[i]["error"].as_str().unwrap_or_default().to_string();
    // Captions are those of the single-image API, and of the several-image API for row 3.
    let default = captioner::DEFAULT_PROMPT;
    assert_eq!(
        caption(0),
        Some(api_caption(&engine, &["photo_640x480.jpg"], default))
    );
    assert_eq!(
        caption(1),
        Some(api_caption(&engine, &["small_100x80.png"], default))
    );
    assert_eq!(
        caption(2),
        Some(api_caption(
            &engine,
            &["photo_300x500.jpg", "rgba_160x120.png"],
            DEFAULT_PROMPT_MANY
        ))
    );
    assert_ne!(caption(2), caption(0));
    for i in [0, 1, 2] {
        assert!(rows[i].get("error").is_none(), "row {}: {}", i + 1, rows[i]);
        assert!(!caption(i).unwrap_or_default().is_empty());
    }
    // Bad images: caption null and an error naming the path.
    for (i, path, what) in [
        (3, "photos/missing.jpg", "not found"),
        (4, "truncated.jpg", ""),
        (5, "not_an_image.jpg", ""),
        (11, "huge_header.png", "20000"),
    ] {
        assert_eq!(rows[i]["caption"], Value::Null, "row {}", i + 1);
        let e = error(i);
        assert!(e.contains(&format!("image '{path}'")), "row {}: {e}", i + 1);
        assert!(e.contains(what), "row {}: {e}", i + 1);
    }
    // The malformed line is carried through with its text.
    assert_eq!(
        rows[6]["raw"], input_lines[6],
        "the raw text exactly, trailing space too"
    );
    assert!(
        rows[6]["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("line 7: not valid JSON"),
        "{}",
        rows[6]
    );
    // (line 8 is blank; row 9 is the 8th output line)
    assert_eq!(error(7), "the row has no 'image' field");
    assert_eq!(rows[7]["caption"], Value::Null);
    // An existing caption is kept; a null one is filled.
    assert_eq!(rows[8]["caption"], "A caption written by hand.");
    assert!(rows[8].get("error").is_none());
    assert_eq!(error(9), "'image' entry 2 is a number, not a path string");
    assert_eq!(
        caption(10),
        Some(api_caption(&engine, &["palette_120x90.gif"], default))
    );

    // The summary on stderr counts them.
    assert!(
        stderr.contains("12 rows: 4 captioned, 1 skipped, 7 failed"),
        "{stderr}"
    );
}

#[test]
fn bom_and_crlf_give_the_same_rows_and_reruns_give_the_same_captions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = dir.path().join("plain.jsonl");
    run_ok(&mut caption_jsonl(&example(), &plain, &[]));
    let windows = dir.path().join("windows.jsonl");
    let text = format!("\u{feff}{}", read(&example()).replace('\n', "\r\n"));
    std::fs::write(&windows, text).expect("write");
    let out = dir.path().join("windows-out.jsonl");
    run_ok(&mut caption_jsonl(&windows, &out, &[]));
    assert_eq!(read(&out), read(&plain));

    // Default sampling (temperature 0.7, top-p 0.9) has a fixed seed: a rerun is identical.
    let sampled = |name: &str| {
        let path = dir.path().join(name);
        run_ok(&mut caption_jsonl(
            &example(),
            &path,
            &["--temperature", "0.7", "--max-tokens", "12"],
        ));
        read(&path)
    };
    assert_eq!(sampled("s1.jsonl"), sampled("s2.jsonl"));
}

/// 30 good rows (several images, both field forms) for the interruption tests.
fn many_rows(dir: &Path) -> PathBuf {
    let names = [
        "photo_640x480.jpg",
        "small_100x80.png",
        "photo_300x500.jpg",
        "gray_200x150.png",
        "photo_256x256.webp",
    ];
    let mut text = String::new();
    for i in 0..30 {
        let name = names[i % names.len()];
        if i % 2 == 0 {
            text.push_str(&format!("{{\"image\": [\"{name}\"], \"n\": {i}}}\n"));
        } else {
            text.push_str(&format!("{{\"n\": {i}, \"image\": \"{name}\"}}\n"));
        }
    }
    let path = dir.join("many.jsonl");
    std::fs::write(&path, text).expect("write");
    path
}

fn line_count(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

/// Starts a run and returns once its output holds at least `rows` complete rows.
fn start_and_wait(input: &Path, output: &Path, rows: usize) -> std::process::Child {
    let mut child = caption_jsonl(input, output, &["--max-tokens", "24"])
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    while line_count(output) < rows {
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the run ended before {rows} rows"
        );
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

fn reference(dir: &Path, input: &Path) -> String {
    let path = dir.join("reference.jsonl");
    run_ok(&mut caption_jsonl(input, &path, &["--max-tokens", "24"]));
    read(&path)
}

#[test]
fn ctrl_c_stops_after_the_row_and_a_rerun_resumes_to_the_same_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = many_rows(dir.path());
    let expected = reference(dir.path(), &input);
    let out = dir.path().join("out.jsonl");

    let child = start_and_wait(&input, &out, 3);
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let result = child.wait_with_output().expect("wait");
    assert_eq!(
        result.status.code(),
        Some(130),
        "an interrupted run says so"
    );
    let partial = read(&out);
    let done = partial.lines().count();
    assert!((3..30).contains(&done), "{done} rows");
    assert!(partial.ends_with('\n'));
    assert!(
        expected.starts_with(&partial),
        "the partial file is the start of the full one"
    );

    let stderr = run_ok(&mut caption_jsonl(&input, &out, &["--max-tokens", "24"]));
    assert_eq!(read(&out), expected);
    assert!(
        stderr.contains(&format!("{done} kept from the earlier run")),
        "{stderr}"
    );
}

#[test]
fn a_killed_run_and_a_torn_last_line_resume_to_the_same_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = many_rows(dir.path());
    let expected = reference(dir.path(), &input);
    let out = dir.path().join("out.jsonl");

    let mut child = start_and_wait(&input, &out, 2);
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    run_ok(&mut caption_jsonl(&input, &out, &["--max-tokens", "24"]));
    assert_eq!(read(&out), expected);

    // A write cut in the middle of a line: the torn line is redone.
    let cut = expected.lines().take(5).map(|l| l.len() + 1).sum::<usize>() + 17;
    std::fs::write(&out, &expected[..cut]).expect("write");
    let stderr = run_ok(&mut caption_jsonl(&input, &out, &["--max-tokens", "24"]));
    assert_eq!(read(&out), expected);
    assert!(stderr.contains("5 kept from the earlier run"), "{stderr}");
}

/// Nothing lost, nothing doubled: 200 rows (captions sampled with the default temperature and
/// a fixed seed, error rows, a malformed line, blank lines) killed with SIGKILL at ten random
/// points and resumed each time end byte-identical to a run never interrupted.
#[test]
fn two_hundred_rows_killed_ten_times_resume_to_the_same_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let names = [
        "photo_640x480.jpg",
        "small_100x80.png",
        "gray_200x150.png",
        "photo_256x256.webp",
    ];
    let mut text = String::new();
    for i in 0..200 {
        let row = match i % 23 {
            7 => format!("{{\"image\": [\"missing_{i}.jpg\"], \"n\": {i}}}"),
            13 => format!("{{\"n\": {i}, \"image\": "),
            19 => format!("{{\"image\": \"{}\", \"caption\": \"kept {i}\"}}", names[0]),
            _ => format!(
                "{{\"n\": {i}, \"image\": [\"{}\"], \"note\": \"été {i}\"}}",
                names[i % names.len()]
            ),
        };
        text.push_str(&row);
        text.push('\n');
        if i % 50 == 49 {
            text.push('\n');
        }
    }
    let input = dir.path().join("rows.jsonl");
    std::fs::write(&input, text).expect("write");
    // Sampled, so a resumed row must draw the same tokens as in one run.
    let args = ["--max-tokens", "6", "--temperature", "0.7", "--seed", "7"];
    let reference = dir.path().join("reference.jsonl");
    run_ok(&mut caption_jsonl(&input, &reference, &args));
    let expected = read(&reference);
    assert_eq!(expected.lines().count(), 200);

    // Ten kill points, as rows done plus a few milliseconds into the next row.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut points: Vec<(usize, u64)> = (0..10)
        .map(|_| (1 + (next() % 198) as usize, next() % 15))
        .collect();
    points.sort();
    let out = dir.path().join("out.jsonl");
    let mut killed = 0;
    for (rows, extra_ms) in points {
        let mut child = caption_jsonl(&input, &out, &args)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let start = Instant::now();
        while line_count(&out) < rows && child.try_wait().expect("wait").is_none() {
            assert!(start.elapsed() < Duration::from_secs(120), "no progress");
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(extra_ms));
        if child.try_wait().expect("wait").is_none() {
            killed += 1;
        }
        // (a run that has already finished is simply collected)
        let _ = child.kill();
        child.wait().expect("wait");
        let partial = std::fs::read_to_string(&out).expect("output");
        let whole = partial.rfind('\n').map_or(0, |i| i + 1);
        assert!(partial[..whole].lines().count() >= rows);
        assert!(
            expected.starts_with(&partial[..whole]),
            "after a kill at row {rows}, the complete lines are the start of the full output"
        );
    }
    assert!(
        killed >= 8,
        "only {killed} of the runs were killed while running"
    );
    run_ok(&mut caption_jsonl(&input, &out, &args));
    assert_eq!(read(&out), expected);
}

#[test]
fn the_library_runner_stops_on_cancel_and_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = many_rows(dir.path());
    let engine = engine();
    let request = Request {
        sampling: SamplingOptions::greedy(24),
        ..Request::default()
    };
    let run = |out: &Path, stop_after: Option<usize>| {
        let mut batch = CaptionRun::new(RowOptions::default(), request.clone());
        let cancel = AtomicBool::new(false);
        let mut seen = Vec::new();
        let summary = jsonl::run(
            &engine,
            &mut batch,
            &Input::File(input.clone()),
            &Output::File(out.to_path_buf()),
            &mut FolderImages::new(images()),
            false,
            &cancel,
            &mut |progress, row| {
                seen.push((progress.clone(), row.outcome));
                if Some(progress.rows_done) == stop_after {
                    cancel.store(true, Ordering::SeqCst);
                }
            },
        )
        .expect("run");
        (summary, seen)
    };

    let full = dir.path().join("full.jsonl");
    let (summary, seen) = run(&full, None);
    assert!(!summary.interrupted);
    assert_eq!(summary.progress.rows_done, 30);
    assert_eq!(summary.progress.captioned, 30);
    assert!(summary.progress.tokens > 0 && summary.progress.tokens_per_second > 0.0);
    // Progress events: one per row, counting up, with the total and a time left.
    assert_eq!(seen.len(), 30);
    for (i, (p, outcome)) in seen.iter().enumerate() {
        assert_eq!(p.rows_done, i + 1);
        assert_eq!(p.rows_total, Some(30));
        assert_eq!(*outcome, Outcome::Captioned);
        assert!(p.eta_seconds.is_some());
    }
    assert_eq!(seen.last().map(|(p, _)| p.eta_seconds), Some(Some(0.0)));

    let out = dir.path().join("out.jsonl");
    let (summary, _) = run(&out, Some(7));
    assert!(summary.interrupted);
    assert_eq!(read(&out).lines().count(), 7);
    let (summary, seen) = run(&out, None);
    assert_eq!(summary.resumed, 7);
    assert_eq!(seen.len(), 23, "only the remaining rows are captioned");
    assert_eq!(summary.progress.rows_done, 30);
    assert_eq!(read(&out), read(&full));
}

/// Input that can be read only once or never ends: a FIFO given to the library runner keeps
/// every row (the row count for the time left used to read it first and empty it), and an
/// endless line (`/dev/zero` piped into stdin) is refused at 64 MiB instead of being read
/// until the memory runs out.
#[test]
fn a_fifo_keeps_every_row_and_an_endless_line_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rows = read(&many_rows(dir.path()));
    let fifo = dir.path().join("rows.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let writer = {
        let (fifo, rows) = (fifo.clone(), rows.clone());
        std::thread::spawn(move || std::fs::write(fifo, rows).expect("write the FIFO"))
    };
    let engine = engine();
    let request = Request {
        sampling: SamplingOptions::greedy(4),
        ..Request::default()
    };
    let mut batch = CaptionRun::new(RowOptions::default(), request);
    let out = dir.path().join("out.jsonl");
    // On a thread, so that a run blocked on the emptied FIFO fails the test instead of
    // hanging it: after a minute a writer is opened, which lets the run end.
    let (done, finished) = std::sync::mpsc::channel();
    let summary = std::thread::scope(|scope| {
        let run = scope.spawn(|| {
            let summary = jsonl::run(
                &engine,
                &mut batch,
                &Input::File(fifo.clone()),
                &Output::File(out.clone()),
                &mut FolderImages::new(images()),
                false,
                &AtomicBool::new(false),
                &mut |_, _| {},
            );
            done.send(()).expect("send");
            summary
        });
        if finished.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
        }
        run.join().expect("the run")
    })
    .expect("run");
    writer.join().expect("writer");
    assert_eq!(summary.progress.rows_done, 30);
    assert_eq!(read(&out).lines().count(), 30);

    // 65 MiB of zeros and no newline (a finite stream, so that without the bound the test
    // fails on the output instead of filling the memory).
    let out = dir.path().join("zeros.jsonl");
    let mut child = caption_jsonl(Path::new("-"), &out, &[])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || {
        let block = vec![0u8; 1 << 20];
        for _ in 0..65 {
            if stdin.write_all(&block).is_err() {
                break;
            }
        }
    });
    let result = child.wait_with_output().expect("runs");
    feeder.join().expect("feeder");
    assert!(!result.status.success());
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(
        err.contains("<stdin> line 1 is longer than 64 MiB"),
        "{err}"
    );
}

#[test]
fn an_output_from_another_input_is_not_resumed_unless_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = many_rows(dir.path());
    let out = dir.path().join("out.jsonl");
    let foreign = "{\"image\": \"other.jpg\", \"caption\": \"x\"}\n";
    std::fs::write(&out, foreign).expect("write");
    let result = caption_jsonl(&input, &out, &[]).output().expect("runs");
    assert!(!result.status.success());
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(
        err.contains("line 1 is not the output of") && err.contains("--restart"),
        "{err}"
    );
    assert_eq!(read(&out), foreign, "the file is left as it was");

    run_ok(&mut caption_jsonl(&input, &out, &["--restart"]));
    assert_eq!(read(&out).lines().count(), 30);
}

#[test]
fn pipes_work_both_ways() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file_out = dir.path().join("out.jsonl");
    run_ok(&mut caption_jsonl(&example(), &file_out, &[]));

    let mut child = caption_jsonl(Path::new("-"), Path::new("-"), &[])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(read(&example()).as_bytes())
        .expect("write");
    let result = child.wait_with_output().expect("wait");
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&result.stdout), read(&file_out));
}

#[test]
fn a_run_that_cannot_proceed_exits_non_zero_and_says_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.jsonl");
    let cases: Vec<(Command, &str)> = vec![
        (
            caption_jsonl(&dir.path().join("nope.jsonl"), &out, &[]),
            "does not exist",
        ),
        (
            caption_jsonl(&example(), &dir.path().join("no/such/dir/out.jsonl"), &[]),
            "no/such/dir/out.jsonl",
        ),
        (
            caption_jsonl(&example(), &out, &["--image-root", "/no/such/root"]),
            "--image-root",
        ),
        (caption_jsonl(&example(), &example(), &[]), "is the input"),
        (caption_jsonl(&example(), &out, &["--top-p", "0"]), "top_p"),
        // Keys that collide: every caption lost to its error field, or every row taken for
        // captioned already (both exited 0 with a useless file).
        (
            caption_jsonl(&example(), &out, &["--output-key", "x", "--error-key", "x"]),
            "the caption key and the error key are both \"x\"",
        ),
        (
            caption_jsonl(&example(), &out, &["--output-key", "image"]),
            "the caption key and the image key are both \"image\"",
        ),
    ];
    for (mut cmd, message) in cases {
        let result = cmd.output().expect("runs");
        let err = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success(), "{err}");
        assert!(err.contains(message), "wanted '{message}' in: {err}");
    }
    let result = captioner()
        .args(["caption-jsonl", "--model", "/no/model", "--input"])
        .arg(example())
        .arg("--output")
        .arg(&out)
        .output()
        .expect("runs");
    assert!(!result.status.success());
    assert!(String::from_utf8_lossy(&result.stderr).contains("/no/model"));
    assert!(!out.exists(), "a run that cannot proceed writes no output");
}

#[test]
fn paths_resolve_from_the_root_or_absolute_and_odd_files_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("sub/folder.jpg")).expect("dirs");
    std::fs::copy(images().join("small_100x80.png"), root.join("sub/a.png")).expect("copy");
    // A sparse file: over the size limit without using the disk.
    let big = std::fs::File::create(root.join("big.jpg")).expect("big");
    big.set_len(300 << 20).expect("set_len");
    let absolute = images().join("small_100x80.png");
    let rows = [
        r#"{"image": "sub/a.png"}"#.to_string(),
        format!(
            "{{\"image\": {}}}",
            Value::String(absolute.display().to_string())
        ),
        r#"{"image": "sub/folder.jpg"}"#.to_string(),
        r#"{"image": "big.jpg"}"#.to_string(),
        r#"{"image": "https://example.com/cat.jpg"}"#.to_string(),
        // Endless, and 0 bytes long by its metadata: it was read to 4.2 GB.
        r#"{"image": "/dev/zero"}"#.to_string(),
        // Opening a FIFO waits for a writer: the run blocked here for ever.
        r#"{"image": "fifo.jpg"}"#.to_string(),
    ];
    let made = Command::new("mkfifo")
        .arg(dir.path().join("root/fifo.jpg"))
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, rows.join("\n")).expect("write");
    let out = dir.path().join("out.jsonl");
    let root = root.display().to_string();
    run_ok(&mut caption_jsonl(&input, &out, &["--image-root", &root]));
    let got = parse_lines(&read(&out));
    assert_eq!(got.len(), 7);
    let expected = api_caption(&engine(), &["small_100x80.png"], captioner::DEFAULT_PROMPT);
    assert_eq!(got[0]["caption"], expected.as_str());
    assert_eq!(got[1]["caption"], expected.as_str());
    let error = |i: usize| got[i]["error"].as_str().unwrap_or_default().to_string();
    assert!(error(2).contains("is a folder"), "{}", error(2));
    assert!(error(3).contains("too large: 300 MiB"), "{}", error(3));
    assert!(error(4).contains("is a URL"), "{}", error(4));
    for i in [5, 6] {
        assert!(error(i).contains("is not a regular file"), "{}", error(i));
    }
}

/// A folder of images with a second decoder behind the engine, as the browser has: it reads
/// `RGBA` files (a made-up raw format the engine does not know: "RGBA", width and height as
/// u32 LE, then the samples) and fails on anything else, counting the times it is asked.
struct WithOtherDecoder {
    folder: FolderImages,
    asked: usize,
}

impl ImageSource for WithOtherDecoder {
    async fn read(&mut self, path: &str) -> Result<Vec<u8>, String> {
        self.folder.read(path).await
    }

    async fn decode_unsupported(&mut self, bytes: &[u8]) -> Option<Result<RgbImage, String>> {
        self.asked += 1;
        let Some(raw) = bytes.strip_prefix(b"RGBA").filter(|r| r.len() >= 8) else {
            return Some(Err("not a picture this decoder knows".into()));
        };
        let side = |at: usize| u32::from_le_bytes(raw[at..at + 4].try_into().expect("4 bytes"));
        Some(rgb_from_rgba(side(0), side(4), raw[8..].to_vec()).map_err(|e| e.to_string()))
    }
}

/// The output rows of `rows` (JSON lines) captioned greedily with images from `source`.
fn run_rows<S: ImageSource>(engine: &Engine, rows: &[&str], source: &mut S) -> Vec<Value> {
    let request = Request {
        sampling: SamplingOptions::greedy(MAX_TOKENS),
        ..Request::default()
    };
    let mut batch = CaptionRun::new(RowOptions::default(), request);
    let mut on_text = |_: &str| Flow::Continue;
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let line = captioner::rows::Line::parse(row, i + 1);
            let result = pollster::block_on(batch.next(engine, line, source, &mut on_text));
            serde_json::from_str(&result.expect("a row").line).expect("json")
        })
        .collect()
}

#[test]
fn an_image_the_engine_does_not_read_is_captioned_from_the_other_decoders_pixels_and_the_row_says_so(
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    // A picture with an alpha channel, as PNG (the engine reads it) and as raw RGBA (it does not).
    std::fs::copy(images().join("rgba_160x120.png"), root.join("pic.png")).expect("copy");
    let rgba = image::open(images().join("rgba_160x120.png"))
        .expect("decode")
        .to_rgba8();
    let mut raw = b"RGBA".to_vec();
    raw.extend(rgba.width().to_le_bytes());
    raw.extend(rgba.height().to_le_bytes());
    raw.extend(rgba.as_raw());
    std::fs::write(root.join("pic.rgba"), raw).expect("write");
    for name in ["not_an_image.jpg", "truncated.jpg"] {
        std::fs::copy(images().join(name), root.join(name)).expect("copy");
    }
    let avif = fixtures().join("formats/rgb.avif");
    std::fs::copy(avif, root.join("a.avif")).expect("copy");
    let rows = [
        r#"{"image": ["pic.rgba"], "id": 1}"#,
        r#"{"image": ["pic.png"], "id": 2}"#,
        r#"{"image": ["not_an_image.jpg"], "id": 3}"#,
        r#"{"image": ["truncated.jpg"], "id": 4}"#,
        r#"{"image": ["pic.png", "pic.rgba"], "decoded_by_browser": "stale", "id": 5}"#,
        r#"{"image": ["a.avif"], "id": 6}"#,
    ];
    let engine = engine();
    let mut browser = WithOtherDecoder {
        folder: FolderImages::new(root),
        asked: 0,
    };
    let out = run_rows(&engine, &rows, &mut browser);
    // The raw picture is captioned from the other decoder's pixels, exactly as the engine
    // captions the same pixels from the PNG, and only that row carries the field.
    assert_eq!(
        out[0]["decoded_by_browser"],
        serde_json::json!(["pic.rgba"])
    );
    assert!(
        out[0]["caption"].as_str().is_some_and(|c| !c.is_empty()),
        "{}",
        out[0]
    );
    assert_eq!(out[0]["caption"], out[1]["caption"]);
    assert!(out[1].get("decoded_by_browser").is_none(), "{}", out[1]);
    // Bytes neither takes for an image: the engine's error, as natively.
    let error = out[2]["error"].as_str().expect("an error");
    assert!(
        error.starts_with("image 'not_an_image.jpg': not a recognised image")
            && error.ends_with("data"),
        "{error}"
    );
    // A format the engine knows and leaves out, which the other decoder fails on too: both
    // say why.
    let error = out[5]["error"].as_str().expect("an error");
    assert!(
        error.starts_with("image 'a.avif': unsupported image format Avif")
            && error.ends_with(
                "; the browser could not decode it either: not a picture this decoder knows"
            ),
        "{error}"
    );
    assert!(out[2].get("decoded_by_browser").is_none());
    // A damaged file of a format the engine reads is its error alone: not the other decoder's
    // to guess at (a browser shows half a truncated JPEG).
    assert!(
        out[3]["error"]
            .as_str()
            .expect("an error")
            .contains("truncated"),
        "{}",
        out[3]
    );
    assert_eq!(
        browser.asked, 4,
        "pic.rgba twice, not_an_image.jpg and a.avif once"
    );
    // A stale field from an earlier run gives way to what this run did.
    assert_eq!(
        out[4]["decoded_by_browser"],
        serde_json::json!(["pic.rgba"])
    );
    assert!(out[4]["caption"].is_string(), "{}", out[4]);

    // Natively there is no other decoder: the raw picture's row is an error, with no field.
    let native = run_rows(&engine, &rows, &mut FolderImages::new(root));
    assert_eq!(native[1..4], out[1..4]);
    for row in [&native[0], &native[4]] {
        assert!(row["caption"].is_null(), "{row}");
        assert!(row.get("decoded_by_browser").is_none(), "{row}");
        assert!(
            row["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("image 'pic.rgba': not a recognised image")),
            "{row}"
        );
    }
}
