//! A fake Hugging Face hub on loopback, for tests that pull models: it
//! serves `GET /{owner}/{repo}/resolve/{revision}/{file}` the way the hub
//! does (ranged reads answered 206 with `Content-Range`, the commit in
//! `X-Repo-Commit`, the LFS oid in `X-Linked-Etag`), records every range
//! asked for, and can cut one response mid-body or advertise a wrong
//! digest.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

#[derive(Clone)]
struct HubFile {
    bytes: Arc<Vec<u8>>,
    etag: String,
}

#[derive(Default)]
struct Inner {
    files: HashMap<String, HubFile>,
    /// (start, end) of every request, in order (`None`: no Range).
    ranges: Vec<Option<(u64, u64)>>,
    /// Cut the next response whose range holds this offset, once.
    cut_at: Option<u64>,
}

#[derive(Clone, Default)]
pub struct FakeHub {
    inner: Arc<Mutex<Inner>>,
    pub endpoint: String,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl FakeHub {
    /// Starts the hub on a free loopback port.
    pub async fn start() -> Self {
        let mut hub = FakeHub::default();
        let app = Router::new()
            .route("/{owner}/{repo}/resolve/{revision}/{*file}", get(resolve))
            .with_state(hub.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        hub.endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        hub
    }

    /// Serves `bytes` as `repo`'s `file`, with its true SHA-256 as etag.
    pub fn add(&self, repo: &str, file: &str, bytes: Vec<u8>) -> String {
        let sha = sha256_hex(&bytes);
        self.add_with_etag(repo, file, bytes, &sha);
        sha
    }

    /// Serves `bytes` but advertises `etag` as their digest.
    pub fn add_with_etag(&self, repo: &str, file: &str, bytes: Vec<u8>, etag: &str) {
        self.lock().files.insert(
            format!("{repo}/{file}"),
            HubFile {
                bytes: Arc::new(bytes),
                etag: etag.to_string(),
            },
        );
    }

    pub fn cut_once_at(&self, offset: u64) {
        self.lock().cut_at = Some(offset);
    }

    pub fn ranges(&self) -> Vec<Option<(u64, u64)>> {
        self.lock().ranges.clone()
    }

    pub fn requests(&self) -> usize {
        self.lock().ranges.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }
}

fn parse_range(headers: &HeaderMap, len: u64) -> Option<(u64, u64)> {
    let v = headers.get(header::RANGE)?.to_str().ok()?;
    let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
    let start: u64 = a.parse().ok()?;
    let end = b.parse::<u64>().map_or(len - 1, |e| e.min(len - 1));
    Some((start, end))
}

async fn resolve(
    State(hub): State<FakeHub>,
    Path((owner, repo, revision, file)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let key = format!("{owner}/{repo}/{file}");
    let found = hub.lock().files.get(&key).cloned();
    let Some(f) = found.filter(|_| revision == "main" || revision == COMMIT) else {
        return (StatusCode::NOT_FOUND, "Entry not found").into_response();
    };
    let len = f.bytes.len() as u64;
    let range = parse_range(&headers, len);
    let cut = {
        let mut inner = hub.lock();
        inner.ranges.push(range);
        let (start, end) = range.unwrap_or((0, len - 1));
        match inner.cut_at {
            Some(at) if (start..=end).contains(&at) && end > start => {
                inner.cut_at = None;
                Some(at)
            }
            _ => None,
        }
    };
    let (start, end) = range.unwrap_or((0, len - 1));
    let body_bytes = Bytes::copy_from_slice(&f.bytes[start as usize..=end as usize]);
    let body = match cut {
        // Half the promised bytes, then the connection breaks.
        Some(at) => {
            let part = body_bytes.slice(..(at - start) as usize);
            let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                Ok(part),
                Err(std::io::Error::other("connection cut by the fake hub")),
            ];
            Body::from_stream(futures_util::stream::iter(chunks))
        }
        None => Body::from(body_bytes),
    };
    let mut res = Response::new(body);
    let h = res.headers_mut();
    h.insert("x-repo-commit", COMMIT.parse().unwrap());
    h.insert("x-linked-etag", format!("\"{}\"", f.etag).parse().unwrap());
    h.insert(header::ETAG, format!("\"{}\"", f.etag).parse().unwrap());
    h.insert("x-linked-size", len.into());
    h.insert(header::CONTENT_LENGTH, (end - start + 1).into());
    if range.is_some() {
        h.insert(
            header::CONTENT_RANGE,
            format!("bytes {start}-{end}/{len}").parse().unwrap(),
        );
        *res.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    res
}
