//! The models a node holds, as `strata models list` prints them and a
//! worker reports them to the scheduler.

use serde::{Deserialize, Serialize};

use super::cache::HubCache;
use super::summary::summarize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelEntry {
    /// `hf:owner/repo/file.gguf[@revision]`.
    pub model: String,
    pub size: u64,
    pub quant: String,
    pub architecture: String,
    pub layers: Option<u64>,
    pub sha256: Option<String>,
    pub path: String,
    /// Whether the worker reporting it has it loaded now.
    #[serde(default)]
    pub loaded: bool,
}

/// Every GGUF model in `cache`; a file whose header cannot be read is
/// listed with `?` for what it could not say.
pub fn inventory(cache: &HubCache) -> std::io::Result<Vec<ModelEntry>> {
    Ok(cache
        .list()?
        .into_iter()
        .map(|f| {
            let summary = summarize(&f.blob);
            let (architecture, layers, quant) = match summary {
                Ok(s) => (s.architecture, s.layers, s.quant),
                Err(e) => {
                    tracing::warn!("{}: {e}", f.path.display());
                    ("?".into(), None, "?".into())
                }
            };
            ModelEntry {
                model: f.reference.to_string(),
                size: f.size,
                quant,
                architecture,
                layers,
                sha256: f.sha256,
                path: f.path.display().to_string(),
                loaded: false,
            }
        })
        .collect())
}
