//! GPT-2's byte-level alphabet: every byte maps to one printable character,
//! so byte-level BPE vocabularies store arbitrary bytes as text.

use std::collections::HashMap;
use std::sync::OnceLock;

/// The character standing for each byte (GPT-2's `bytes_to_unicode`).
pub fn byte_to_char() -> &'static [char; 256] {
    static TABLE: OnceLock<[char; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let printable = |b: u32| {
            (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
        };
        let mut table = ['\0'; 256];
        let mut next = 256u32;
        for b in 0..256u32 {
            table[b as usize] = if printable(b) {
                char::from_u32(b).expect("latin-1 is valid")
            } else {
                let c = char::from_u32(next).expect("below the surrogates");
                next += 1;
                c
            };
        }
        table
    })
}

/// The inverse of [`byte_to_char`].
pub fn char_to_byte() -> &'static HashMap<char, u8> {
    static TABLE: OnceLock<HashMap<char, u8>> = OnceLock::new();
    TABLE.get_or_init(|| {
        byte_to_char()
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect()
    })
}

/// Encodes raw bytes as a byte-level string.
pub fn encode_bytes(bytes: &[u8]) -> String {
    let table = byte_to_char();
    bytes.iter().map(|&b| table[b as usize]).collect()
}

/// Decodes a byte-level token string; characters outside the alphabet
/// (added tokens written as plain text) keep their own UTF-8 bytes.
pub fn decode_token(token: &str) -> Vec<u8> {
    let table = char_to_byte();
    let mut out = Vec::with_capacity(token.len());
    for c in token.chars() {
        match table.get(&c) {
            Some(&b) => out.push(b),
            None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_is_a_bijection() {
        let chars: std::collections::HashSet<char> = byte_to_char().iter().copied().collect();
        assert_eq!(chars.len(), 256);
        assert_eq!(byte_to_char()[b' ' as usize], '\u{120}');
        assert_eq!(byte_to_char()[b'\n' as usize], '\u{10a}');
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode_token(&encode_bytes(&all)), all);
    }
}
