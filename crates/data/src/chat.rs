//! Chat templates: the Jinja template a model folder carries (`tokenizer_config.json`'s
//! `chat_template`, or `chat_template.jinja` beside it) that turns a conversation into the text
//! the model was trained on, rendered as transformers' `apply_chat_template` renders it.
//!
//! transformers renders with jinja2 (`trim_blocks`, `lstrip_blocks`, loop controls), a `tojson`
//! filter that is Python's `json.dumps` (no HTML escaping, `", "` and `": "` separators), the
//! globals `raise_exception` and `strftime_now`, and the tokenizer's special tokens
//! (`bos_token`, `eos_token`, ...) as variables. minijinja, with the Python string and dict
//! methods templates call (`.strip()`, `.startswith()`, `.items()`, ...), renders the same text.
//! transformers' own `{% generation %}` ... `{% endgeneration %}` block, which marks the text
//! of assistant turns (`return_assistant_tokens_mask`, TRL's `assistant_only_loss`), becomes a
//! filter block here (the same whitespace control, the same body) that wraps its text in two
//! Unicode noncharacters; [`ChatTemplate::render_with_spans`] takes them out and returns where
//! the spans were, in characters, as transformers' `generation_indices`.

use std::path::{Path, PathBuf};

use minijinja::value::ValueKind;
use minijinja::{Environment, Error as JinjaError, ErrorKind, Value as JValue};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The file transformers 5 saves a template in, beside `tokenizer_config.json`.
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";

/// JSON text as a template value, its objects' keys kept in order (tools, messages).
pub fn parse_json(text: &str) -> std::result::Result<JValue, String> {
    serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))
}

/// One message of a conversation: a JSON object with a `role` and a `content` (TRL's
/// `is_conversational`), passed to the template as it is (other keys included, in their order:
/// `tojson` and Python's `str` of a message keep it).
#[derive(Debug, Clone, PartialEq)]
pub struct Message(pub JValue);

impl Message {
    /// A list of messages from JSON text, its objects' keys kept in order.
    pub fn parse_list(text: &str) -> std::result::Result<Vec<Message>, String> {
        Self::list_from_json(&parse_json(text)?)
    }

    /// A list of messages from JSON read in order ([`JValue`]'s `Deserialize`); the error says
    /// what is wrong.
    pub fn list_from_json(v: &JValue) -> std::result::Result<Vec<Message>, String> {
        if v.kind() != ValueKind::Seq {
            return Err(format!("must be a list of messages, got {}", py_repr(v)));
        }
        let items: Vec<JValue> = v.try_iter().map_err(|e| e.to_string())?.collect();
        if items.is_empty() {
            return Err("an empty list of messages".into());
        }
        items
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                let field = |k: &str| m.get_attr(k).ok().filter(|x| !x.is_undefined());
                match (m.kind(), field("role"), field("content")) {
                    (ValueKind::Map, Some(r), Some(_)) if r.kind() == ValueKind::String => {
                        Ok(Message(m))
                    }
                    (ValueKind::Map, Some(_), None) => {
                        Err(format!("message {i} has no \"content\""))
                    }
                    _ => Err(format!(
                        "message {i} must be an object with a string \"role\" and a \"content\", \
                         got {}",
                        py_repr(&m)
                    )),
                }
            })
            .collect()
    }
}

/// A compiled chat template with the special tokens it is rendered with.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// The template has `{% generation %}` blocks.
    marks_assistant: bool,
    /// The special tokens' strings (`bos_token`, `eos_token`, ...).
    specials: Map<String, Value>,
    /// Where the template came from, for messages.
    pub source: PathBuf,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChatTemplate({})", self.source.display())
    }
}

const NAME: &str = "chat_template";

/// Noncharacters (never in interchange text) around each `{% generation %}` block's output.
const GEN_OPEN: char = '\u{FDD0}';
const GEN_CLOSE: char = '\u{FDD1}';
const GEN_FILTER: &str = "lantern_generation";

/// The template with transformers' `{% generation %}` / `{% endgeneration %}` tags (any
/// whitespace control) turned into `{% filter lantern_generation %}` / `{% endfilter %}`,
/// and whether there were any.
fn rewrite_generation(template: &str) -> (String, bool) {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    let mut found = false;
    while let Some(at) = rest.find("{%") {
        out.push_str(&rest[..at]);
        let tag = &rest[at..];
        let Some(end) = tag.find("%}") else {
            out.push_str(tag);
            return (out, found);
        };
        let inner = &tag[2..end];
        let lead = if inner.starts_with(['-', '+']) {
            &inner[..1]
        } else {
            ""
        };
        let trail = if inner.len() > lead.len() && inner.ends_with(['-', '+']) {
            &inner[inner.len() - 1..]
        } else {
            ""
        };
        let word = inner[lead.len()..inner.len() - trail.len()].trim();
        let replaced = match word {
            "generation" => Some(format!("{{%{lead} filter {GEN_FILTER} {trail}%}}")),
            "endgeneration" => Some(format!("{{%{lead} endfilter {trail}%}}")),
            _ => None,
        };
        match replaced {
            Some(r) => {
                found = true;
                out.push_str(&r);
            }
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    (out, found)
}

/// The names of `tokenizer_config.json`'s special tokens, which transformers passes to the
/// template (its `special_tokens_map`).
const SPECIAL_KEYS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

impl ChatTemplate {
    /// Compiles `template` (read from `source`) with the special tokens of `tokenizer_config`
    /// (the parsed `tokenizer_config.json`, or an empty object).
    pub fn new(template: &str, tokenizer_config: &Value, source: &Path) -> Result<Self> {
        let mut env = Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .expect("the default delimiters"),
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        // Jinja writes `{{ x }}` as Python's str(x): True, None, ['a', {'b': 1}].
        env.set_formatter(|out, _state, v| {
            if v.is_undefined() {
                return Ok(());
            }
            let text = match v.kind() {
                ValueKind::String => v.as_str().unwrap_or_default().to_string(),
                _ => py_repr(v),
            };
            out.write_str(&text).map_err(JinjaError::from)
        });
        env.add_filter("tojson", tojson);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, JinjaError> {
                Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_function("strftime_now", |fmt: String| {
            strftime(&fmt, std::time::SystemTime::now())
        });
        env.add_filter(GEN_FILTER, |body: String| {
            format!("{GEN_OPEN}{body}{GEN_CLOSE}")
        });
        let (rewritten, marks_assistant) = rewrite_generation(template);
        env.add_template_owned(NAME, rewritten)
            .map_err(|e| Error::format(source, format!("chat template does not parse: {e:#}")))?;
        let mut specials = Map::new();
        for k in SPECIAL_KEYS {
            if let Some(s) = special_token(tokenizer_config, k) {
                specials.insert(k.into(), Value::String(s));
            }
        }
        Ok(Self {
            env,
            marks_assistant,
            specials,
            source: source.to_path_buf(),
        })
    }

    /// The template of a model folder: `chat_template.jinja`, else `tokenizer_config.json`'s
    /// `chat_template` (a string, or a list of named templates of which `default` is taken).
    /// `None` when the folder has neither.
    pub fn from_folder(dir: &Path) -> Result<Option<Self>> {
        Self::from_folder_config(dir, &read_tokenizer_config(dir)?)
    }

    /// [`ChatTemplate::from_folder`] with the folder's `tokenizer_config.json` already read
    /// ([`read_tokenizer_config`]).
    pub fn from_folder_config(dir: &Path, cfg: &Value) -> Result<Option<Self>> {
        let cfg_path = dir.join(crate::TOKENIZER_CONFIG_FILE);
        let file = dir.join(CHAT_TEMPLATE_FILE);
        if file.exists() {
            let t = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
            return Self::new(&t, cfg, &file).map(Some);
        }
        let template = match cfg.get("chat_template") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(named)) => named
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    Error::format(
                        &cfg_path,
                        "\"chat_template\" is a list of templates without one named \"default\"",
                    )
                })?
                .to_string(),
            Some(other) => {
                return Err(Error::format(
                    &cfg_path,
                    format!("\"chat_template\" must be a string, got {other}"),
                ))
            }
        };
        Self::new(&template, cfg, &cfg_path).map(Some)
    }

    /// The conversation as text (transformers' `apply_chat_template(messages, tokenize=False,
    /// add_generation_prompt=...)`).
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        Ok(self
            .render_with_spans(messages, None, add_generation_prompt)?
            .0)
    }

    /// Whether the template marks the assistant's text (`{% generation %}` blocks).
    pub fn marks_assistant(&self) -> bool {
        self.marks_assistant
    }

    /// [`ChatTemplate::render`] with the conversation's `tools` (a list of function schemas,
    /// transformers' `apply_chat_template(..., tools=...)`; `None` renders `tools` as None),
    /// and the (start, end) character ranges the template's `{% generation %}` blocks wrote
    /// (transformers' `generation_indices`).
    pub fn render_with_spans(
        &self,
        messages: &[Message],
        tools: Option<&JValue>,
        add_generation_prompt: bool,
    ) -> Result<(String, Vec<(usize, usize)>)> {
        let raw = self.render_marked(messages, tools, add_generation_prompt)?;
        let mut text = String::with_capacity(raw.len());
        let (mut spans, mut open, mut chars) = (Vec::new(), None, 0usize);
        let unbalanced = || {
            Error::format(
                &self.source,
                "rendering: unbalanced {% generation %} blocks (nested, or U+FDD0/U+FDD1 in a \
                 message)",
            )
        };
        for c in raw.chars() {
            match c {
                GEN_OPEN if open.is_none() => open = Some(chars),
                GEN_CLOSE => spans.push((open.take().ok_or_else(unbalanced)?, chars)),
                GEN_OPEN => return Err(unbalanced()),
                c => {
                    text.push(c);
                    chars += 1;
                }
            }
        }
        if open.is_some() {
            return Err(unbalanced());
        }
        Ok((text, spans))
    }

    fn render_marked(
        &self,
        messages: &[Message],
        tools: Option<&JValue>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let t = self.env.get_template(NAME).expect("added in new()");
        let mut ctx: std::collections::BTreeMap<String, JValue> = self
            .specials
            .iter()
            .map(|(k, v)| (k.clone(), JValue::from(v.as_str().unwrap_or_default())))
            .collect();
        let msgs: Vec<JValue> = messages.iter().map(|m| m.0.clone()).collect();
        ctx.insert("messages".into(), JValue::from(msgs));
        ctx.insert(
            "add_generation_prompt".into(),
            JValue::from(add_generation_prompt),
        );
        ctx.insert("tools".into(), tools.cloned().unwrap_or(JValue::from(())));
        ctx.insert("documents".into(), JValue::from(()));
        t.render(JValue::from(ctx))
            .map_err(|e| Error::format(&self.source, format!("rendering: {}", describe(&e))))
    }
}

/// The error's own message (the detail of `raise_exception`), with where it happened.
fn describe(e: &JinjaError) -> String {
    match (e.detail(), e.line()) {
        (Some(d), Some(l)) => format!("{d} (template line {l})"),
        (Some(d), None) => d.to_string(),
        _ => e.to_string(),
    }
}

/// A model folder's `tokenizer_config.json` as JSON (an empty object when it has none).
pub fn read_tokenizer_config(dir: &Path) -> Result<Value> {
    let path = dir.join(crate::TOKENIZER_CONFIG_FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice::<Value>(&b)
            .map_err(|e| Error::format(&path, format!("invalid JSON: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Value::Object(Map::new())),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// A special token of `tokenizer_config.json` (`eos_token`, ...): a string, or an object with
/// its `content`.
pub fn special_token(cfg: &Value, key: &str) -> Option<String> {
    match cfg.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// Python's `json.dumps(x, ensure_ascii=False, indent=indent, sort_keys=sort_keys)`, as
/// transformers' `tojson` filter.
fn tojson(v: JValue, kwargs: minijinja::value::Kwargs) -> std::result::Result<String, JinjaError> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort: Option<bool> = kwargs.get("sort_keys")?;
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    py_json(&v, indent, sort.unwrap_or(false), 0, &mut out)?;
    Ok(out)
}

/// A map's (key, value) pairs in their order.
fn entries(v: &JValue) -> std::result::Result<Vec<(JValue, JValue)>, JinjaError> {
    v.try_iter()?
        .map(|k| Ok((k.clone(), v.get_item(&k)?)))
        .collect()
}

fn py_json(
    v: &JValue,
    indent: Option<usize>,
    sort: bool,
    depth: usize,
    out: &mut String,
) -> std::result::Result<(), JinjaError> {
    // json.dumps: ", " and ": " without indent; "," and ": " with one, each item on its line.
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    let sep = if indent.is_some() { "," } else { ", " };
    let string = |s: &str| Value::String(s.to_string()).to_string();
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&v.to_string()),
        ValueKind::String => out.push_str(&string(v.as_str().unwrap_or_default())),
        ValueKind::Map => {
            let mut items = entries(v)?;
            if sort {
                items.sort_by_key(|a| a.0.to_string());
            }
            if items.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, (k, x)) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, depth + 1);
                out.push_str(&string(&k.to_string()));
                out.push_str(": ");
                py_json(x, indent, sort, depth + 1, out)?;
            }
            newline(out, depth);
            out.push('}');
        }
        _ => {
            let items: Vec<JValue> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, depth + 1);
                py_json(x, indent, sort, depth + 1, out)?;
            }
            newline(out, depth);
            out.push(']');
        }
    }
    Ok(())
}

/// Python's `repr` of a string: single quotes unless it holds one and no double quote.
fn py_str_repr(s: &str) -> String {
    let q = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::from(q);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(q);
    out
}

/// Python's `repr` of a value (what `str` gives for lists and dicts: their items' reprs).
fn py_repr(v: &JValue) -> String {
    match v.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::None => "None".into(),
        ValueKind::Bool => if v.is_true() { "True" } else { "False" }.into(),
        ValueKind::String => py_str_repr(v.as_str().unwrap_or_default()),
        ValueKind::Map => match entries(v) {
            Ok(items) => {
                let parts: Vec<String> = items
                    .iter()
                    .map(|(k, x)| format!("{}: {}", py_repr(k), py_repr(x)))
                    .collect();
                format!("{{{}}}", parts.join(", "))
            }
            Err(_) => v.to_string(),
        },
        ValueKind::Seq | ValueKind::Iterable => match v.try_iter() {
            Ok(items) => {
                let parts: Vec<String> = items.map(|x| py_repr(&x)).collect();
                format!("[{}]", parts.join(", "))
            }
            Err(_) => v.to_string(),
        },
        _ => v.to_string(),
    }
}

/// `datetime.now().strftime(fmt)` for the directives templates use (UTC: the date a model's
/// system prompt states).
fn strftime(fmt: &str, now: std::time::SystemTime) -> std::result::Result<String, JinjaError> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
    // 1970-01-01 was a Thursday.
    let weekday = DAYS[((days + 3).rem_euclid(7)) as usize];
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('B') => out.push_str(MONTHS[m as usize - 1]),
            Some('b') => out.push_str(&MONTHS[m as usize - 1][..3]),
            Some('A') => out.push_str(weekday),
            Some('a') => out.push_str(&weekday[..3]),
            Some('H') => out.push_str(&format!("{hh:02}")),
            Some('M') => out.push_str(&format!("{mm:02}")),
            Some('S') => out.push_str(&format!("{ss:02}")),
            Some('%') => out.push('%'),
            other => {
                return Err(JinjaError::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "strftime_now: unsupported directive %{}",
                        other.unwrap_or(' ')
                    ),
                ))
            }
        }
    }
    Ok(out)
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msgs(v: Value) -> Vec<Message> {
        Message::list_from_json(&serde_json::from_str(&v.to_string()).unwrap()).unwrap()
    }

    fn list(text: &str) -> std::result::Result<Vec<Message>, String> {
        Message::list_from_json(&serde_json::from_str(text).unwrap())
    }

    #[test]
    fn renders_with_trimmed_blocks_specials_and_python_methods() {
        let t = "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}\
                 {{ bos_token }}{% endif %}\n<|{{ m['role'] }}|>{{ m['content'].strip() }}\
                 {{ eos_token }}\n{% endfor %}\n{% if add_generation_prompt %}<|assistant|>{% endif %}";
        let cfg = json!({"bos_token": "<s>", "eos_token": {"content": "</s>", "special": true}});
        let c = ChatTemplate::new(t, &cfg, Path::new("x/tokenizer_config.json")).unwrap();
        let m = msgs(
            json!([{"role": "user", "content": " hi "}, {"role": "assistant", "content": "yo"}]),
        );
        assert_eq!(
            c.render(&m, false).unwrap(),
            "<s><|user|>hi</s>\n<|assistant|>yo</s>\n"
        );
        assert_eq!(
            c.render(&m[..1], true).unwrap(),
            "<s><|user|>hi</s>\n<|assistant|>"
        );
    }

    #[test]
    fn raise_exception_tojson_and_loop_controls() {
        let t = "{% for m in messages %}{% if m.role == 'skip' %}{% continue %}{% endif %}\
                 {% if m.role == 'bad' %}{{ raise_exception('roles must alternate') }}{% endif %}\
                 {{ m | tojson }}|{% endfor %}";
        let c = ChatTemplate::new(t, &json!({}), Path::new("t.jinja")).unwrap();
        let m = msgs(
            json!([{"role": "user", "content": "a<b", "n": [1, 2.5]}, {"role": "skip", "content": ""}]),
        );
        assert_eq!(
            c.render(&m, false).unwrap(),
            "{\"content\": \"a<b\", \"n\": [1, 2.5], \"role\": \"user\"}|"
        );
        let bad = msgs(json!([{"role": "bad", "content": "x"}]));
        let e = c.render(&bad, false).unwrap_err().to_string();
        assert!(
            e.contains("t.jinja") && e.contains("roles must alternate"),
            "{e}"
        );
        let e = ChatTemplate::new("{% if %}", &json!({}), Path::new("t.jinja"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.jinja: chat template does not parse"), "{e}");
    }

    #[test]
    fn folders_give_their_template() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ChatTemplate::from_folder(dir.path()).unwrap().is_none());
        let cfg = dir.path().join("tokenizer_config.json");
        std::fs::write(
            &cfg,
            r#"{"eos_token": "E", "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D{{ eos_token }}"}]}"#,
        )
        .unwrap();
        let m = msgs(json!([{"role": "user", "content": "x"}]));
        let t = ChatTemplate::from_folder(dir.path()).unwrap().unwrap();
        assert_eq!(t.render(&m, false).unwrap(), "DE");
        std::fs::write(
            dir.path().join(CHAT_TEMPLATE_FILE),
            "J{{ messages | length }}",
        )
        .unwrap();
        let t = ChatTemplate::from_folder(dir.path()).unwrap().unwrap();
        assert_eq!(t.render(&m, false).unwrap(), "J1");
        assert!(list(r#"[{"role": "user"}]"#)
            .unwrap_err()
            .contains("no \"content\""));
        assert!(list("[]").unwrap_err().contains("empty"));
        assert!(list(r#"{"role": "user"}"#).is_err());
        assert!(list(r#"[{"role": 3, "content": "x"}]"#).is_err());
    }

    #[test]
    fn values_print_as_python_and_keys_keep_their_order() {
        let t =
            "{{ messages[0] }}|{{ add_generation_prompt }}|{{ none }}|{{ messages[0] | tojson }}";
        let c = ChatTemplate::new(t, &json!({}), Path::new("t")).unwrap();
        let m = list(r#"[{"role": "user", "content": [{"type": "text", "text": "it's"}], "n": 2.0, "ok": true}]"#)
            .unwrap();
        assert_eq!(
            c.render(&m, false).unwrap(),
            "{'role': 'user', 'content': [{'type': 'text', 'text': \"it's\"}], 'n': 2.0, 'ok': True}|False|None|\
             {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"it's\"}], \"n\": 2.0, \"ok\": true}"
        );
    }

    #[test]
    fn generation_blocks_give_character_spans() {
        let t = "{% for m in messages %}{{ m.role }}: \
                 {%- if m.role == 'assistant' %}{%- generation -%} {{ m.content }}é{% endgeneration %}\
                 {%- else %} {{ m.content }}{% endif %}\n{% endfor %}";
        let c = ChatTemplate::new(t, &json!({}), Path::new("t")).unwrap();
        assert!(c.marks_assistant());
        let m = list(
            r#"[{"role": "user", "content": "ça"}, {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "x"}, {"role": "assistant", "content": "yo"}]"#,
        )
        .unwrap();
        let (text, spans) = c.render_with_spans(&m, None, false).unwrap();
        // As transformers' render_jinja_template(..., return_assistant_tokens_mask=True) gives.
        assert_eq!(text, "user: çaassistant:okéuser: xassistant:yoé");
        // Characters, not bytes: "ç" and "é" count one each.
        assert_eq!(spans, [(18, 21), (38, 41)]);
        let chars: Vec<char> = text.chars().collect();
        assert_eq!(chars[18..21].iter().collect::<String>(), "oké");
        assert_eq!(c.render(&m, false).unwrap(), text);
        let plain =
            ChatTemplate::new("{{ messages | length }}", &json!({}), Path::new("t")).unwrap();
        assert!(!plain.marks_assistant());
        assert_eq!(
            rewrite_generation("a{%- generation +%}b{%+endgeneration-%}{% if x %}"),
            (
                "a{%- filter lantern_generation +%}b{%+ endfilter -%}{% if x %}".to_string(),
                true
            )
        );
    }

    #[test]
    fn strftime_writes_the_date() {
        // 2024-07-23 12:34:56 UTC, a Tuesday.
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_721_738_096);
        assert_eq!(
            strftime("%d %b %Y|%B %A %a %m %y %H:%M:%S %%", t).unwrap(),
            "23 Jul 2024|July Tuesday Tue 07 24 12:34:56 %"
        );
        assert!(strftime("%Q", t).is_err());
    }
}
