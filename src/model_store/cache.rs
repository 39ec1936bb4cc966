//! The local model store, in the Hugging Face hub cache layout, so files
//! other tools pulled are found here and ours are usable by them:
//!
//! ```text
//! ROOT/models--OWNER--NAME/blobs/SHA256            the file's bytes
//! ROOT/models--OWNER--NAME/snapshots/COMMIT/FILE   a link to the blob
//! ROOT/models--OWNER--NAME/refs/REVISION           the commit it names
//! ```
//!
//! ROOT is `--model-dir`, else `HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`.

use std::path::{Path, PathBuf};

use super::digest::is_sha256;
use super::reference::HubFile;

#[derive(Debug, Clone)]
pub struct HubCache {
    root: PathBuf,
}

/// One model file in the cache.
#[derive(Debug, Clone)]
pub struct CachedFile {
    /// Revision: a ref that names its commit (`main`), else the commit.
    pub reference: HubFile,
    pub commit: String,
    /// The snapshot path (a link to the blob).
    pub path: PathBuf,
    pub blob: PathBuf,
    pub size: u64,
    /// The blob's name when it is a SHA-256 (LFS files are stored so).
    pub sha256: Option<String>,
}

/// What `remove` deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    pub freed_bytes: u64,
    /// False when another snapshot still links to the blob.
    pub blob_deleted: bool,
}

impl HubCache {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// `model_dir`, else the location the Hugging Face tools use.
    pub fn locate(model_dir: Option<&Path>) -> Self {
        if let Some(dir) = model_dir {
            return Self::new(dir.to_path_buf());
        }
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let root = env("HF_HUB_CACHE")
            .map(PathBuf::from)
            .or_else(|| env("HF_HOME").map(|h| PathBuf::from(h).join("hub")))
            .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub")))
            .unwrap_or_else(|| PathBuf::from(".cache/huggingface/hub"));
        Self::new(root)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.root
            .join(format!("models--{}", repo.replace('/', "--")))
    }

    /// The commit `revision` names in the cache: itself when it is a
    /// commit hash, else what `refs/REVISION` holds.
    pub fn commit_of(&self, repo: &str, revision: &str) -> Option<String> {
        let snapshots = self.repo_dir(repo).join("snapshots");
        if revision.len() == 40 && snapshots.join(revision).is_dir() {
            return Some(revision.to_string());
        }
        let text = std::fs::read_to_string(self.repo_dir(repo).join("refs").join(revision)).ok()?;
        Some(text.trim().to_string()).filter(|c| !c.is_empty())
    }

    /// The local path of `file`, when the cache holds it.
    pub fn resolve(&self, file: &HubFile) -> Option<PathBuf> {
        let commit = self.commit_of(&file.repo, &file.revision)?;
        let path = self.snapshot_path(&file.repo, &commit, &file.file);
        path.exists().then_some(path)
    }

    pub fn snapshot_path(&self, repo: &str, commit: &str, file: &str) -> PathBuf {
        self.repo_dir(repo)
            .join("snapshots")
            .join(commit)
            .join(file)
    }

    /// Every GGUF file in the cache, by repository and file name.
    pub fn list(&self) -> std::io::Result<Vec<CachedFile>> {
        let mut out = Vec::new();
        let Ok(repos) = std::fs::read_dir(&self.root) else {
            return Ok(out);
        };
        for repo_entry in repos {
            let repo_dir = repo_entry?.path();
            let Some(repo) = repo_dir
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("models--"))
                .map(|n| n.replacen("--", "/", 1))
            else {
                continue;
            };
            let refs = read_refs(&repo_dir.join("refs"));
            let Ok(snapshots) = std::fs::read_dir(repo_dir.join("snapshots")) else {
                continue;
            };
            for snap in snapshots {
                let snap = snap?.path();
                let commit = snap
                    .file_name()
                    .map(|c| c.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let revision = refs
                    .iter()
                    .find(|(_, c)| *c == commit)
                    .map_or_else(|| commit.clone(), |(r, _)| r.clone());
                for path in gguf_files(&snap) {
                    let Ok(blob) = std::fs::canonicalize(&path) else {
                        continue; // a dangling link
                    };
                    let rel = path.strip_prefix(&snap).unwrap_or(&path);
                    let size = std::fs::metadata(&blob).map(|m| m.len()).unwrap_or(0);
                    let name = blob.file_name().map(|n| n.to_string_lossy().into_owned());
                    out.push(CachedFile {
                        reference: HubFile {
                            repo: repo.clone(),
                            file: rel.to_string_lossy().into_owned(),
                            revision: revision.clone(),
                        },
                        commit: commit.clone(),
                        path: path.clone(),
                        blob,
                        size,
                        sha256: name.filter(|n| is_sha256(n)),
                    });
                }
            }
        }
        out.sort_by_key(|f| f.reference.to_string());
        Ok(out)
    }

    /// Deletes `file`: its snapshot link, the blob unless another snapshot
    /// links to it, and the refs and folders left empty.
    pub fn remove(&self, file: &HubFile) -> std::io::Result<Option<Removed>> {
        let Some(commit) = self.commit_of(&file.repo, &file.revision) else {
            return Ok(None);
        };
        let link = self.snapshot_path(&file.repo, &commit, &file.file);
        if std::fs::symlink_metadata(&link).is_err() {
            return Ok(None);
        }
        let blob = std::fs::canonicalize(&link).ok();
        let size = blob
            .as_ref()
            .and_then(|b| std::fs::metadata(b).ok())
            .map_or(0, |m| m.len());
        std::fs::remove_file(&link)?;
        let repo_dir = self.repo_dir(&file.repo);
        let still_linked = blob
            .as_ref()
            .is_some_and(|b| links_to(&repo_dir.join("snapshots"), b));
        // A real file in place of a link (no symlinks where it was pulled)
        // was the blob itself.
        let blobs = std::fs::canonicalize(repo_dir.join("blobs")).unwrap_or(repo_dir.join("blobs"));
        let blob_deleted = match &blob {
            Some(b) if !still_linked && b.starts_with(&blobs) => {
                std::fs::remove_file(b)?;
                let _ = std::fs::remove_file(b.with_extension("lock"));
                true
            }
            Some(b) => !still_linked && !b.exists(),
            None => false,
        };
        let snapshot = repo_dir.join("snapshots").join(&commit);
        remove_empty_dirs(&snapshot, link.parent().unwrap_or(&snapshot));
        if !snapshot.exists() {
            for (name, c) in read_refs(&repo_dir.join("refs")) {
                if c == commit {
                    let _ = std::fs::remove_file(repo_dir.join("refs").join(name));
                }
            }
            if !has_files(&repo_dir.join("snapshots")) && !has_files(&repo_dir.join("blobs")) {
                let _ = std::fs::remove_dir_all(&repo_dir);
            }
        }
        Ok(Some(Removed {
            freed_bytes: if blob_deleted { size } else { 0 },
            blob_deleted,
        }))
    }
}

/// (ref name, commit) for every file under `refs` (names may hold `/`).
fn read_refs(refs: &Path) -> Vec<(String, String)> {
    walk(refs)
        .into_iter()
        .filter_map(|p| {
            let commit = std::fs::read_to_string(&p).ok()?.trim().to_string();
            let name = p.strip_prefix(refs).ok()?.to_string_lossy().into_owned();
            Some((name, commit))
        })
        .collect()
}

fn gguf_files(dir: &Path) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        })
        .collect()
}

/// Every file (or link) under `dir`, depth first.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => out.extend(walk(&path)),
            Ok(_) => out.push(path),
            Err(_) => {}
        }
    }
    out.sort();
    out
}

fn links_to(snapshots: &Path, blob: &Path) -> bool {
    walk(snapshots)
        .iter()
        .any(|p| std::fs::canonicalize(p).is_ok_and(|t| t == blob))
}

/// Whether `dir` holds anything but hf-hub's lock files.
fn has_files(dir: &Path) -> bool {
    walk(dir)
        .iter()
        .any(|p| p.extension().is_none_or(|e| e != "lock"))
}

/// Removes `from` and its parents up to and including `top` while empty.
fn remove_empty_dirs(top: &Path, from: &Path) {
    let mut dir = from.to_path_buf();
    loop {
        if std::fs::remove_dir(&dir).is_err() || dir == top {
            return;
        }
        match dir.parent() {
            Some(p) => dir = p.to_path_buf(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache with `files` (commit, file, blob name, bytes) linked the hub's way.
    fn cache_with(
        files: &[(&str, &str, &str, &[u8])],
        refs: &[(&str, &str)],
    ) -> (tempfile::TempDir, HubCache) {
        let dir = tempfile::tempdir().unwrap();
        let cache = HubCache::new(dir.path().to_path_buf());
        let repo = cache.repo_dir("o/r");
        for (commit, file, blob, bytes) in files {
            std::fs::create_dir_all(repo.join("blobs")).unwrap();
            std::fs::write(repo.join("blobs").join(blob), bytes).unwrap();
            let link = cache.snapshot_path("o/r", commit, file);
            std::fs::create_dir_all(link.parent().unwrap()).unwrap();
            let _ = std::os::unix::fs::symlink(repo.join("blobs").join(blob), &link);
        }
        for (name, commit) in refs {
            std::fs::create_dir_all(repo.join("refs")).unwrap();
            std::fs::write(repo.join("refs").join(name), commit).unwrap();
        }
        (dir, cache)
    }

    fn hub(file: &str, revision: &str) -> HubFile {
        HubFile {
            repo: "o/r".into(),
            file: file.into(),
            revision: revision.into(),
        }
    }

    #[test]
    fn files_resolve_by_ref_or_commit_and_list_with_their_digest() {
        let c1 = "1".repeat(40);
        let sha = "a".repeat(64);
        let (_d, cache) = cache_with(&[(&c1, "q4/m.gguf", &sha, b"GGUF....")], &[("main", &c1)]);
        assert!(cache.resolve(&hub("q4/m.gguf", "main")).is_some());
        assert!(cache.resolve(&hub("q4/m.gguf", &c1)).is_some());
        assert!(cache.resolve(&hub("q4/m.gguf", "v2")).is_none());
        assert!(cache.resolve(&hub("m.gguf", "main")).is_none());
        let list = cache.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].reference.to_string(), "hf:o/r/q4/m.gguf");
        assert_eq!(
            (list[0].size, list[0].sha256.as_deref()),
            (8, Some(sha.as_str()))
        );
    }

    #[test]
    fn removing_keeps_a_blob_another_snapshot_links_and_cleans_up_after_the_last() {
        let (c1, c2) = ("1".repeat(40), "2".repeat(40));
        let sha = "b".repeat(64);
        let (_d, cache) = cache_with(
            &[
                (&c1, "m.gguf", &sha, b"1234"),
                (&c2, "m.gguf", &sha, b"1234"),
            ],
            &[("main", &c2), ("v1", &c1)],
        );
        let r = cache.remove(&hub("m.gguf", "v1")).unwrap().unwrap();
        assert_eq!(
            r,
            Removed {
                freed_bytes: 0,
                blob_deleted: false
            }
        );
        assert!(cache.resolve(&hub("m.gguf", "main")).is_some());
        assert!(!cache.repo_dir("o/r").join("refs/v1").exists());
        let r = cache.remove(&hub("m.gguf", "main")).unwrap().unwrap();
        assert_eq!(
            r,
            Removed {
                freed_bytes: 4,
                blob_deleted: true
            }
        );
        assert!(
            !cache.repo_dir("o/r").exists(),
            "an empty repository folder is removed"
        );
        assert_eq!(cache.remove(&hub("m.gguf", "main")).unwrap(), None);
    }
}
