//! The OpenAI API through `app().oneshot(...)`, without a socket: every
//! validation rule (status, error type, the field named), auth, the
//! response shapes of both endpoints, models and health.

mod common;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use strata::api::{app, ApiConfig};
use tower::ServiceExt;

fn router(config: ApiConfig) -> (tempfile::TempDir, Router) {
    let (dir, state) = common::api_state(common::fast_settings(8), config);
    (dir, app(state))
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, headers, body)
}

fn post(path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap()
}

fn chat(extra: Value) -> String {
    let mut body = json!({
        "model": "tiny",
        "messages": [{"role": "user", "content": "hello there"}],
        "max_tokens": 4,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body.to_string()
}

/// Checks the OpenAI error shape, status, `param` and message words.
fn refused(
    got: &(StatusCode, axum::http::HeaderMap, Value),
    status: u16,
    param: Option<&str>,
    words: &[&str],
) {
    let (s, _, body) = got;
    assert_eq!(s.as_u16(), status, "{body}");
    let e = &body["error"];
    assert!(e.is_object(), "not the OpenAI error shape: {body}");
    for key in ["message", "type", "param", "code"] {
        assert!(e.get(key).is_some(), "`{key}` missing: {body}");
    }
    assert_eq!(e["param"].as_str(), param, "{body}");
    let msg = e["message"].as_str().unwrap();
    for w in words {
        assert!(msg.contains(w), "`{w}` not in: {msg}");
    }
}

#[tokio::test]
async fn malformed_bodies_get_the_openai_shape() {
    let (_d, app) = router(ApiConfig::default());
    let r = send(&app, post("/v1/chat/completions", "{\"model\": ")).await;
    refused(&r, 400, None, &["not valid JSON"]);
    assert_eq!(r.2["error"]["type"], "invalid_request_error");
    assert_eq!(r.2["error"]["code"], "invalid_json");
    let no_type = Request::post("/v1/chat/completions")
        .body(Body::from(chat(json!({}))))
        .unwrap();
    refused(
        &send(&app, no_type).await,
        415,
        None,
        &["`Content-Type`", "none"],
    );
    let text = Request::post("/v1/completions")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("{}"))
        .unwrap();
    refused(&send(&app, text).await, 415, None, &["`text/plain`"]);
    let r = send(&app, post("/v1/chat/completions", r#"{"messages": []}"#)).await;
    refused(&r, 400, Some("model"), &["missing field `model`"]);
    let r = send(
        &app,
        post("/v1/chat/completions", chat(json!({"max_tokens": "ten"}))),
    )
    .await;
    refused(&r, 400, Some("max_tokens"), &["`max_tokens`"]);
    let r = send(&app, post("/v1/chat/completions", "[1, 2]")).await;
    assert_eq!(r.0, 400, "{}", r.2);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let (_d, app) = router(ApiConfig {
        max_body_bytes: 4096,
        ..ApiConfig::default()
    });
    let big = chat(json!({"user": "x".repeat(10_000)}));
    refused(
        &send(&app, post("/v1/chat/completions", big)).await,
        413,
        None,
        &["at most 4096 bytes"],
    );
    // Streamed without a length: the limit still holds while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..20).map(|_| Ok(vec![b' '; 1000])).collect();
    let body = Body::from_stream(futures_util::stream::iter(chunks));
    refused(
        &send(&app, post("/v1/chat/completions", body)).await,
        413,
        None,
        &["4096"],
    );
    // Just under the limit is fine.
    let ok = chat(json!({"user": "x".repeat(3000)}));
    assert_eq!(send(&app, post("/v1/chat/completions", ok)).await.0, 200);
}

#[tokio::test]
async fn every_field_rule_names_its_field_limit_and_value() {
    let (_d, app) = router(ApiConfig::default());
    let cases: Vec<(Value, u16, &str, Vec<&str>)> = vec![
        (
            json!({"model": "gpt-4"}),
            404,
            "model",
            vec!["`gpt-4`", "`tiny`"],
        ),
        (
            json!({"messages": []}),
            400,
            "messages",
            vec!["at least 1", "got 0"],
        ),
        (
            json!({"messages": [{"role": "user", "content": "a"}, {"role": "wizard", "content": "b"}]}),
            400,
            "messages[1].role",
            vec!["system, user, assistant", "`wizard`"],
        ),
        (
            json!({"messages": [{"role": "user"}]}),
            400,
            "messages[0].content",
            vec!["missing"],
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
            400,
            "messages[0].content[0].type",
            vec!["`image_url`"],
        ),
        (
            json!({"max_tokens": 0}),
            400,
            "max_tokens",
            vec!["at least 1", "got 0"],
        ),
        (json!({"max_tokens": -3}), 400, "max_tokens", vec!["got -3"]),
        (
            json!({"max_completion_tokens": 0}),
            400,
            "max_completion_tokens",
            vec!["got 0"],
        ),
        (
            json!({"max_tokens": 500}),
            400,
            "max_tokens",
            vec!["(500)", "context length 128"],
        ),
        (
            json!({"temperature": 2.5}),
            400,
            "temperature",
            vec!["between 0 and 2", "2.5"],
        ),
        (
            json!({"temperature": -0.1}),
            400,
            "temperature",
            vec!["-0.1"],
        ),
        (json!({"top_p": 0}), 400, "top_p", vec!["(0, 1]", "got 0"]),
        (json!({"top_p": 1.5}), 400, "top_p", vec!["got 1.5"]),
        (
            json!({"stop": ["a", "b", "c", "d", "e"]}),
            400,
            "stop",
            vec!["at most 4", "got 5"],
        ),
        (json!({"n": 2}), 400, "n", vec!["must be 1", "got 2"]),
        (
            json!({"logprobs": true}),
            400,
            "logprobs",
            vec!["not supported"],
        ),
        (
            json!({"tools": [{"type": "function"}]}),
            400,
            "tools",
            vec!["not supported"],
        ),
        (
            json!({"presence_penalty": 3}),
            400,
            "presence_penalty",
            vec!["between -2 and 2", "3"],
        ),
        (
            json!({"response_format": {"type": "json_object"}}),
            400,
            "response_format",
            vec!["not supported"],
        ),
    ];
    for (extra, status, param, words) in cases {
        let r = send(&app, post("/v1/chat/completions", chat(extra.clone()))).await;
        assert_eq!(r.0.as_u16(), status, "{extra}: {}", r.2);
        refused(&r, status, Some(param), &words);
    }
    // The context check counts the rendered prompt too.
    let long = "word ".repeat(200);
    let r = send(
        &app,
        post(
            "/v1/chat/completions",
            chat(json!({"messages": [{"role": "user", "content": long}]})),
        ),
    )
    .await;
    refused(&r, 400, Some("messages"), &["tokens", "context length 128"]);
    // Completions have their own fields.
    let completion = |extra: Value| {
        let mut body = json!({"model": "tiny", "prompt": "hello", "max_tokens": 3});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        post("/v1/completions", body.to_string())
    };
    refused(
        &send(&app, completion(json!({"prompt": [1, 2, 999_999]}))).await,
        400,
        Some("prompt"),
        &["`prompt[2]`", "999999"],
    );
    refused(
        &send(&app, completion(json!({"prompt": ["a", "b"]}))).await,
        400,
        Some("prompt"),
        &["got 2"],
    );
    refused(
        &send(&app, completion(json!({"echo": true}))).await,
        400,
        Some("echo"),
        &["not supported"],
    );
    refused(
        &send(&app, completion(json!({"logprobs": 2}))).await,
        400,
        Some("logprobs"),
        &[],
    );
    refused(
        &send(&app, completion(json!({"model": "nope"}))).await,
        404,
        Some("model"),
        &["`nope`"],
    );
}

#[tokio::test]
async fn responses_have_the_fields_clients_read() {
    let (_d, app) = router(ApiConfig::default());
    let (s, _, body) = send(
        &app,
        post(
            "/v1/chat/completions",
            chat(json!({"max_tokens": 5, "temperature": 0})),
        ),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "tiny");
    assert!(body["created"].as_u64().unwrap() > 1_600_000_000);
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(choice["message"]["content"].is_string());
    let usage = &body["usage"];
    let (p, c) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
    );
    assert!(p > 0 && c <= 5);
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), p + c);
    let finish = choice["finish_reason"].as_str().unwrap();
    assert!(
        finish == "length" && c == 5 || finish == "stop" && c < 5,
        "{body}"
    );

    let req =
        json!({"model": "tiny", "prompt": [5, 6, 7], "max_tokens": 3, "temperature": 0, "seed": 1});
    let (s, _, body) = send(&app, post("/v1/completions", req.to_string())).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["object"], "text_completion");
    assert!(body["choices"][0]["text"].is_string());
    assert_eq!(body["usage"]["prompt_tokens"], 3);
    // Greedy is deterministic: the same request, the same text.
    let (_, _, again) = send(&app, post("/v1/completions", req.to_string())).await;
    assert_eq!(again["choices"][0]["text"], body["choices"][0]["text"]);
}

#[tokio::test]
async fn models_health_and_unknown_routes() {
    let (_d, app) = router(ApiConfig::default());
    let get = |p: &str| Request::get(p).body(Body::empty()).unwrap();
    let (s, _, body) = send(&app, get("/v1/models")).await;
    assert_eq!(s, 200);
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["id"], "tiny");
    assert_eq!(body["data"][0]["object"], "model");
    assert_eq!(send(&app, get("/v1/models/tiny")).await.0, 200);
    refused(
        &send(&app, get("/v1/models/other")).await,
        404,
        Some("model"),
        &["`other`"],
    );
    let (s, _, body) = send(&app, get("/health")).await;
    assert_eq!(s, 200);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["resources"]["in_flight"], 0);
    refused(
        &send(&app, get("/v2/nothing")).await,
        404,
        None,
        &["/v2/nothing"],
    );
    refused(
        &send(&app, get("/v1/chat/completions")).await,
        405,
        None,
        &[],
    );
}

#[tokio::test]
async fn an_api_key_guards_everything_but_health() {
    let (_d, app) = router(ApiConfig {
        api_key: Some("s3cret".into()),
        ..ApiConfig::default()
    });
    let with = |key: Option<&str>| {
        let mut b = Request::get("/v1/models");
        if let Some(k) = key {
            b = b.header(header::AUTHORIZATION, k);
        }
        b.body(Body::empty()).unwrap()
    };
    let r = send(&app, with(None)).await;
    refused(&r, 401, None, &["Authorization: Bearer"]);
    assert_eq!(r.2["error"]["type"], "authentication_error");
    refused(
        &send(&app, with(Some("Bearer wrong"))).await,
        401,
        None,
        &["not valid"],
    );
    refused(&send(&app, with(Some("s3cret"))).await, 401, None, &[]);
    assert_eq!(send(&app, with(Some("Bearer s3cret"))).await.0, 200);
    let mut chat_req = post("/v1/chat/completions", chat(json!({})));
    chat_req
        .headers_mut()
        .insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
    assert_eq!(send(&app, chat_req).await.0, 200);
    let metrics = Request::get("/metrics").body(Body::empty()).unwrap();
    assert_eq!(send(&app, metrics).await.0, 401);
    let health = Request::get("/health").body(Body::empty()).unwrap();
    assert_eq!(send(&app, health).await.0, 200);
}
