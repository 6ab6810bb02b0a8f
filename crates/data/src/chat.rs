//! Chat templates: the Jinja template a model folder carries (`tokenizer_config.json`'s
//! `chat_template`, or `chat_template.jinja` beside it) that turns a conversation into the text
//! the model was trained on, rendered as transformers' `apply_chat_template` renders it.
//!
//! transformers renders with jinja2 (`trim_blocks`, `lstrip_blocks`, loop controls), a `tojson`
//! filter that is Python's `json.dumps` (no HTML escaping, `", "` and `": "` separators), the
//! globals `raise_exception` and `strftime_now`, and the tokenizer's special tokens
//! (`bos_token`, `eos_token`, ...) as variables. minijinja, with the Python string and dict
//! methods templates call (`.strip()`, `.startswith()`, `.items()`, ...), renders the same text.
//! Not supported: `{% generation %}` blocks (transformers' assistant-token masks) — a template
//! that uses them fails to parse, and the error says so.

use std::path::{Path, PathBuf};

use minijinja::{Environment, Error as JinjaError, ErrorKind, Value as JValue};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The file transformers 5 saves a template in, beside `tokenizer_config.json`.
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";

/// One message of a conversation: a JSON object with a `role` and a `content` (TRL's
/// `is_conversational`), passed to the template as it is (other keys included).
#[derive(Debug, Clone, PartialEq)]
pub struct Message(pub Map<String, Value>);

impl Message {
    /// A list of messages from JSON; the error says what is wrong.
    pub fn list_from_json(v: &Value) -> std::result::Result<Vec<Message>, String> {
        let Value::Array(items) = v else {
            return Err(format!("must be a list of messages, got {v}"));
        };
        if items.is_empty() {
            return Err("an empty list of messages".into());
        }
        items
            .iter()
            .enumerate()
            .map(|(i, m)| match m {
                Value::Object(o) if o.get("role").is_some_and(Value::is_string) => {
                    if o.contains_key("content") {
                        Ok(Message(o.clone()))
                    } else {
                        Err(format!("message {i} has no \"content\""))
                    }
                }
                _ => Err(format!(
                    "message {i} must be an object with a string \"role\" and a \"content\", got \
                     {m}"
                )),
            })
            .collect()
    }
}

/// A compiled chat template with the special tokens it is rendered with.
pub struct ChatTemplate {
    env: Environment<'static>,
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
        env.add_template_owned(NAME, template.to_string())
            .map_err(|e| {
                let hint =
                    if template.contains("{% generation") || template.contains("{%- generation") {
                        " (the template marks assistant tokens with {% generation %}, which is \
                     transformers' own extension of Jinja)"
                    } else {
                        ""
                    };
                Error::format(source, format!("chat template does not parse: {e:#}{hint}"))
            })?;
        let mut specials = Map::new();
        for k in SPECIAL_KEYS {
            if let Some(s) = special_token(tokenizer_config, k) {
                specials.insert(k.into(), Value::String(s));
            }
        }
        Ok(Self {
            env,
            specials,
            source: source.to_path_buf(),
        })
    }

    /// The template of a model folder: `chat_template.jinja`, else `tokenizer_config.json`'s
    /// `chat_template` (a string, or a list of named templates of which `default` is taken).
    /// `None` when the folder has neither.
    pub fn from_folder(dir: &Path) -> Result<Option<Self>> {
        let cfg_path = dir.join(crate::TOKENIZER_CONFIG_FILE);
        let cfg = match std::fs::read(&cfg_path) {
            Ok(b) => serde_json::from_slice::<Value>(&b)
                .map_err(|e| Error::format(&cfg_path, format!("invalid JSON: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Value::Object(Map::new()),
            Err(e) => return Err(Error::io(&cfg_path, e)),
        };
        let file = dir.join(CHAT_TEMPLATE_FILE);
        if file.exists() {
            let t = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
            return Self::new(&t, &cfg, &file).map(Some);
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
        Self::new(&template, &cfg, &cfg_path).map(Some)
    }

    /// The conversation as text (transformers' `apply_chat_template(messages, tokenize=False,
    /// add_generation_prompt=...)`).
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let t = self.env.get_template(NAME).expect("added in new()");
        let mut ctx = self.specials.clone();
        let msgs: Vec<Value> = messages
            .iter()
            .map(|m| Value::Object(m.0.clone()))
            .collect();
        ctx.insert("messages".into(), Value::Array(msgs));
        ctx.insert(
            "add_generation_prompt".into(),
            Value::Bool(add_generation_prompt),
        );
        ctx.insert("tools".into(), Value::Null);
        ctx.insert("documents".into(), Value::Null);
        t.render(JValue::from(minijinja::value::Serde(&ctx)))
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

/// A special token of `tokenizer_config.json`: a string, or an object with its `content`.
fn special_token(cfg: &Value, key: &str) -> Option<String> {
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
    let json = serde_json::to_value(&v)
        .map_err(|e| JinjaError::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let mut out = String::new();
    py_json(&json, indent, sort.unwrap_or(false), 0, &mut out);
    Ok(out)
}

fn py_json(v: &Value, indent: Option<usize>, sort: bool, depth: usize, out: &mut String) {
    // json.dumps: ", " and ": " without indent; "," and ": " with one, each item on its line.
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    let sep = if indent.is_some() { "," } else { ", " };
    match v {
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, depth + 1);
                py_json(x, indent, sort, depth + 1, out);
            }
            newline(out, depth);
            out.push(']');
        }
        Value::Object(o) if !o.is_empty() => {
            out.push('{');
            let mut keys: Vec<&String> = o.keys().collect();
            if sort {
                keys.sort();
            }
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, depth + 1);
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(": ");
                py_json(&o[k], indent, sort, depth + 1, out);
            }
            newline(out, depth);
            out.push('}');
        }
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().expect("an f64");
            // Shortest round trip, as Python's repr (1.0, 2.5; 1e20 where Python writes 1e+20).
            out.push_str(&format!("{f:?}"));
        }
        other => out.push_str(&other.to_string()),
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
        Message::list_from_json(&v).unwrap()
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
        let e = ChatTemplate::new(
            "{% generation %}x{% endgeneration %}",
            &json!({}),
            Path::new("t"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("{% generation %}"), "{e}");
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
        assert!(Message::list_from_json(&json!([{"role": "user"}])).is_err());
        assert!(Message::list_from_json(&json!([])).is_err());
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
