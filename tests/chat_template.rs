//! Chat templates rendered with minijinja: the file's own, the fallbacks,
//! Python string methods, `raise_exception` and `strftime_now`.

mod common;

use candle_core::quantized::GgmlDType;
use strata::model::chat_template::{ChatMessage, ChatTemplate, TemplateSource};
use strata::model::synth::SynthSpec;
use strata::model::tokenizer::VocabKind;
use strata::model::{GgufFile, Tokenizer};

fn tokenizer(vocab: VocabKind) -> (tempfile::TempDir, GgufFile, Tokenizer) {
    let mut spec = SynthSpec::tiny(GgmlDType::Q8_0, 1);
    spec.vocab = vocab;
    let (dir, path) = common::synth_file(&spec);
    let gguf = GgufFile::open(&path).unwrap();
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    (dir, gguf, tok)
}

fn msg(role: &str, content: &str) -> ChatMessage {
    ChatMessage {
        role: role.into(),
        content: content.into(),
    }
}

#[test]
fn the_files_template_renders_chatml() {
    let (_d, gguf, tok) = tokenizer(VocabKind::BytePairGpt2);
    let t = ChatTemplate::from_gguf(&gguf, &tok);
    assert_eq!(t.source(), TemplateSource::Gguf);
    let text = t
        .render(&[msg("system", "Be brief."), msg("user", "Hi")], true)
        .unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    assert!(t
        .stop_ids()
        .contains(&tok.special_id("<|im_end|>").unwrap()));
}

#[test]
fn files_without_a_template_get_a_fallback() {
    let (_d, gguf, tok) = tokenizer(VocabKind::SentencePiece);
    let t = ChatTemplate::from_gguf(&gguf, &tok);
    assert_eq!(t.source(), TemplateSource::FallbackPlain);
    assert_eq!(
        t.render(&[msg("user", "Hi")], true).unwrap(),
        "user: Hi\nassistant:"
    );
    // A template that does not compile falls back too (ChatML here, as the
    // vocabulary has its tokens).
    let (_d, _g, tok) = tokenizer(VocabKind::BytePairGpt2);
    let t = ChatTemplate::new(Some("{% for m in messages %}".into()), &tok);
    assert_eq!(t.source(), TemplateSource::FallbackChatml);
    assert!(t
        .render(&[msg("user", "Hi")], false)
        .unwrap()
        .starts_with("<|im_start|>user\nHi"));
}

#[test]
fn templates_can_refuse_a_conversation() {
    let (_d, _g, tok) = tokenizer(VocabKind::BytePairGpt2);
    // The alternation check of Mistral-style templates.
    let src = "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}";
    let t = ChatTemplate::new(Some(src.into()), &tok);
    assert_eq!(t.source(), TemplateSource::Gguf);
    assert_eq!(
        t.render(&[msg("user", "a"), msg("assistant", "b")], false)
            .unwrap(),
        "[user]a[assistant]b"
    );
    let e = t
        .render(&[msg("user", "a"), msg("user", "b")], false)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "the chat template refused the conversation: Conversation roles must alternate user/assistant/user/assistant/..."
    );
}

#[test]
fn python_methods_special_tokens_and_dates() {
    let (_d, _g, tok) = tokenizer(VocabKind::SentencePiece);
    // As Llama 3 templates write them: bos_token, .strip(), strftime_now.
    let src = "{{ bos_token }}{% for m in messages %}{% if m['content'].startswith('!') %}{{ m['content'][1:].strip() | upper }}{% else %}{{ m['content'].strip() }}{% endif %}|{% endfor %}{{ strftime_now('%Y') | length }}";
    let t = ChatTemplate::new(Some(src.into()), &tok);
    let out = t
        .render(&[msg("user", "  hi  "), msg("user", "! loud ")], true)
        .unwrap();
    assert_eq!(out, format!("{}hi|LOUD|4", tok.bos_text()));
    assert!(!tok.bos_text().is_empty());
}
