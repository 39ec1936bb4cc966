//! Tokenizer tests on the synthetic vocabularies of both kinds: round trips
//! over ASCII, accents, CJK and emoji; byte fallback; special tokens; and
//! streaming that never splits a character.

mod common;

use candle_core::quantized::GgmlDType;
use common::synth_file;
use strata::model::synth::SynthSpec;
use strata::model::tokenizer::{TokenType, VocabKind};
use strata::model::{GgufFile, Tokenizer};

const SAMPLES: &[&str] = &[
    "Once upon a time, there was a little girl named Lily.",
    "  leading and  double  spaces ",
    "Crème brûlée à la française, naïve façade.",
    "日本語のテキストと中文文本",
    "emoji 🦀🚀 and 👩‍👩‍👧 families",
    "tabs\tand\nnewlines\n\n",
    "numbers 12345 and 2026!",
];

fn tokenizer(vocab: VocabKind) -> Tokenizer {
    let spec = SynthSpec {
        vocab,
        ..SynthSpec::tiny(GgmlDType::F32, 1)
    };
    let (_dir, path) = synth_file(&spec);
    Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap()
}

fn round_trips(tok: &Tokenizer) {
    for text in SAMPLES {
        let ids = tok.encode(text, true, false).unwrap();
        assert_eq!(&tok.decode(&ids), text, "ids {ids:?}");
        // Streaming the same ids gives the same text, one whole char at a time.
        let mut stream = tok.stream();
        let mut streamed = String::new();
        for &id in &ids {
            let piece = stream.push(id);
            assert!(
                !piece.contains('\u{fffd}'),
                "half a character streamed for {text:?}"
            );
            streamed += &piece;
        }
        streamed += &stream.finish();
        let expected = if tok.kind() == VocabKind::SentencePiece {
            format!(" {text}")
        } else {
            text.to_string()
        };
        assert_eq!(streamed, expected);
    }
}

#[test]
fn sentencepiece_round_trips() {
    round_trips(&tokenizer(VocabKind::SentencePiece));
}

#[test]
fn gpt2_round_trips() {
    round_trips(&tokenizer(VocabKind::BytePairGpt2));
}

#[test]
fn sentencepiece_merges_known_pieces_and_falls_back_to_bytes() {
    let tok = tokenizer(VocabKind::SentencePiece);
    let ids = tok.encode("the", true, false).unwrap();
    // BOS, then one merged piece "▁the" (frequent in the corpus).
    assert_eq!(ids[0], 1);
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(tok.token_text(ids[1]), Some("\u{2581}the"));
    // A character missing from the vocabulary becomes its UTF-8 bytes.
    let ids = tok.encode("中", false, false).unwrap();
    let bytes: Vec<&str> = ids.iter().map(|&i| tok.token_text(i).unwrap()).collect();
    assert_eq!(bytes, ["\u{2581}", "<0xE4>", "<0xB8>", "<0xAD>"]);
    assert!(ids[1..]
        .iter()
        .all(|&i| tok.token_type(i) == Some(TokenType::Byte)));
}

#[test]
fn gpt2_uses_merges_and_special_tokens() {
    let tok = tokenizer(VocabKind::BytePairGpt2);
    let ids = tok.encode(" the", false, false).unwrap();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(tok.token_text(ids[0]), Some("\u{120}the"));
    let ids = tok
        .encode("<|im_start|>user\nhi<|im_end|>", false, true)
        .unwrap();
    assert_eq!(ids.first(), Some(&1));
    assert_eq!(ids.last(), Some(&2));
    // Without special parsing the marker is plain text.
    let plain = tok.encode("<|im_start|>", false, false).unwrap();
    assert!(!plain.contains(&1));
    assert_eq!(tok.decode(&plain), "<|im_start|>");
    assert_eq!(tok.stop_ids(), vec![0, 2]);
}
