//! Pulling a model file from the hub into the cache through `hf-hub`:
//! endpoint from `HF_ENDPOINT`, token from `HF_TOKEN` or the token file
//! next to the cache, a download in chunks to a `.sync.part` file that a
//! later attempt resumes, and a SHA-256 check of the result against the
//! digest pinned in the catalog or, else, the one the hub reports (the LFS
//! oid). A file that fails the check is deleted. With `HF_HUB_OFFLINE=1`
//! nothing touches the network: the cache has the file or the pull fails.

use std::path::PathBuf;
use std::time::Duration;

use hf_hub::api::tokio::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use super::cache::HubCache;
use super::digest::{is_sha256, sha256_file};
use super::progress::Reporter;
use super::reference::HubFile;

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Bytes per ranged request; the unit a resumed download keeps.
pub const DEFAULT_CHUNK: usize = 10_000_000;
/// Attempts of one pull; each after the first resumes where the last
/// stopped.
pub const ATTEMPTS: u32 = 4;

#[derive(Debug, Clone)]
pub struct PullOptions {
    pub cache: HubCache,
    pub endpoint: String,
    pub token: Option<String>,
    pub offline: bool,
    pub chunk_size: usize,
    /// A digest the file must have, whatever the hub says.
    pub pinned: Option<String>,
}

impl PullOptions {
    /// Options from the environment (`HF_ENDPOINT`, `HF_TOKEN`,
    /// `HF_HUB_OFFLINE`) over `cache`.
    pub fn from_env(cache: HubCache) -> Self {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Self {
            cache,
            endpoint: env("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.into()),
            token: env("HF_TOKEN"),
            offline: env("HF_HUB_OFFLINE").is_some_and(|v| {
                matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
            }),
            chunk_size: DEFAULT_CHUNK,
            pinned: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("HF_HUB_OFFLINE is set and {reference} is not in the model store ({cache}); pull it while online")]
    Offline { reference: String, cache: String },
    #[error("{reference}: the hub answered: {message}")]
    Hub { reference: String, message: String },
    #[error("{reference}: no SHA-256 to check the file against: the hub reports `{etag}` (not an LFS oid) and the catalog pins none")]
    NoDigest { reference: String, etag: String },
    #[error("{reference}: SHA-256 mismatch: expected {expected} ({source_of}), got {actual}; the downloaded file was deleted")]
    Mismatch {
        reference: String,
        expected: String,
        actual: String,
        source_of: &'static str,
    },
    #[error("{reference}: the hub's file has SHA-256 {hub}, the catalog pins {pinned}")]
    PinDisagrees {
        reference: String,
        hub: String,
        pinned: String,
    },
    #[error("{reference}: {source}")]
    Io {
        reference: String,
        #[source]
        source: std::io::Error,
    },
}

/// A file in the cache after a pull.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub path: PathBuf,
    pub sha256: Option<String>,
    pub size: u64,
    /// It was there already; nothing was downloaded.
    pub cached: bool,
}

/// Pulls `file` into the cache, or finds it there.
pub async fn pull(
    file: &HubFile,
    opts: &PullOptions,
    progress: Reporter,
) -> Result<Pulled, PullError> {
    let reference = file.to_string();
    let io = |source| PullError::Io {
        reference: reference.clone(),
        source,
    };
    if opts.offline {
        let path = opts.cache.resolve(file).ok_or_else(|| PullError::Offline {
            reference: reference.clone(),
            cache: opts.cache.root().display().to_string(),
        })?;
        return cached(path, true).map_err(io);
    }
    let hub = |e: hf_hub::api::tokio::ApiError| PullError::Hub {
        reference: reference.clone(),
        message: e.to_string(),
    };
    let api_for = |opts: &PullOptions| {
        let mut builder = ApiBuilder::from_cache(Cache::new(opts.cache.root().to_path_buf()))
            .with_endpoint(opts.endpoint.trim_end_matches('/').to_string())
            .with_progress(false)
            .with_chunk_size(Some(opts.chunk_size.max(1)));
        if opts.token.is_some() {
            builder = builder.with_token(opts.token.clone());
        }
        builder.build()
    };
    let api = api_for(opts).map_err(hub)?;
    let hub_repo = Repo::with_revision(file.repo.clone(), RepoType::Model, file.revision.clone());
    let repo = api.repo(hub_repo.clone());
    let meta = api.metadata(&repo.url(&file.file)).await.map_err(hub)?;
    let hub_sha = Some(meta.etag().to_ascii_lowercase()).filter(|e| is_sha256(e));
    let (expected, source_of) = match (&opts.pinned, &hub_sha) {
        (Some(pin), Some(h)) if pin != h => {
            return Err(PullError::PinDisagrees {
                reference,
                hub: h.clone(),
                pinned: pin.clone(),
            })
        }
        (Some(pin), _) => (pin.clone(), "pinned in the catalog"),
        (None, Some(h)) => (h.clone(), "the hub's LFS oid"),
        (None, None) => {
            return Err(PullError::NoDigest {
                reference,
                etag: meta.etag().to_string(),
            })
        }
    };
    // Already here, stored under the digest the hub reports now.
    let existing = opts
        .cache
        .snapshot_path(&file.repo, meta.commit_hash(), &file.file);
    if std::fs::canonicalize(&existing)
        .ok()
        .and_then(|b| b.file_name().map(|n| n.to_string_lossy().into_owned()))
        .is_some_and(|n| n == expected)
    {
        write_ref(&opts.cache, file, meta.commit_hash()).map_err(io)?;
        return cached(existing, true).map_err(io);
    }
    let mut attempt = 1;
    let path = loop {
        // hf-hub fetches each chunk in a task of its own behind a one-permit
        // semaphore, and a later attempt resumes only the contiguous prefix
        // of what arrived. On a multi-thread runtime which task polls first
        // is a race (the last spawned often wins), so a cut could cost
        // every chunk fetched ahead of chunk 0; a current-thread runtime
        // polls them in spawn order, which is file order.
        let (opts_in, repo_in) = (opts.clone(), hub_repo.clone());
        let (name, progress_in) = (file.file.clone(), progress.clone());
        let downloaded = tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let api = api_for(&opts_in).map_err(|e| e.to_string())?;
                api.repo(repo_in)
                    .download_with_progress(&name, progress_in)
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .await
        .map_err(|e| io(std::io::Error::other(e)))?;
        match downloaded {
            Ok(path) => break path,
            Err(e) if attempt < ATTEMPTS => {
                let wait = Duration::from_millis(500 << attempt);
                tracing::warn!(
                    "{reference}: download interrupted ({e}); resuming from byte {} in {wait:?} (attempt {} of {ATTEMPTS})",
                    progress.state.done(),
                    attempt + 1
                );
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(message) => return Err(PullError::Hub { reference, message }),
        }
    };
    let check = path.clone();
    let actual = tokio::task::spawn_blocking(move || sha256_file(&check))
        .await
        .map_err(|e| io(std::io::Error::other(e)))?
        .map_err(io)?;
    if actual != expected {
        let blob = std::fs::canonicalize(&path).ok();
        let _ = std::fs::remove_file(&path);
        if let Some(blob) = blob {
            let _ = std::fs::remove_file(blob);
        }
        return Err(PullError::Mismatch {
            reference,
            expected,
            actual,
            source_of,
        });
    }
    cached(path, false).map_err(io)
}

/// hf-hub records the revision only for a fresh download; a file already
/// present under a new name (a tag) gets its ref here.
fn write_ref(cache: &HubCache, file: &HubFile, commit: &str) -> std::io::Result<()> {
    let path = cache.repo_dir(&file.repo).join("refs").join(&file.revision);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, commit)
}

fn cached(path: PathBuf, cached: bool) -> std::io::Result<Pulled> {
    let blob = std::fs::canonicalize(&path)?;
    let size = std::fs::metadata(&blob)?.len();
    let sha256 = blob
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| is_sha256(n));
    Ok(Pulled {
        path,
        sha256,
        size,
        cached,
    })
}
