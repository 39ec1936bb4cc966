//! A catalog of pinned digests: a TOML file of models and the SHA-256 each
//! must have, for files whose hub digest is not enough (a non-LFS file, or
//! an operator who wants a file fixed whatever the hub says).
//!
//! ```toml
//! [[model]]
//! ref = "hf:owner/repo/model.Q4_K_M.gguf@v1"
//! sha256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
//! ```

use std::path::Path;

use serde::Deserialize;

use super::digest::is_sha256;
use super::reference::{HubFile, ModelRef};

#[derive(Debug, Default, Clone)]
pub struct Catalog {
    pins: Vec<(HubFile, String)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    model: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    #[serde(rename = "ref")]
    reference: String,
    sha256: String,
}

impl Catalog {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("catalog {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("catalog {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: CatalogFile = toml::from_str(text)?;
        let mut pins = Vec::new();
        for (i, e) in file.model.into_iter().enumerate() {
            let hub = match e.reference.parse::<ModelRef>()? {
                ModelRef::Hub(h) => h,
                ModelRef::Path(_) => anyhow::bail!(
                    "model {} `ref` must be an hf: reference, got `{}`",
                    i + 1,
                    e.reference
                ),
            };
            let sha = e.sha256.to_ascii_lowercase();
            anyhow::ensure!(
                is_sha256(&sha),
                "model {} `sha256` must be 64 hex digits, got `{}`",
                i + 1,
                e.sha256
            );
            pins.push((hub, sha));
        }
        Ok(Self { pins })
    }

    /// The digest pinned for `file`, if any.
    pub fn pinned(&self, file: &HubFile) -> Option<&str> {
        self.pins
            .iter()
            .find(|(h, _)| h == file)
            .map(|(_, sha)| sha.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_found_by_reference_and_checked() {
        let sha = "ab".repeat(32);
        let c = Catalog::parse(&format!(
            "[[model]]\nref = \"hf:o/r/m.gguf\"\nsha256 = \"{}\"\n",
            sha.to_uppercase()
        ))
        .unwrap();
        let ModelRef::Hub(h) = "hf:o/r/m.gguf".parse().unwrap() else {
            unreachable!()
        };
        assert_eq!(c.pinned(&h), Some(sha.as_str()));
        let ModelRef::Hub(other) = "hf:o/r/m.gguf@v2".parse().unwrap() else {
            unreachable!()
        };
        assert_eq!(c.pinned(&other), None);
        let e = Catalog::parse("[[model]]\nref = \"hf:o/r/m.gguf\"\nsha256 = \"123\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`sha256` must be 64 hex digits, got `123`"),
            "{e}"
        );
        let e = Catalog::parse("[[model]]\nref = \"m.gguf\"\nsha256 = \"\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be an hf: reference"), "{e}");
    }
}
