//! From a user's words to token ids: the model's own chat template (Jinja, via minijinja), the
//! expansion of each `<image>` into its tile layout, and the tokenizer (`tokenizer.json`).

use crate::error::{Error, Result};
// The preprocessor decides the grid; the prompt spells it out in image tokens.
pub use crate::preprocess::ImageLayout;
use minijinja::{context, Environment};
use serde_json::{json, Value};
use tokenizers::Tokenizer;

/// How the chat template expects message contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentStyle {
    /// A list of `{"type": "image"}` / `{"type": "text", "text": ...}` items (SmolVLM).
    Items,
    /// A plain string (text-only chat models such as SmolLM2).
    Text,
}

pub struct Prompter {
    tokenizer: Tokenizer,
    template: String,
    bos_token: String,
    eos_token: String,
    style: ContentStyle,
}

/// The most instructions one rendering of a chat template may run. A template comes with the
/// model's files, so it is input like any other: one with nested loops once ran past a minute.
/// SmolVLM's template runs 64 instructions for a caption's one message and SmolLM2's 38 for a
/// question; a million stop a runaway template in well under a second. The vendored minijinja
/// also charges one unit for every 16 bytes a template makes or writes, so the same fuel bounds
/// its memory (16 MB): one instruction can double a string.
const TEMPLATE_FUEL: u64 = 1_000_000;
/// The longest rendered prompt, in bytes: far beyond any model's context (32k tokens are some
/// 128 KB of text), and small enough that a template cannot fill the memory with its output.
const MAX_RENDERED: usize = 4 << 20;

/// Pays from the template's fuel for what a Python string method is about to make, where that
/// grows with its arguments rather than with its input: `s.replace(a, b)` writes `b` for
/// every match, `s.join(items)` writes `s` between every two items. (The vendored minijinja
/// charges its own filters the same way, and every value made after the fact: see
/// `vendor/README.md`.)
fn pay_for_method(
    state: &minijinja::State,
    value: &minijinja::Value,
    method: &str,
    args: &[minijinja::Value],
) -> std::result::Result<(), minijinja::Error> {
    let Some(s) = value.as_str() else {
        return Ok(());
    };
    let bytes = match (method, args) {
        ("replace", [from, to, ..]) => {
            let (from, to) = (from.as_str().unwrap_or(""), to.as_str().unwrap_or(""));
            let matches = if from.is_empty() {
                s.chars().count() + 1
            } else {
                s.matches(from).count()
            };
            matches.saturating_mul(to.len())
        }
        ("join", [items, ..]) => items.len().unwrap_or(0).saturating_mul(s.len()),
        _ => 0,
    };
    state.track_bytes(bytes)
}

/// The tokens of the Idefics3 image layout.
const IMAGE: &str = "<image>";
const FAKE: &str = "<fake_token_around_image>";
const GLOBAL: &str = "<global-img>";
/// Qwen2-VL's image placeholder: one per merged patch.
const IMAGE_PAD: &str = "<|image_pad|>";

impl Prompter {
    /// `tokenizer_json`: a `tokenizer.json`; `template`: the Jinja chat template;
    /// `tokenizer_config`: `tokenizer_config.json` (for `bos_token` / `eos_token`), if any.
    pub fn new(
        tokenizer_json: &str,
        template: String,
        tokenizer_config: Option<&str>,
        style: ContentStyle,
    ) -> Result<Self> {
        let tokenizer: Tokenizer = tokenizer_json
            .parse()
            .map_err(|e| Error::Prompt(format!("tokenizer.json: {e}")))?;
        let special = |key: &str| -> Option<String> {
            let cfg: Value = serde_json::from_str(tokenizer_config?).ok()?;
            match cfg.get(key)? {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
                _ => None,
            }
        };
        let prompter = Self {
            bos_token: special("bos_token").unwrap_or_default(),
            eos_token: special("eos_token").unwrap_or_default(),
            tokenizer,
            template,
            style,
        };
        // Fail at load time, not at the first caption, if the template does not compile.
        prompter.environment()?;
        Ok(prompter)
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn environment(&self) -> Result<Environment<'_>> {
        let mut env = Environment::new();
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_unknown_method_callback(|state, value, method, args| {
            pay_for_method(state, value, method, args)?;
            minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
        });
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template("chat", &self.template)
            .map_err(|e| Error::Prompt(format!("chat template: {e}")))?;
        Ok(env)
    }

    /// Renders one exchange: an optional system turn, then a user turn with `images` image
    /// placeholders first and `user` text after them, and the generation prompt.
    pub fn render(&self, system: Option<&str>, user: &str, images: usize) -> Result<String> {
        let content = |text: &str, images: usize| -> Value {
            match self.style {
                ContentStyle::Text => Value::String(text.to_string()),
                ContentStyle::Items => {
                    let mut items: Vec<Value> =
                        (0..images).map(|_| json!({"type": "image"})).collect();
                    items.push(json!({"type": "text", "text": text}));
                    Value::Array(items)
                }
            }
        };
        if images > 0 && self.style == ContentStyle::Text {
            return Err(Error::Invalid(
                "this is a text-only model; it cannot take images".into(),
            ));
        }
        let mut messages = Vec::new();
        if let Some(system) = system.filter(|s| !s.is_empty()) {
            messages.push(json!({"role": "system", "content": content(system, 0)}));
        }
        messages.push(json!({"role": "user", "content": content(user, images)}));
        self.render_messages(&Value::Array(messages), true)
    }

    /// Renders any conversation (a JSON list of `{role, content}` messages, in the form the
    /// template expects) with the model's chat template.
    pub fn render_messages(&self, messages: &Value, add_generation_prompt: bool) -> Result<String> {
        let env = self.environment()?;
        let template = env
            .get_template("chat")
            .map_err(|e| Error::Prompt(format!("chat template: {e}")))?;
        let mut out = Capped::default();
        template
            .render_captured_to(
                context! {
                    messages => messages,
                    add_generation_prompt => add_generation_prompt,
                    bos_token => self.bos_token,
                    eos_token => self.eos_token,
                },
                &mut out,
            )
            .map_err(|e| {
                let why = if e.kind() == minijinja::ErrorKind::OutOfFuel {
                    format!(
                        "it ran over {TEMPLATE_FUEL} instructions, or made over {} MB, \
                         without finishing (the model's chat_template.json, \
                         tokenizer_config.json or GGUF tokenizer.chat_template)",
                        TEMPLATE_FUEL * minijinja::BYTES_PER_FUEL as u64 / 1_000_000
                    )
                } else if out.overflowed {
                    format!("its output grew over {} MB", MAX_RENDERED >> 20)
                } else {
                    e.to_string()
                };
                Error::Prompt(format!("rendering the chat template: {why}"))
            })?;
        String::from_utf8(out.bytes)
            .map_err(|_| Error::Prompt("the chat template's output is not UTF-8".into()))
    }

    /// Replaces the n-th `<image>` of `rendered` with the token layout of the n-th image.
    pub fn expand_images(
        rendered: &str,
        layouts: &[ImageLayout],
        image_seq_len: usize,
    ) -> Result<String> {
        let pieces: Vec<&str> = rendered.split(IMAGE).collect();
        if pieces.len() != layouts.len() + 1 {
            return Err(Error::Prompt(format!(
                "the rendered prompt has {} image placeholders for {} images",
                pieces.len() - 1,
                layouts.len()
            )));
        }
        let mut out = String::from(pieces[0]);
        for (layout, rest) in layouts.iter().zip(&pieces[1..]) {
            out.push_str(&image_tokens(*layout, image_seq_len));
            out.push_str(rest);
        }
        Ok(out)
    }

    /// Replaces the n-th `<|image_pad|>` of `rendered` with `pads[n]` of them, as Qwen2-VL's
    /// processor does: the chat template writes one pad per image and the model takes one per
    /// merged patch (`t·h·w / merge_size²` of the image's grid).
    pub fn expand_image_pads(rendered: &str, pads: &[usize]) -> Result<String> {
        let pieces: Vec<&str> = rendered.split(IMAGE_PAD).collect();
        if pieces.len() != pads.len() + 1 {
            return Err(Error::Prompt(format!(
                "the rendered prompt has {} image pads for {} images",
                pieces.len() - 1,
                pads.len()
            )));
        }
        let mut out = String::from(pieces[0]);
        for (&n, rest) in pads.iter().zip(&pieces[1..]) {
            out.push_str(&IMAGE_PAD.repeat(n));
            out.push_str(rest);
        }
        Ok(out)
    }

    /// Token ids of `text`, with the tokenizer's own special-token post-processing (as
    /// transformers' processor calls it).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::Prompt(format!("tokenizing: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids` with special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| Error::Prompt(format!("decoding: {e}")))
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }
}

/// The text one image stands for in the prompt (transformers' `get_image_prompt_string`).
pub fn image_tokens(layout: ImageLayout, image_seq_len: usize) -> String {
    let images = IMAGE.repeat(image_seq_len);
    let global = format!("{FAKE}{GLOBAL}{images}{FAKE}");
    if layout.rows == 0 && layout.cols == 0 {
        return global;
    }
    let mut s = String::new();
    for r in 1..=layout.rows {
        for c in 1..=layout.cols {
            s.push_str(&format!("{FAKE}<row_{r}_col_{c}>{images}"));
        }
        s.push('\n');
    }
    s.push('\n');
    s.push_str(&global);
    s
}

/// The chat template of a model folder: `chat_template.json`, else `tokenizer_config.json`'s
/// `chat_template` (a string, or a list of named templates of which "default" is used).
pub fn find_chat_template(
    chat_template_json: Option<&str>,
    tokenizer_config: Option<&str>,
) -> Result<Option<String>> {
    fn pick(value: &Value) -> Option<String> {
        match value {
            Value::String(s) => Some(s.clone()),
            Value::Array(list) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .or_else(|| list.first())
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(str::to_string),
            _ => None,
        }
    }
    for (file, text) in [
        ("chat_template.json", chat_template_json),
        ("tokenizer_config.json", tokenizer_config),
    ] {
        let Some(text) = text else { continue };
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::config(file, format!("not valid JSON: {e}")))?;
        if let Some(t) = value.get("chat_template").and_then(pick) {
            return Ok(Some(t));
        }
    }
    Ok(None)
}

/// A rendering's output, refused once it would grow past [`MAX_RENDERED`].
#[derive(Default)]
struct Capped {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + bytes.len() > MAX_RENDERED {
            self.overflowed = true;
            return Err(std::io::Error::other("the rendered prompt is too long"));
        }
        self.bytes.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_tile_layout() {
        let s = image_tokens(ImageLayout { rows: 0, cols: 0 }, 2);
        assert_eq!(
            s,
            "<fake_token_around_image><global-img><image><image><fake_token_around_image>"
        );
    }

    #[test]
    fn split_layout_rows_then_global() {
        let s = image_tokens(ImageLayout { rows: 2, cols: 1 }, 1);
        assert_eq!(
            s,
            "<fake_token_around_image><row_1_col_1><image>\n\
             <fake_token_around_image><row_2_col_1><image>\n\
             \n<fake_token_around_image><global-img><image><fake_token_around_image>"
        );
    }

    #[test]
    fn expansion_counts_must_agree() {
        let one = ImageLayout { rows: 0, cols: 0 };
        assert!(Prompter::expand_images("a<image>b", &[one, one], 1).is_err());
        let s = Prompter::expand_images("a<image>b", &[one], 1).unwrap();
        assert!(s.starts_with("a<fake_token_around_image>") && s.ends_with("b"));
    }

    #[test]
    fn image_pads_expand_in_order_and_must_agree() {
        let s = Prompter::expand_image_pads("a<|image_pad|>b<|image_pad|>c", &[2, 1]).unwrap();
        assert_eq!(s, "a<|image_pad|><|image_pad|>b<|image_pad|>c");
        assert!(Prompter::expand_image_pads("a<|image_pad|>b", &[1, 1]).is_err());
        assert!(Prompter::expand_image_pads("ab", &[1]).is_err());
        assert_eq!(Prompter::expand_image_pads("ab", &[]).unwrap(), "ab");
    }

    #[test]
    fn template_lookup_order() {
        let t = find_chat_template(
            Some(r#"{"chat_template":"A"}"#),
            Some(r#"{"chat_template":"B"}"#),
        )
        .unwrap();
        assert_eq!(t.as_deref(), Some("A"));
        let t = find_chat_template(None, Some(r#"{"chat_template":[{"name":"tool","template":"T"},{"name":"default","template":"D"}]}"#)).unwrap();
        assert_eq!(t.as_deref(), Some("D"));
        assert_eq!(find_chat_template(None, Some("{}")).unwrap(), None);
    }

    /// A prompter with tiny-b's tokenizer and `template`.
    fn prompter(template: &str) -> Prompter {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-b");
        let tokenizer = std::fs::read_to_string(dir.join("tokenizer.json")).expect("tokenizer");
        Prompter::new(&tokenizer, template.into(), None, ContentStyle::Text).expect("prompter")
    }

    #[test]
    fn a_template_that_would_run_for_ever_is_stopped() {
        // 10^10 iterations: hours, without a bound.
        let nested =
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        let err = prompter(nested)
            .render(None, "hi", 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ran over 1000000 instructions"), "{err}");
    }

    #[test]
    fn a_template_cannot_fill_the_memory_with_its_output() {
        // 1,000 strings of 1 MB: 1 GB of output.
        let flood = "{% for i in range(1000) %}{{ 'x' * 1000000 }}{% endfor %}";
        let err = prompter(flood)
            .render(None, "hi", 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("its output grew over 4 MB"), "{err}");
    }

    /// Each made terabytes, or hung, in a few instructions: a string, list or nesting doubled in
    /// a loop or a recursive macro, or one filter or method told to make a huge value. The
    /// vendored minijinja's fuel pays for bytes made, so each is an error, in well under a
    /// second (the slowest here about 0.2 s in a release build).
    #[test]
    fn a_template_cannot_make_more_than_its_fuel_pays_for() {
        let doubling = |step: &str| {
            format!(
                "{{% set ns = namespace(s='ab', l=[1]) %}}{{% for i in range(60) %}}\
                 {{% set {step} %}}{{% endfor %}}{{{{ ns.s|length }}}}{{{{ ns.l|length }}}}"
            )
        };
        let big = "{% set b = 'a' * 1000000 %}";
        let hostile = [
            doubling("ns.s = ns.s ~ ns.s"),
            doubling("ns.s = ns.s + ns.s"),
            doubling("ns.s = '%s%s'|format(ns.s, ns.s)"),
            doubling("ns.s = '{}{}'.format(ns.s, ns.s)"),
            doubling("ns.s = [ns.s, ns.s]|join"),
            doubling("ns.s = ns.s|replace('a', 'aa')"),
            doubling("ns.s = ns.s|tojson|tojson"),
            doubling("ns.s = (ns.s, ns.s)|string"),
            doubling("ns.l = ns.l + ns.l"),
            doubling("ns.l = [ns.l, ns.l]"),
            "{% macro f(s, n) %}{% if n > 0 %}{{ f(s ~ s, n - 1) }}{% else %}{{ s|length }}\
             {% endif %}{% endmacro %}{{ f('ab', 60) }}"
                .into(),
            "{% set ns = namespace(s='a' * 1000000) %}{% for i in range(100000) %}\
             {% set ns.s = ns.s ~ 'b' %}{% endfor %}"
                .into(),
            "{% set ns = namespace(l=[]) %}{% for i in range(400) %}{% for j in range(400) %}\
             {% set ns.l = [ns.l] %}{% endfor %}{% endfor %}"
                .into(),
            format!("{big}{{{{ b|replace('a', b)|length }}}}"),
            format!("{big}{{{{ b.replace('a', b)|length }}}}"),
            format!("{big}{{{{ b|list|join(b)|length }}}}"),
            format!("{big}{{{{ b.join(b|list)|length }}}}"),
            "{{ ([1] * 100000000)|list|length }}".into(),
            "{{ ' x'|indent(10**13) }}".into(),
            "{{ '%1000000000000s'|format('a') }}".into(),
            "{{ '{:>1000000000000}'.format('a') }}".into(),
            "{{ 'abc'|batch(10**12)|list }}".into(),
            "{{ 'abc'|slice(10**12)|list }}".into(),
            "{{ [1, [2]]|tojson(indent=10**9) }}".into(),
        ];
        for template in hostile {
            let err = prompter(&template)
                .render(None, "hi", 0)
                .expect_err(&template)
                .to_string();
            assert!(
                err.contains("made over 16 MB") || err.contains(" over "),
                "{template}: {err}"
            );
        }
    }

    #[test]
    fn an_ordinary_template_renders_within_the_bounds() {
        // A long conversation through a loop per message, as the published templates are.
        let template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}\
                        {% if add_generation_prompt %}<|assistant|>{% endif %}";
        let p = prompter(template);
        let messages: Vec<Value> = (0..2000)
            .map(|i| json!({"role": "user", "content": format!("message {i}")}))
            .collect();
        let out = p
            .render_messages(&Value::Array(messages), true)
            .expect("renders");
        assert!(out.starts_with("<|user|>message 0\n") && out.ends_with("<|assistant|>"));
    }
}
