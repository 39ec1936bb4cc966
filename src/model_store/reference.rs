//! Model references: a path to a GGUF file, or `hf:owner/repo/file.gguf`
//! with an optional `@revision` (a branch, tag or commit; `main` when
//! left out). The file may sit in a folder of the repository
//! (`hf:owner/repo/q4/file.gguf`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    Path(PathBuf),
    Hub(HubFile),
}

/// One file of a Hugging Face model repository at a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubFile {
    /// `owner/name`.
    pub repo: String,
    /// The path of the file inside the repository.
    pub file: String,
    pub revision: String,
}

pub const HUB_PREFIX: &str = "hf:";
pub const DEFAULT_REVISION: &str = "main";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model reference `{given}`: {why}; expected a path or hf:OWNER/REPO/FILE.gguf[@REVISION]")]
pub struct RefError {
    pub given: String,
    pub why: String,
}

impl FromStr for ModelRef {
    type Err = RefError;

    fn from_str(s: &str) -> Result<Self, RefError> {
        let err = |why: &str| RefError {
            given: s.to_string(),
            why: why.to_string(),
        };
        let Some(rest) = s.strip_prefix(HUB_PREFIX) else {
            if s.trim().is_empty() {
                return Err(err("it is empty"));
            }
            return Ok(ModelRef::Path(PathBuf::from(s)));
        };
        let (path, revision) = match rest.rsplit_once('@') {
            Some((p, "")) => {
                return Err(err(&format!("the revision after `@` in `{p}@` is empty")))
            }
            Some((p, r)) => (p, r.to_string()),
            None => (rest, DEFAULT_REVISION.to_string()),
        };
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() < 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(err(
                "a hub reference needs an owner, a repository and a file name",
            ));
        }
        if parts.iter().any(|p| *p == ".." || *p == ".") {
            return Err(err("`.` and `..` are not allowed in a hub reference"));
        }
        let valid_name = |p: &str| {
            p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !valid_name(parts[0]) || !valid_name(parts[1]) {
            return Err(err(
                "owner and repository names may hold letters, digits, `-`, `_` and `.` only",
            ));
        }
        if revision.contains("..") || revision.starts_with('/') {
            return Err(err(&format!("`{revision}` is not a revision")));
        }
        Ok(ModelRef::Hub(HubFile {
            repo: format!("{}/{}", parts[0], parts[1]),
            file: parts[2..].join("/"),
            revision,
        }))
    }
}

impl fmt::Display for HubFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{HUB_PREFIX}{}/{}", self.repo, self.file)?;
        if self.revision != DEFAULT_REVISION {
            write!(f, "@{}", self.revision)?;
        }
        Ok(())
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelRef::Path(p) => write!(f, "{}", p.display()),
            ModelRef::Hub(h) => h.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(s: &str) -> HubFile {
        match s.parse::<ModelRef>().unwrap() {
            ModelRef::Hub(h) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hub_references_parse_and_print_back() {
        let h = hub("hf:bartowski/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct-Q4_K_M.gguf");
        assert_eq!(h.repo, "bartowski/SmolLM2-135M-Instruct-GGUF");
        assert_eq!(h.file, "SmolLM2-135M-Instruct-Q4_K_M.gguf");
        assert_eq!(h.revision, "main");
        let h = hub("hf:o/r/q4/m.gguf@v1.0");
        assert_eq!(
            (h.file.as_str(), h.revision.as_str()),
            ("q4/m.gguf", "v1.0")
        );
        assert_eq!(h.to_string(), "hf:o/r/q4/m.gguf@v1.0");
        assert_eq!(
            "models/a.gguf".parse::<ModelRef>().unwrap(),
            ModelRef::Path("models/a.gguf".into())
        );
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        for (given, says) in [
            (
                "hf:owner/file.gguf",
                "needs an owner, a repository and a file",
            ),
            ("hf:o//f.gguf", "needs an owner"),
            ("hf:o/r/f.gguf@", "revision after `@`"),
            ("hf:o/r/../f.gguf", "`..`"),
            ("hf:o w/r/f.gguf", "letters, digits"),
            ("", "empty"),
        ] {
            let e = given.parse::<ModelRef>().unwrap_err().to_string();
            assert!(e.contains(says), "{given}: {e}");
            assert!(e.contains(&format!("`{given}`")), "{e}");
        }
    }
}
