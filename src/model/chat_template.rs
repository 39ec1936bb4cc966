//! Chat templates: turning OpenAI-style messages into the prompt text a
//! model was trained on.
//!
//! The template comes from the GGUF's `tokenizer.chat_template` (Jinja, as
//! Hugging Face ships it) and is rendered with `minijinja`, with Python's
//! string methods (`.strip()`, `.startswith()`, ...) and the helpers these
//! templates call: `raise_exception(msg)` (its message reaches the client
//! as a 400) and `strftime_now(fmt)`. A file without a template, or with
//! one that does not compile, gets a fallback: ChatML when the vocabulary
//! has `<|im_start|>`/`<|im_end|>`, else plain `role: content` lines.

use minijinja::value::Serde;
use minijinja::{context, Environment, Error, ErrorKind, Value};
use serde::Serialize;

use super::{GgufFile, Tokenizer};

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the chat template refused the conversation: {0}")]
pub struct TemplateError(pub String);

/// Where the template came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateSource {
    Gguf,
    FallbackChatml,
    FallbackPlain,
}

const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
const PLAIN: &str = "{% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}";

/// Tokens that end an assistant turn in the common template families.
const END_OF_TURN: [&str; 6] = [
    "<|im_end|>",
    "<|eot_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
];

pub struct ChatTemplate {
    env: Environment<'static>,
    source: TemplateSource,
    bos: String,
    eos: String,
    stop_ids: Vec<u32>,
}

impl ChatTemplate {
    /// The file's template, or the fallback (with a warning when the file's
    /// own does not compile).
    pub fn from_gguf(gguf: &GgufFile, tokenizer: &Tokenizer) -> Self {
        let text = gguf
            .opt_str("tokenizer.chat_template")
            .ok()
            .flatten()
            .map(str::to_string);
        Self::new(text, tokenizer)
    }

    pub fn new(text: Option<String>, tokenizer: &Tokenizer) -> Self {
        let chatml = tokenizer.special_id("<|im_start|>").is_some()
            && tokenizer.special_id("<|im_end|>").is_some();
        let fallback = if chatml {
            (TemplateSource::FallbackChatml, CHATML)
        } else {
            (TemplateSource::FallbackPlain, PLAIN)
        };
        let mut env = environment();
        let source = match text {
            Some(t) => match env.add_template_owned("chat", t) {
                Ok(()) => TemplateSource::Gguf,
                Err(e) => {
                    tracing::warn!(
                        "the model's chat template does not compile ({e}); using a fallback"
                    );
                    env.add_template("chat", fallback.1)
                        .expect("fallback compiles");
                    fallback.0
                }
            },
            None => {
                env.add_template("chat", fallback.1)
                    .expect("fallback compiles");
                fallback.0
            }
        };
        let mut stop_ids = tokenizer.stop_ids();
        for t in END_OF_TURN {
            if let Some(id) = tokenizer.special_id(t) {
                if !stop_ids.contains(&id) {
                    stop_ids.push(id);
                }
            }
        }
        Self {
            env,
            source,
            bos: tokenizer.bos_text().to_string(),
            eos: tokenizer.eos_text().to_string(),
            stop_ids,
        }
    }

    pub fn source(&self) -> TemplateSource {
        self.source
    }

    /// Token ids that end an assistant turn: EOS, EOT and the end-of-turn
    /// tokens of the common template families that the vocabulary has.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// The prompt for `messages`, ending with the assistant's turn opener
    /// when `add_generation_prompt`.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| TemplateError(e.to_string()))?;
        template
            .render(context! {
                messages => Value::from(Serde(messages)),
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos,
                eos_token => &self.eos,
            })
            .map_err(|e| TemplateError(describe(&e)))
    }
}

/// The message of a `raise_exception`, or minijinja's description.
fn describe(e: &Error) -> String {
    match e.kind() {
        ErrorKind::InvalidOperation => e.detail().unwrap_or("invalid operation").to_string(),
        _ => e.to_string(),
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    // As transformers renders them.
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .expect("default delimiters"),
    );
    env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_function("strftime_now", |fmt: String| strftime_now(&fmt));
    env
}

/// The current UTC date and time formatted with the strftime codes chat
/// templates use (`%d %b %Y`, `%Y-%m-%d`, `%H:%M:%S`, `%B`, `%A`).
fn strftime_now(fmt: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_time(secs, fmt)
}

fn format_time(unix_secs: u64, fmt: &str) -> String {
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
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    let days = (unix_secs / 86_400) as i64;
    let secs_of_day = unix_secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let month_name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('b') => out.push_str(&month_name[..3]),
            Some('B') => out.push_str(month_name),
            Some('A') => out.push_str(DAYS[days.rem_euclid(7) as usize]),
            Some('H') => out.push_str(&format!("{:02}", secs_of_day / 3600)),
            Some('M') => out.push_str(&format!("{:02}", secs_of_day / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", secs_of_day % 60)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_like_strftime() {
        // 2024-07-23 14:05:09 UTC, a Tuesday (date -u -d @1721743509).
        assert_eq!(format_time(1_721_743_509, "%d %b %Y"), "23 Jul 2024");
        assert_eq!(
            format_time(1_721_743_509, "%A %Y-%m-%d %H:%M:%S %B %%"),
            "Tuesday 2024-07-23 14:05:09 July %"
        );
        assert_eq!(format_time(0, "%d %b %Y %A"), "01 Jan 1970 Thursday");
        assert_eq!(format_time(951_782_400, "%Y-%m-%d"), "2000-02-29");
    }
}
