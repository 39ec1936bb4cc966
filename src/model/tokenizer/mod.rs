//! The tokenizer, built from GGUF metadata alone.
//!
//! Two vocabulary kinds: `llama` (SentencePiece with scores and `<0xNN>`
//! byte fallback, encoded by [`spm::SpmEncoder`]) and `gpt2` (byte-level BPE
//! with merges, encoded by the `tokenizers` crate from candle's GGUF
//! conversion). Both decode through one table of token bytes, so decoding
//! and streaming behave the same for either kind. Special tokens (control
//! and user-defined) in the text are matched literally when asked to.

pub mod byte_level;
pub mod spm;
pub mod stream;

use candle_core::quantized::tokenizer::TokenizerFromGguf;

use super::error::LoadError;
use super::gguf::GgufFile;
use spm::SpmEncoder;
pub use stream::Utf8Stream;

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenType {
    fn from_code(code: f32) -> Self {
        match code as i64 {
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => Self::Normal,
        }
    }
}

/// Which vocabulary kind the file carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VocabKind {
    SentencePiece,
    BytePairGpt2,
}

enum Engine {
    Spm {
        encoder: Box<SpmEncoder>,
        add_space_prefix: bool,
    },
    Bpe(Box<tokenizers::Tokenizer>),
}

/// A tokenizer for one model.
pub struct Tokenizer {
    engine: Engine,
    tokens: Vec<String>,
    types: Vec<TokenType>,
    /// What each token contributes to decoded text.
    bytes: Vec<Vec<u8>>,
    /// Control and user-defined token texts, longest first.
    specials: Vec<(String, u32)>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    add_bos: bool,
}

impl Tokenizer {
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, LoadError> {
        let model = gguf.str("tokenizer.ggml.model")?;
        let kind = match model {
            "llama" => VocabKind::SentencePiece,
            "gpt2" => VocabKind::BytePairGpt2,
            other => {
                return Err(LoadError::InvalidMetadata {
                    key: "tokenizer.ggml.model".into(),
                    reason: format!("`{other}` is not supported (supported: llama, gpt2)"),
                })
            }
        };
        let tokens: Vec<String> = gguf
            .str_array("tokenizer.ggml.tokens")?
            .into_iter()
            .map(str::to_string)
            .collect();
        let n = tokens.len();
        let types: Vec<TokenType> = match gguf.opt_f32_array("tokenizer.ggml.token_type")? {
            Some(codes) if codes.len() == n => {
                codes.into_iter().map(TokenType::from_code).collect()
            }
            Some(codes) => {
                return Err(LoadError::InvalidMetadata {
                    key: "tokenizer.ggml.token_type".into(),
                    reason: format!("has {} entries, the vocabulary has {n}", codes.len()),
                })
            }
            None => vec![TokenType::Normal; n],
        };
        let id = |key: &str| -> Result<Option<u32>, LoadError> {
            match gguf.opt_usize(key)? {
                Some(i) if i < n => Ok(Some(i as u32)),
                Some(i) => Err(LoadError::InvalidMetadata {
                    key: key.into(),
                    reason: format!("token id {i} is outside the vocabulary of {n} tokens"),
                }),
                None => Ok(None),
            }
        };
        let bos = id("tokenizer.ggml.bos_token_id")?;
        let eos = id("tokenizer.ggml.eos_token_id")?;
        let eot = id("tokenizer.ggml.eot_token_id")?;
        let unk = id("tokenizer.ggml.unknown_token_id")?;
        let add_bos = gguf
            .opt_bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(kind == VocabKind::SentencePiece);

        let bytes = tokens
            .iter()
            .zip(&types)
            .map(|(t, ty)| token_bytes(kind, t, *ty))
            .collect();
        let mut specials: Vec<(String, u32)> = tokens
            .iter()
            .zip(&types)
            .enumerate()
            .filter(|(_, (t, ty))| {
                matches!(ty, TokenType::Control | TokenType::UserDefined) && !t.is_empty()
            })
            .map(|(i, (t, _))| (t.clone(), i as u32))
            .collect();
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));

        let engine = match kind {
            VocabKind::SentencePiece => {
                let scores = gguf
                    .opt_f32_array("tokenizer.ggml.scores")?
                    .unwrap_or_else(|| vec![0.0; n]);
                Engine::Spm {
                    encoder: Box::new(SpmEncoder::new(&tokens, scores, unk)),
                    add_space_prefix: gguf
                        .opt_bool("tokenizer.ggml.add_space_prefix")?
                        .unwrap_or(true),
                }
            }
            VocabKind::BytePairGpt2 => Engine::Bpe(Box::new(bpe_from_gguf(gguf)?)),
        };
        Ok(Self {
            engine,
            tokens,
            types,
            bytes,
            specials,
            bos,
            eos,
            eot,
            add_bos,
        })
    }

    pub fn kind(&self) -> VocabKind {
        match self.engine {
            Engine::Spm { .. } => VocabKind::SentencePiece,
            Engine::Bpe(_) => VocabKind::BytePairGpt2,
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// Whether the model expects a BOS token before a prompt.
    pub fn adds_bos(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }

    /// Token ids that end a generation: EOS and end-of-turn.
    pub fn stop_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = [self.eos, self.eot].into_iter().flatten().collect();
        ids.dedup();
        ids
    }

    /// The id of a control or user-defined token by its text (`<|im_end|>`).
    pub fn special_id(&self, text: &str) -> Option<u32> {
        self.specials
            .iter()
            .find(|(t, _)| t == text)
            .map(|&(_, id)| id)
    }

    /// Text of the BOS / EOS tokens, for chat templates.
    pub fn bos_text(&self) -> &str {
        self.bos.and_then(|id| self.token_text(id)).unwrap_or("")
    }

    pub fn eos_text(&self) -> &str {
        self.eos.and_then(|id| self.token_text(id)).unwrap_or("")
    }

    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.types.get(id as usize).copied()
    }

    /// The bytes token `id` adds to decoded text (empty for control tokens).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.bytes.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// Encodes `text`. With `add_bos` the model's BOS is prepended when the
    /// model asks for one; with `parse_special` the texts of control and
    /// user-defined tokens (`<|im_start|>`, `</s>`) become those tokens.
    pub fn encode(
        &self,
        text: &str,
        add_bos: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, LoadError> {
        let mut out = Vec::new();
        if add_bos && self.adds_bos() {
            out.extend(self.bos);
        }
        let mut prev_special = true;
        for fragment in self.split_specials(text, parse_special) {
            match fragment {
                Fragment::Special(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text(t) => {
                    self.encode_text(t, prev_special, &mut out)?;
                    prev_special = false;
                }
            }
        }
        Ok(out)
    }

    fn encode_text(
        &self,
        text: &str,
        after_special: bool,
        out: &mut Vec<u32>,
    ) -> Result<(), LoadError> {
        match &self.engine {
            Engine::Spm {
                encoder,
                add_space_prefix,
            } => {
                let mut escaped = String::with_capacity(text.len() + 3);
                if *add_space_prefix && after_special {
                    escaped.push('\u{2581}');
                }
                escaped.extend(text.chars().map(|c| if c == ' ' { '\u{2581}' } else { c }));
                encoder.encode(&escaped, out);
            }
            Engine::Bpe(tok) => {
                let enc = tok
                    .encode_fast(text, false)
                    .map_err(|e| LoadError::Tokenizer(e.to_string()))?;
                out.extend_from_slice(enc.get_ids());
            }
        }
        Ok(())
    }

    fn split_specials<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Fragment<'t>> {
        let mut out = Vec::new();
        if !parse_special || self.specials.is_empty() {
            if !text.is_empty() {
                out.push(Fragment::Text(text));
            }
            return out;
        }
        // `rest` always starts right after the last special token found.
        let mut rest = text;
        let mut i = 0;
        while i < rest.len() {
            let hit = self
                .specials
                .iter()
                .find(|(s, _)| rest[i..].starts_with(s.as_str()));
            match hit {
                Some((s, id)) => {
                    if i > 0 {
                        out.push(Fragment::Text(&rest[..i]));
                    }
                    out.push(Fragment::Special(*id));
                    rest = &rest[i + s.len()..];
                    i = 0;
                }
                None => i += rest[i..].chars().next().map_or(1, char::len_utf8),
            }
        }
        if !rest.is_empty() {
            out.push(Fragment::Text(rest));
        }
        out
    }

    /// Decodes `ids` to text, as the inverse of [`Tokenizer::encode`]:
    /// control tokens vanish and the space SentencePiece added in front of
    /// the text is removed.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend_from_slice(self.token_bytes(id));
        }
        let strip = matches!(
            self.engine,
            Engine::Spm {
                add_space_prefix: true,
                ..
            }
        );
        let text = String::from_utf8_lossy(&bytes).into_owned();
        match text.strip_prefix(' ') {
            Some(rest) if strip => rest.to_string(),
            _ => text,
        }
    }

    /// A streaming decoder for generated tokens (no prefix stripping).
    pub fn stream(&self) -> TokenStream<'_> {
        TokenStream {
            tokenizer: self,
            utf8: Utf8Stream::new(),
        }
    }
}

/// Turns generated token ids into text as they arrive.
pub struct TokenStream<'a> {
    tokenizer: &'a Tokenizer,
    utf8: Utf8Stream,
}

impl TokenStream<'_> {
    /// The text that token `id` completes (may be empty).
    pub fn push(&mut self, id: u32) -> String {
        self.utf8.push(self.tokenizer.token_bytes(id))
    }

    pub fn finish(&mut self) -> String {
        self.utf8.finish()
    }
}

enum Fragment<'t> {
    Text(&'t str),
    Special(u32),
}

fn token_bytes(kind: VocabKind, token: &str, ty: TokenType) -> Vec<u8> {
    match ty {
        TokenType::Control | TokenType::Unused => Vec::new(),
        TokenType::UserDefined => token.as_bytes().to_vec(),
        TokenType::Unknown => "\u{fffd}".as_bytes().to_vec(),
        TokenType::Byte => parse_byte_token(token)
            .map(|b| vec![b])
            .unwrap_or_else(|| token.as_bytes().to_vec()),
        TokenType::Normal => match kind {
            VocabKind::SentencePiece => token.replace('\u{2581}', " ").into_bytes(),
            VocabKind::BytePairGpt2 => byte_level::decode_token(token),
        },
    }
}

/// `<0x4A>` → 0x4A.
fn parse_byte_token(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

/// The `gpt2` vocabulary through candle's conversion, with llama.cpp's
/// pre-tokenizer for the `tokenizer.ggml.pre` kinds candle does not know.
fn bpe_from_gguf(gguf: &GgufFile) -> Result<tokenizers::Tokenizer, LoadError> {
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::pre_tokenizers::digits::Digits;
    use tokenizers::pre_tokenizers::sequence::Sequence;
    use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
    use tokenizers::SplitDelimiterBehavior;
    const LLAMA3_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    let mut tok = tokenizers::Tokenizer::from_gguf(gguf.content())
        .map_err(|e| LoadError::Tokenizer(e.to_string()))?;
    // Templates and BOS are handled by `Tokenizer::encode`, not here.
    tok.with_post_processor(None::<tokenizers::processors::PostProcessorWrapper>);
    // Special tokens are split out by `Tokenizer::encode`; here they are text.
    tok.set_encode_special_tokens(true);
    let byte_level = ByteLevel::new(false, true, true);
    match gguf.opt_str("tokenizer.ggml.pre")?.unwrap_or("default") {
        // candle's conversion already matches llama.cpp for these.
        "qwen2" | "smaug-bpe" | "lfm2" => {}
        // Llama 3's regex (llama.cpp's LLAMA_VOCAB_PRE_TYPE_LLAMA3).
        "llama-bpe" | "llama3" => {
            let split = Split::new(
                SplitPattern::Regex(LLAMA3_REGEX.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| LoadError::Tokenizer(e.to_string()))?;
            let seq = Sequence::new(vec![
                split.into(),
                ByteLevel::new(false, true, false).into(),
            ]);
            tok.with_pre_tokenizer(Some(seq));
            // llama.cpp takes a whole word that is in the vocabulary as is.
            if let tokenizers::ModelWrapper::BPE(mut bpe) = tok.get_model().clone() {
                bpe.ignore_merges = true;
                tok.with_model(bpe);
            }
        }
        // llama.cpp splits every digit first for these (LLAMA_VOCAB_PRE_TYPE_SMOLLM, ...).
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" => {
            let seq = Sequence::new(vec![Digits::new(true).into(), byte_level.into()]);
            tok.with_pre_tokenizer(Some(seq));
        }
        // GPT-2's own regex, without the prefix space HF's default adds.
        _ => {
            tok.with_pre_tokenizer(Some(byte_level));
        }
    }
    Ok(tok)
}
