//! JSONL rows in DataFlow's conventions: what a row asks for and what comes out for it.
//!
//! An input row such as `{"image": ["photos/a.jpg"], "id": 17}` comes out as the same row, every
//! field kept byte for byte in its place, plus `"caption": "..."`. Nothing is ever dropped: a
//! row that cannot be captioned comes out with `"caption": null` and an error field, and a line
//! that is not a JSON object comes out as `{"error": "...", "raw": "<the line>"}`.
//!
//! This module is pure (no files, no model): the native program and the browser share it, each
//! reading the images its own way.

use crate::error::{Error, Result};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::fmt;

/// Field names and limits of a captioning run.
#[derive(Debug, Clone, PartialEq)]
pub struct RowOptions {
    /// The field holding the image path(s): a list of strings or one string (`multi_modal_key`).
    pub image_key: String,
    /// The field the caption is written to (`output_key`).
    pub caption_key: String,
    /// The field that says why a row has no caption.
    pub error_key: String,
    /// Rows showing more images than this are not captioned (each image costs up to ~1,100
    /// prompt tokens, and the model's context is finite).
    pub max_images: usize,
    /// Caption rows that already have a caption too.
    pub overwrite: bool,
}

impl Default for RowOptions {
    fn default() -> Self {
        Self {
            image_key: "image".into(),
            caption_key: "caption".into(),
            error_key: "error".into(),
            max_images: 4,
            overwrite: false,
        }
    }
}

impl RowOptions {
    /// The three field names must be apart: a caption key equal to the error key loses every
    /// caption or error to the other, and one equal to the image key replaces the images (and
    /// makes every row look captioned already).
    pub fn validate(&self) -> Result<()> {
        let keys = [
            ("caption", &self.caption_key),
            ("error", &self.error_key),
            ("image", &self.image_key),
        ];
        for (i, (a, key)) in keys.iter().enumerate() {
            if let Some((b, _)) = keys[i + 1..].iter().find(|(_, other)| other == key) {
                return Err(Error::Invalid(format!(
                    "the {a} key and the {b} key are both \"{key}\": each needs a field of its \
                     own in the rows, so give them different names"
                )));
            }
            if key.as_str() == DECODED_BY_BROWSER {
                return Err(Error::Invalid(format!(
                    "the {a} key cannot be \"{key}\": that field says which images the browser \
                     decoded"
                )));
            }
        }
        Ok(())
    }
}

/// A JSON object with its fields in their original order and their values as the original
/// text, so numbers like `1.10` or `1e400` come out exactly as they came in.
#[derive(Debug, Clone)]
pub struct Row {
    fields: Vec<(String, Box<RawValue>)>,
}

impl<'de> Deserialize<'de> for Row {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RowVisitor;
        impl<'de> Visitor<'de> for RowVisitor {
            type Value = Row;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Row, A::Error> {
                let mut fields = Vec::new();
                while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                    fields.push(entry);
                }
                Ok(Row { fields })
            }
        }
        deserializer.deserialize_map(RowVisitor)
    }
}

impl Row {
    /// The raw JSON text of a field.
    pub fn get(&self, key: &str) -> Option<&RawValue> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }

    /// Sets a field: in place when it exists, at the end otherwise.
    pub fn set(&mut self, key: &str, value: &Value) {
        let raw = RawValue::from_string(value.to_string()).expect("a Value serializes to JSON");
        match self.fields.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = raw,
            None => self.fields.push((key.to_string(), raw)),
        }
    }

    /// Removes a field, keeping the others in order.
    pub fn remove(&mut self, key: &str) {
        self.fields.retain(|(k, _)| k != key);
    }

    /// The fields, in order.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &RawValue)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), v.as_ref()))
    }

    /// The row as one line of JSON (no newline).
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(64);
        out.push('{');
        for (i, (key, value)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&Value::String(key.clone()).to_string());
            out.push(':');
            out.push_str(value.get());
        }
        out.push('}');
        out
    }

    /// Whether two rows hold the same data once `ignore`d fields are set aside (values compared
    /// as JSON, not as text).
    pub fn same_data(&self, other: &Row, ignore: &[&str]) -> bool {
        let data = |row: &Row| -> Vec<(String, Option<Value>)> {
            row.fields
                .iter()
                .filter(|(k, _)| !ignore.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), serde_json::from_str(v.get()).ok()))
                .collect()
        };
        data(self) == data(other)
    }
}

/// Whether line `line_no` (1-based) of a JSONL file, as bytes, holds no row: after a UTF-8 BOM
/// on the first line, nothing but JSON's white space (space, tab, CR, LF). Any other character,
/// white space to Unicode or not (U+0085, U+00A0, U+2028, VT, FF), is not JSON, so its line is
/// an error row that keeps it: nothing is dropped. The one rule for the native reader, the row
/// count and the browser (`www/picked-files.js` has the same rule).
pub fn is_blank(bytes: &[u8], line_no: usize) -> bool {
    let bytes = match line_no {
        1 => bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes),
        _ => bytes,
    };
    bytes
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

/// One line of a JSONL file, read.
#[derive(Debug, Clone)]
pub enum Line {
    /// Empty or JSON white space only ([`is_blank`]): it holds no row and produces no output.
    Blank,
    Row(Row),
    /// Not a JSON object; carried through as an error row holding the raw text.
    Malformed {
        raw: String,
        message: String,
    },
}

impl Line {
    /// Reads line `line_no` (1-based) of a JSONL file as its raw bytes: a line that is not
    /// UTF-8 is an error row whose `raw` holds it with the invalid bytes replaced (the line is
    /// reported, not lost). The native reader and the browser both read lines this way.
    pub fn from_bytes(bytes: &[u8], line_no: usize) -> Line {
        match std::str::from_utf8(bytes) {
            Ok(text) => Line::parse(text, line_no),
            Err(_) => Line::Malformed {
                raw: String::from_utf8_lossy(bytes)
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
                message: format!(
                    "line {line_no}: not UTF-8 text (raw holds it with invalid bytes replaced)"
                ),
            },
        }
    }

    /// Reads line `line_no` (1-based) of a JSONL file. A UTF-8 BOM on the first line and a
    /// trailing `\r` are tolerated.
    pub fn parse(text: &str, line_no: usize) -> Line {
        let text = if line_no == 1 {
            text.strip_prefix('\u{feff}').unwrap_or(text)
        } else {
            text
        };
        let text = text.strip_suffix('\n').unwrap_or(text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        if is_blank(text.as_bytes(), line_no) {
            return Line::Blank;
        }
        match serde_json::from_str::<Row>(text) {
            Ok(row) => Line::Row(row),
            Err(_) => {
                // Read as any JSON value, for the message: a broken `[1, 2` is a syntax error
                // there, where the row's own parser only said "sequence, expected an object".
                let message = match serde_json::from_str::<Value>(text) {
                    Ok(v) => format!(
                        "line {line_no}: a row must be a JSON object, not {}",
                        json_kind(&v)
                    ),
                    Err(e) => format!("line {line_no}: not valid JSON ({e})"),
                };
                Line::Malformed {
                    raw: text.to_string(),
                    message,
                }
            }
        }
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A caption was written.
    Captioned,
    /// The row already had a caption (or was already in the output of an earlier run).
    Skipped,
    /// The row comes out with an error field instead of a caption.
    Failed,
}

/// What to do with one line.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Nothing to write (a blank line).
    Nothing,
    /// The output line is known without the model: a skipped row or an error.
    Done {
        line: String,
        outcome: Outcome,
        error: Option<String>,
    },
    /// The row needs a caption of these images.
    Caption(Job),
}

/// The field a captioned row gets in the browser when some of its images are in a format this
/// program does not read (AVIF; HEIC in Safari) and the browser decoded them instead: their
/// paths. The command line refuses those files, and another decoder's pixels may differ from
/// what Pillow would give the reference model, so the row says so.
pub const DECODED_BY_BROWSER: &str = "decoded_by_browser";

/// A row waiting for its caption.
#[derive(Debug, Clone)]
pub struct Job {
    row: Row,
    paths: Vec<String>,
    browser_decoded: Vec<String>,
}

impl Job {
    /// The image paths exactly as the row gives them, in order.
    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    /// Notes that the image at `path` was decoded by the browser (see [`DECODED_BY_BROWSER`]).
    pub fn decoded_by_browser(&mut self, path: &str) {
        self.browser_decoded.push(path.to_string());
    }

    /// The output line for this row given its caption, or why there is none.
    pub fn finish(mut self, caption: Result<&str, &str>, options: &RowOptions) -> String {
        // A field left by an earlier run of an overwritten row would no longer be true.
        self.row.remove(DECODED_BY_BROWSER);
        match caption {
            Ok(text) => {
                self.row
                    .set(&options.caption_key, &Value::String(text.to_string()));
                self.row.remove(&options.error_key);
                if !self.browser_decoded.is_empty() {
                    let paths = self.browser_decoded.iter().cloned().map(Value::String);
                    self.row
                        .set(DECODED_BY_BROWSER, &Value::Array(paths.collect()));
                }
            }
            Err(message) => {
                self.row.set(&options.caption_key, &Value::Null);
                self.row
                    .set(&options.error_key, &Value::String(message.to_string()));
            }
        }
        self.row.to_json()
    }
}

/// Decides what a line needs.
pub fn plan(line: Line, options: &RowOptions) -> Plan {
    let mut row = match line {
        Line::Blank => return Plan::Nothing,
        Line::Malformed { raw, message } => {
            let mut out = serde_json::Map::new();
            out.insert(options.error_key.clone(), Value::String(message.clone()));
            out.insert("raw".into(), Value::String(raw));
            return Plan::Done {
                line: Value::Object(out).to_string(),
                outcome: Outcome::Failed,
                error: Some(message),
            };
        }
        Line::Row(row) => row,
    };
    let has_caption = row
        .get(&options.caption_key)
        .is_some_and(|v| v.get().trim() != "null");
    if has_caption && !options.overwrite {
        return Plan::Done {
            line: row.to_json(),
            outcome: Outcome::Skipped,
            error: None,
        };
    }
    match image_paths(&row, options) {
        Ok(paths) => Plan::Caption(Job {
            row,
            paths,
            browser_decoded: Vec::new(),
        }),
        Err(message) => {
            // (As `Job::finish` does: no image of this row was decoded by anything.)
            row.remove(DECODED_BY_BROWSER);
            row.set(&options.caption_key, &Value::Null);
            row.set(&options.error_key, &Value::String(message.clone()));
            Plan::Done {
                line: row.to_json(),
                outcome: Outcome::Failed,
                error: Some(message),
            }
        }
    }
}

/// The image paths of a row: its image field as a list of strings or one string.
fn image_paths(row: &Row, options: &RowOptions) -> Result<Vec<String>, String> {
    let key = &options.image_key;
    let raw = row
        .get(key)
        .ok_or_else(|| format!("the row has no '{key}' field"))?;
    let value: Value =
        serde_json::from_str(raw.get()).map_err(|e| format!("'{key}': unreadable value ({e})"))?;
    let paths = match value {
        Value::String(path) => vec![path],
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(path) => Ok(path),
                other => Err(format!(
                    "'{key}' entry {} is {}, not a path string",
                    i + 1,
                    json_kind(&other)
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        other => {
            return Err(format!(
                "'{key}' is {}; it must be a path string or a list of them",
                json_kind(&other)
            ))
        }
    };
    if paths.is_empty() {
        return Err(format!("'{key}' is an empty list"));
    }
    if let Some(i) = paths.iter().position(|p| p.trim().is_empty()) {
        return Err(format!("'{key}' entry {} is an empty path", i + 1));
    }
    if paths.len() > options.max_images {
        return Err(format!(
            "the row has {} images; at most {} are captioned together (raise the images-per-row limit)",
            paths.len(),
            options.max_images
        ));
    }
    Ok(paths)
}

/// Whether an output line is the result of this input line, so a rerun may keep it.
pub fn is_output_of(output: &str, input: &Line, options: &RowOptions) -> bool {
    let Ok(out) = serde_json::from_str::<Row>(output.trim_end_matches(['\n', '\r'])) else {
        return false;
    };
    match input {
        Line::Blank => false,
        Line::Malformed { raw, .. } => out
            .get("raw")
            .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
            .is_some_and(|r| &r == raw),
        Line::Row(row) => {
            let ignore = [
                options.caption_key.as_str(),
                options.error_key.as_str(),
                DECODED_BY_BROWSER,
            ];
            out.same_data(row, &ignore)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_keys_must_be_apart() {
        assert!(RowOptions::default().validate().is_ok());
        let with = |caption: &str, error: &str, image: &str| RowOptions {
            caption_key: caption.into(),
            error_key: error.into(),
            image_key: image.into(),
            ..RowOptions::default()
        };
        for (o, says) in [
            (
                with("x", "x", "image"),
                "the caption key and the error key are both \"x\"",
            ),
            (
                with("image", "error", "image"),
                "the caption key and the image key",
            ),
            (
                with("caption", "pic", "pic"),
                "the error key and the image key",
            ),
            (
                with("caption", DECODED_BY_BROWSER, "image"),
                "the error key cannot be \"decoded_by_browser\"",
            ),
        ] {
            let err = o.validate().expect_err(says).to_string();
            assert!(err.contains(says), "{err}");
        }
    }

    fn opts() -> RowOptions {
        RowOptions::default()
    }

    fn row(text: &str) -> Line {
        Line::parse(text, 3)
    }

    #[test]
    fn decoded_by_browser_says_what_this_run_did_and_nothing_stale() {
        let o = RowOptions {
            overwrite: true,
            ..opts()
        };
        let stale = r#"{"image": ["a.avif"], "caption": "old", "decoded_by_browser": ["a.avif"]}"#;
        let mut fresh = job(plan(row(stale), &o));
        fresh.decoded_by_browser("a.avif");
        assert_eq!(
            fresh.finish(Ok("new"), &o),
            r#"{"image":["a.avif"],"caption":"new","decoded_by_browser":["a.avif"]}"#
        );
        let no_image = r#"{"image": [], "decoded_by_browser": ["a.avif"]}"#;
        for out in [
            job(plan(row(stale), &o)).finish(Ok("new"), &o),
            job(plan(row(stale), &o)).finish(Err("image 'a.avif' not found"), &o),
            done(plan(row(no_image), &o)).0,
        ] {
            assert!(!out.contains(DECODED_BY_BROWSER), "{out}");
        }
    }

    fn done(plan: Plan) -> (String, Outcome, Option<String>) {
        match plan {
            Plan::Done {
                line,
                outcome,
                error,
            } => (line, outcome, error),
            other => panic!("expected a finished row, got {other:?}"),
        }
    }

    fn job(plan: Plan) -> Job {
        match plan {
            Plan::Caption(job) => job,
            other => panic!("expected a caption job, got {other:?}"),
        }
    }

    #[test]
    fn fields_keep_their_order_and_exact_text() {
        let text =
            r#"{"z": 1.10, "image": "a.jpg", "n": {"b": [1e400, null]}, "é": "ü✓", "t": true}"#;
        let j = job(plan(row(text), &opts()));
        assert_eq!(j.paths(), ["a.jpg"]);
        let out = j.finish(Ok("A \"cat\".\n"), &opts());
        assert_eq!(
            out,
            r#"{"z":1.10,"image":"a.jpg","n":{"b": [1e400, null]},"é":"ü✓","t":true,"caption":"A \"cat\".\n"}"#
        );
    }

    #[test]
    fn list_and_string_image_fields() {
        let j = job(plan(row(r#"{"image": ["a.jpg", "dir/b.png"]}"#), &opts()));
        assert_eq!(j.paths(), ["a.jpg", "dir/b.png"]);
        let j = job(plan(row(r#"{"image": "/abs/c.webp"}"#), &opts()));
        assert_eq!(j.paths(), ["/abs/c.webp"]);
    }

    #[test]
    fn custom_field_names() {
        let o = RowOptions {
            image_key: "img".into(),
            caption_key: "text".into(),
            error_key: "why".into(),
            ..opts()
        };
        let j = job(plan(row(r#"{"img": ["a.jpg"], "text": null}"#), &o));
        assert_eq!(j.finish(Ok("x"), &o), r#"{"img":["a.jpg"],"text":"x"}"#);
        let (line, outcome, _) = done(plan(row(r#"{"image": ["a.jpg"]}"#), &o));
        assert_eq!(outcome, Outcome::Failed);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["why"], "the row has no 'img' field");
        assert_eq!(v["text"], Value::Null);
    }

    #[test]
    fn existing_captions_are_kept_unless_overwrite() {
        let text = r#"{"image": "a.jpg", "caption": "mine", "id": 2}"#;
        let (line, outcome, _) = done(plan(row(text), &opts()));
        assert_eq!(outcome, Outcome::Skipped);
        assert_eq!(line, r#"{"image":"a.jpg","caption":"mine","id":2}"#);
        let o = RowOptions {
            overwrite: true,
            ..opts()
        };
        let out = job(plan(row(text), &o)).finish(Ok("new"), &o);
        // Replaced in place, not moved to the end.
        assert_eq!(out, r#"{"image":"a.jpg","caption":"new","id":2}"#);
        // A null caption is no caption: a failed row of an earlier run is retried, and its old
        // error goes away on success.
        let retried = r#"{"image": "a.jpg", "caption": null, "error": "gone"}"#;
        let out = job(plan(row(retried), &opts())).finish(Ok("ok"), &opts());
        assert_eq!(out, r#"{"image":"a.jpg","caption":"ok"}"#);
    }

    #[test]
    fn failures_keep_the_row_and_say_why() {
        let o = opts();
        let cases = [
            (r#"{"id": 1}"#, "the row has no 'image' field"),
            (
                r#"{"image": ["a.jpg", 7]}"#,
                "'image' entry 2 is a number, not a path string",
            ),
            (
                r#"{"image": null}"#,
                "'image' is null; it must be a path string or a list of them",
            ),
            (r#"{"image": []}"#, "'image' is an empty list"),
            (r#"{"image": ["  "]}"#, "'image' entry 1 is an empty path"),
        ];
        for (text, why) in cases {
            let (line, outcome, error) = done(plan(row(text), &o));
            assert_eq!(outcome, Outcome::Failed, "{text}");
            assert_eq!(error.as_deref(), Some(why));
            let v: Value = serde_json::from_str(&line).unwrap();
            let input: Value = serde_json::from_str(text).unwrap();
            for (k, val) in input.as_object().unwrap() {
                assert_eq!(&v[k], val, "{text}: field {k} kept");
            }
            assert_eq!(v["caption"], Value::Null);
            assert_eq!(v["error"], why);
        }
        let five = r#"{"image": ["1","2","3","4","5"]}"#;
        let (_, outcome, error) = done(plan(row(five), &o));
        assert_eq!(outcome, Outcome::Failed);
        assert!(error.unwrap().contains("has 5 images; at most 4"));
        let j = job(plan(row(r#"{"image": "a.jpg"}"#), &o));
        let out: Value =
            serde_json::from_str(&j.finish(Err("image 'a.jpg' not found"), &o)).unwrap();
        assert_eq!(
            out,
            serde_json::json!({"image": "a.jpg", "caption": null, "error": "image 'a.jpg' not found"})
        );
    }

    #[test]
    fn malformed_lines_are_carried_through() {
        let (line, outcome, _) = done(plan(Line::parse("{\"image\": \"a.jpg\"", 7), &opts()));
        assert_eq!(outcome, Outcome::Failed);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert!(v["error"]
            .as_str()
            .unwrap()
            .starts_with("line 7: not valid JSON"));
        assert_eq!(v["raw"], "{\"image\": \"a.jpg\"");
        let (line, _, _) = done(plan(Line::parse("[1, 2]\r\n", 9), &opts()));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v["error"],
            "line 9: a row must be a JSON object, not an array"
        );
        assert_eq!(v["raw"], "[1, 2]");
        // A broken array is told what is broken, not that it is an array.
        let (line, _, _) = done(plan(Line::parse("[1, 2", 3), &opts()));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v["error"],
            "line 3: not valid JSON (EOF while parsing a list at line 1 column 5)"
        );
    }

    #[test]
    fn lines_that_are_not_utf8_are_error_rows_with_the_bytes_replaced() {
        let (line, outcome, error) = done(plan(
            Line::from_bytes(b"{\"image\": [\"caf\xe9.jpg\"]}\r\n", 5),
            &opts(),
        ));
        assert_eq!(outcome, Outcome::Failed);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v["error"],
            "line 5: not UTF-8 text (raw holds it with invalid bytes replaced)"
        );
        assert_eq!(error.as_deref(), v["error"].as_str());
        assert_eq!(v["raw"], "{\"image\": [\"caf\u{fffd}.jpg\"]}");
        // UTF-8 bytes read as the text would be.
        let j = job(plan(
            Line::from_bytes("{\"image\": \"café.jpg\"}\n".as_bytes(), 5),
            &opts(),
        ));
        assert_eq!(j.paths(), ["café.jpg"]);
    }

    #[test]
    fn bom_crlf_and_blank_lines() {
        assert!(matches!(Line::parse("  \r\n", 4), Line::Blank));
        assert!(matches!(Line::parse(" \t \r\r\n", 4), Line::Blank));
        assert!(matches!(Line::parse("", 4), Line::Blank));
        assert!(matches!(Line::parse("\u{feff} \n", 1), Line::Blank));
        // White space that is not JSON's is not blank: the line is an error row that keeps it.
        for other in [
            "\u{85}", "\u{a0}", "\u{2028}", "\u{3000}", "\u{b}", "\u{c}", "\u{feff}",
        ] {
            match Line::parse(other, 2) {
                Line::Malformed { raw, .. } => assert_eq!(raw, other),
                line => panic!("{other:?} read as {line:?}"),
            }
        }
        let j = job(plan(
            Line::parse("\u{feff}{\"image\": \"a.jpg\"}\r\n", 1),
            &opts(),
        ));
        assert_eq!(j.paths(), ["a.jpg"]);
        // A BOM is only a BOM at the start of the file.
        assert!(matches!(
            Line::parse("\u{feff}{\"image\": \"a.jpg\"}", 2),
            Line::Malformed { .. }
        ));
    }

    #[test]
    fn outputs_are_recognised_as_results_of_their_inputs() {
        let o = opts();
        let input = row(r#"{"image": "a.jpg", "n": 1.0}"#);
        let out = job(plan(input.clone(), &o)).finish(Ok("x"), &o);
        assert!(is_output_of(&out, &input, &o));
        assert!(!is_output_of(
            &out,
            &row(r#"{"image": "b.jpg", "n": 1}"#),
            &o
        ));
        assert!(!is_output_of("{\"image\": \"a.jp", &input, &o));
        let bad = Line::parse("nope", 2);
        let (out, _, _) = done(plan(bad.clone(), &o));
        assert!(is_output_of(&out, &bad, &o));
        assert!(!is_output_of(&out, &Line::parse("other", 2), &o));
    }
}
