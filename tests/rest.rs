//! The REST/JSON API against the real broker: the same lesson flow as gRPC,
//! idempotent POSTs (REST and gRPC), problem details for bad input, SSE,
//! vouchers through the tenancy gate, and the OpenAPI document.

use std::time::Duration;

use classgrid_e2e::*;
use classgrid_proto::v1::{self as pb, admin_service_client::AdminServiceClient};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// One HTTP/1.0 exchange (so the body is never chunked and ends at EOF).
async fn call(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, Vec<(String, String)>, String) {
    let mut s = connect(base, method, path, token, headers, body).await;
    let mut raw = Vec::new();
    // A server that refuses early (413) may close before reading it all.
    let _ = s.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap_or("")
        .split(' ')
        .nth(1)
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    let hs = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, hs, body.to_string())
}

async fn connect(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> tokio::net::TcpStream {
    let host = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {host}\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty()
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    let _ = s.write_all(req.as_bytes()).await;
    s
}

fn header<'a>(hs: &'a [(String, String)], name: &str) -> &'a str {
    hs.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn booking(site: &str, start_in_s: i64, seats: i64) -> String {
    let start = chrono_like_rfc3339(start_in_s);
    json!({
        "school_site": site, "title": "rest", "start": start, "duration_seconds": 60, "seats": seats,
        "seat": {"cpu_millis": 100, "memory_mib": 64},
        "workload": {"command": "python3", "args": ["-m", "http.server", "--bind", "127.0.0.1", "$(PORT)"]}
    })
    .to_string()
}

/// now + s, as RFC 3339 with a +08:00 offset (the API takes any offset).
fn chrono_like_rfc3339(s: i64) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + s
        + 8 * 3600;
    let (days, secs) = (t.div_euclid(86400), t.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}+08:00",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

async fn start_with_agent(name: &str) -> (TestDb, std::path::PathBuf, Broker, Agent) {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir(name);
    let broker = Broker::start(&db, &dir, &["--grace-s", "1"]).await;
    broker.create_site("school-a").await;
    broker.create_site("school-b").await;
    let agent = Agent::start(&broker, "school-a", "n0", &dir, &[]);
    assert!(
        wait_for(Duration::from_secs(20), || async {
            broker.node_state("school-a", "n0").await.as_deref() == Some("connected")
        })
        .await,
        "agent should connect"
    );
    (db, dir, broker, agent)
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_lesson_runs_streams_seat_endpoints_and_cancels() {
    let (_db, _dir, broker, _agent) = start_with_agent("rest-flow").await;
    let (base, tok) = (broker.http_url.clone(), broker.token.clone());

    let (code, hs, body) = call(
        &base,
        "POST",
        "/v1/lessons",
        Some(&tok),
        &[],
        Some(&booking("school-a", 2, 2)),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    assert!(header(&hs, "content-type").starts_with("application/json"));
    let lesson = json_of(&body);
    let id = lesson["id"].as_str().unwrap().to_string();
    assert_eq!(lesson["seats"].as_array().unwrap().len(), 2);
    assert!(
        lesson["start"].as_str().unwrap().ends_with("+08:00"),
        "answers in the region's zone: {}",
        lesson["start"]
    );

    // The SSE stream reports every change until both seats run with endpoints.
    let mut s = BufReader::new(
        connect(
            &base,
            "GET",
            &format!("/v1/lessons/{id}/events"),
            Some(&tok),
            &[],
            None,
        )
        .await,
    );
    let mut line = String::new();
    let mut endpoints = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while endpoints.is_empty() {
        line.clear();
        let n = tokio::time::timeout_at(deadline, s.read_line(&mut line))
            .await
            .expect("seats should run within 30 s")
            .unwrap();
        assert!(n > 0, "event stream closed early");
        if let Some(data) = line.strip_prefix("data: ") {
            let l = json_of(data.trim());
            let seats = l["seats"].as_array().unwrap();
            if seats
                .iter()
                .all(|s| s["state"] == "running" && !s["endpoint"].as_str().unwrap().is_empty())
            {
                endpoints = seats
                    .iter()
                    .map(|s| s["endpoint"].as_str().unwrap().to_string())
                    .collect();
            }
        }
    }
    for e in &endpoints {
        assert_eq!(
            http_get(&format!("{e}/")).await.unwrap().0,
            200,
            "seat endpoint {e} answers"
        );
    }

    let (code, _, body) = call(
        &base,
        "GET",
        &format!("/v1/lessons/{id}/explain"),
        Some(&tok),
        &[],
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(json_of(&body)["admitted"], true);
    let (code, _, body) = call(
        &base,
        "GET",
        "/v1/lessons?school=school-a&page_size=1",
        Some(&tok),
        &[],
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(json_of(&body)["lessons"][0]["id"], id.as_str());

    let (code, _, body) = call(
        &base,
        "DELETE",
        &format!("/v1/lessons/{id}?reason=done"),
        Some(&tok),
        &[],
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(json_of(&body)["state"], "cancelled");
    let (code, _, body) = call(
        &base,
        "DELETE",
        &format!("/v1/lessons/{id}"),
        Some(&tok),
        &[],
        None,
    )
    .await;
    assert_eq!(code, 409, "a second cancel is a conflict: {body}");
    assert_eq!(json_of(&body)["code"], "conflict");
}

#[tokio::test(flavor = "multi_thread")]
async fn retried_post_with_same_idempotency_key_returns_the_first_result() {
    let (_db, _dir, broker, _agent) = start_with_agent("rest-idem").await;
    let (base, tok) = (broker.http_url.clone(), broker.token.clone());
    // Far enough ahead that nothing changes between the two answers.
    let body = booking("school-a", 6 * 3600, 1);
    let key = [("Idempotency-Key", "platform-booking-42")];
    let first = call(&base, "POST", "/v1/lessons", Some(&tok), &key, Some(&body)).await;
    let again = call(&base, "POST", "/v1/lessons", Some(&tok), &key, Some(&body)).await;
    assert_eq!(first.0, 201, "{}", first.2);
    assert_eq!(
        (again.0, &again.2),
        (first.0, &first.2),
        "same status and body"
    );
    let other = call(
        &base,
        "POST",
        "/v1/lessons",
        Some(&tok),
        &[("Idempotency-Key", "another")],
        Some(&body),
    )
    .await;
    assert_ne!(
        json_of(&other.2)["id"],
        json_of(&first.2)["id"],
        "a new key books a new lesson"
    );

    // Jobs too.
    let job = json!({"school_site": "school-a", "name": "hw", "spec": {"cpu_millis": 100, "memory_mib": 64},
        "workload": {"command": "sleep", "args": ["30"]}})
    .to_string();
    let jk = [("Idempotency-Key", "job-7")];
    let j1 = call(&base, "POST", "/v1/jobs", Some(&tok), &jk, Some(&job)).await;
    let j2 = call(&base, "POST", "/v1/jobs", Some(&tok), &jk, Some(&job)).await;
    assert_eq!(j1.0, 201, "{}", j1.2);
    assert_eq!(json_of(&j1.2)["id"], json_of(&j2.2)["id"]);

    // gRPC: the same request_id never makes two lessons.
    let mut req = web_lesson("school-a", 1, 6.0 * 3600.0, 60);
    req.request_id = "grpc-retry-1".into();
    let a = broker
        .lessons()
        .await
        .book(req.clone())
        .await
        .unwrap()
        .into_inner();
    let b = broker.lessons().await.book(req).await.unwrap().into_inner();
    assert_eq!(a.id, b.id);
    let (_, _, list) = call(
        &base,
        "GET",
        "/v1/lessons?school=school-a",
        Some(&tok),
        &[],
        None,
    )
    .await;
    assert_eq!(
        json_of(&list)["lessons"].as_array().unwrap().len(),
        3,
        "two REST keys and one gRPC request_id: {list}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_problem_details_naming_the_field() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("rest-bad");
    let broker = Broker::start(&db, &dir, &["--rate-limit-per-s", "1000"]).await;
    broker.create_site("school-a").await;
    let (base, tok) = (broker.http_url.clone(), broker.token.clone());
    let problem = |r: &(u16, Vec<(String, String)>, String), status: u16| {
        assert_eq!(r.0, status, "{}", r.2);
        assert_eq!(header(&r.1, "content-type"), "application/problem+json");
        let p = json_of(&r.2);
        assert_eq!(p["status"], status);
        p
    };
    let fields = |p: &Value| {
        p["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };

    let p = problem(
        &call(&base, "GET", "/v1/lessons", None, &[], None).await,
        401,
    );
    assert_eq!(p["code"], "unauthenticated");
    problem(
        &call(&base, "GET", "/v1/lessons", Some("cg_nope"), &[], None).await,
        401,
    );

    let wrong_type = r#"{"school_site":"school-a","seats":"many"}"#;
    let p = problem(
        &call(
            &base,
            "POST",
            "/v1/lessons",
            Some(&tok),
            &[],
            Some(wrong_type),
        )
        .await,
        400,
    );
    assert_eq!(fields(&p), ["seats"]);
    let nested = json!({"school_site": "school-a", "start": chrono_like_rfc3339(600), "seats": 0,
        "seat": {"cpu_millis": 100, "memory_mib": 64, "gpu": {"vendors": ["nvidia", "voodoo"], "memory_mib": 1024, "compute_percent": 150}},
        "workload": {"command": "x"}});
    let p = problem(
        &call(
            &base,
            "POST",
            "/v1/lessons",
            Some(&tok),
            &[],
            Some(&nested.to_string()),
        )
        .await,
        400,
    );
    let f = fields(&p);
    for want in ["seats", "seat.gpu.vendors[1]", "seat.gpu.compute_percent"] {
        assert!(f.contains(&want.to_string()), "{want} in {f:?}");
    }
    let p = problem(
        &call(
            &base,
            "POST",
            "/v1/lessons",
            Some(&tok),
            &[],
            Some(r#"{"school_site":"school-a","start":"tomorrow"}"#),
        )
        .await,
        400,
    );
    assert_eq!(fields(&p), ["start"]);
    let p = problem(
        &call(
            &base,
            "POST",
            "/v1/lessons",
            Some(&tok),
            &[],
            Some(r#"{"seat_count":3}"#),
        )
        .await,
        400,
    );
    assert_eq!(fields(&p), ["seat_count"]);
    problem(
        &call(
            &base,
            "POST",
            "/v1/lessons",
            Some(&tok),
            &[],
            Some("{\"title\":\"a\\u0000\"}"),
        )
        .await,
        400,
    );
    problem(
        &call(
            &base,
            "POST",
            "/v1/lessons",
            Some(&tok),
            &[("Content-Type", "text/plain")],
            Some("{}"),
        )
        .await,
        415,
    );
    let huge = format!(r#"{{"title":"{}"}}"#, "x".repeat(2 << 20));
    problem(
        &call(&base, "POST", "/v1/lessons", Some(&tok), &[], Some(&huge)).await,
        413,
    );
    let p = problem(
        &call(
            &base,
            "GET",
            "/v1/lessons/not-a-uuid",
            Some(&tok),
            &[],
            None,
        )
        .await,
        400,
    );
    assert_eq!(fields(&p), ["id"]);
    problem(
        &call(
            &base,
            "GET",
            "/v1/lessons/0190f0c2-7d1e-7c3a-9f0e-2b1d4c5e6f70",
            Some(&tok),
            &[],
            None,
        )
        .await,
        404,
    );
    let p = problem(
        &call(
            &base,
            "GET",
            "/v1/lessons?page_size=9999&from=yesterday",
            Some(&tok),
            &[],
            None,
        )
        .await,
        400,
    );
    assert_eq!(fields(&p), ["from"]);
    let p = problem(
        &call(
            &base,
            "GET",
            "/v1/lessons?page_size=9999",
            Some(&tok),
            &[],
            None,
        )
        .await,
        400,
    );
    assert_eq!(fields(&p), ["page_size"]);
    let p = problem(
        &call(&base, "GET", "/v1/lessons?shcool=x", Some(&tok), &[], None).await,
        400,
    );
    assert_eq!(fields(&p), ["shcool"]);
    let p = problem(
        &call(
            &base,
            "POST",
            "/v1/lessons",
            Some(&tok),
            &[],
            Some(&booking("school-a", 60, 3)),
        )
        .await,
        409,
    );
    assert_eq!(p["code"], "refused", "no nodes: refused with reasons");
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_rate_limit_answers_429() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("rest-rate");
    let broker = Broker::start(&db, &dir, &["--rate-limit-per-s", "2"]).await;
    let mut codes = Vec::new();
    for _ in 0..12 {
        codes.push(
            call(
                &broker.http_url,
                "GET",
                "/v1/sites",
                Some(&broker.token),
                &[],
                None,
            )
            .await
            .0,
        );
    }
    assert!(codes.contains(&200) && codes.contains(&429), "{codes:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn vouchers_pass_the_tenancy_gate_and_usage_exports_csv() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("rest-vouchers");
    let broker = Broker::start(&db, &dir, &[]).await;
    broker.create_site("school-a").await;
    broker.create_site("school-b").await;
    let (base, admin_tok) = (broker.http_url.clone(), broker.token.clone());
    let mint = |role: &'static str, site: &'static str| {
        let b = &broker;
        async move {
            AdminServiceClient::new(b.channel().await)
                .create_api_token(pb::CreateApiTokenRequest {
                    name: role.into(),
                    role: role.into(),
                    sites: vec![site.into()],
                    ttl_seconds: 3600,
                })
                .await
                .unwrap()
                .into_inner()
                .secret
        }
    };
    let platform_a = mint("platform", "school-a").await;
    let school_b = mint("school_admin", "school-b").await;
    let issue = |school: &str| {
        json!({"school_site": school, "programme": "ai-101", "accelerator_hours": 10.0, "valid_until": chrono_like_rfc3339(30 * 86400)}).to_string()
    };

    for s in ["school-a", "school-b"] {
        let r = call(
            &base,
            "POST",
            "/v1/vouchers",
            Some(&admin_tok),
            &[("Idempotency-Key", s)],
            Some(&issue(s)),
        )
        .await;
        assert_eq!(r.0, 201, "{}", r.2);
    }
    // Issuing is for district admins; the refusal is audited and named.
    let r = call(
        &base,
        "POST",
        "/v1/vouchers",
        Some(&platform_a),
        &[],
        Some(&issue("school-a")),
    )
    .await;
    assert_eq!(r.0, 403, "{}", r.2);
    let r = call(
        &base,
        "PUT",
        "/v1/schools/school-b/quota",
        Some(&school_b),
        &[],
        Some(r#"{"max_concurrent_seats":5}"#),
    )
    .await;
    assert_eq!(r.0, 403, "{}", r.2);

    // Reads cover the caller's schools only; others do not exist for them.
    let (_, _, body) = call(
        &base,
        "GET",
        "/v1/vouchers/balances",
        Some(&platform_a),
        &[],
        None,
    )
    .await;
    let schools: Vec<_> = json_of(&body)["schools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["school_site"].clone())
        .collect();
    assert_eq!(schools, [json!("school-a")], "{body}");
    let r = call(
        &base,
        "GET",
        "/v1/vouchers?school=school-b",
        Some(&platform_a),
        &[],
        None,
    )
    .await;
    assert_eq!(
        r.0, 400,
        "school-b is unknown to school-a's platform: {}",
        r.2
    );
    let (_, _, body) = call(
        &base,
        "GET",
        "/v1/vouchers/ledger",
        Some(&school_b),
        &[],
        None,
    )
    .await;
    let entries = json_of(&body)["entries"].as_array().unwrap().clone();
    assert!(
        !entries.is_empty() && entries.iter().all(|e| e["school_site"] == "school-b"),
        "{body}"
    );

    let (code, hs, csv) = call(
        &base,
        "GET",
        "/v1/usage?by=school&format=csv",
        Some(&admin_tok),
        &[],
        None,
    )
    .await;
    assert_eq!(code, 200, "{csv}");
    assert!(header(&hs, "content-type").starts_with("text/csv"));
    assert!(
        csv.starts_with("group,key,label,charged_accelerator_hours"),
        "{csv}"
    );
    let r = call(
        &base,
        "GET",
        "/v1/usage?by=week",
        Some(&admin_tok),
        &[],
        None,
    )
    .await;
    assert_eq!(r.0, 400, "{}", r.2);
    let r = call(
        &base,
        "PUT",
        "/v1/schools/school-a/quota",
        Some(&admin_tok),
        &[],
        Some(r#"{"max_concurrent_seats":90}"#),
    )
    .await;
    assert_eq!(
        (r.0, json_of(&r.2)["max_concurrent_seats"].clone()),
        (200, json!(90)),
        "{}",
        r.2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_document_lists_every_operation() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("rest-openapi");
    let broker = Broker::start(&db, &dir, &[]).await;
    let (code, _, body) = call(&broker.http_url, "GET", "/openapi.json", None, &[], None).await;
    assert_eq!(code, 200);
    let doc = json_of(&body);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/v1/lessons",
        "/v1/lessons/{id}",
        "/v1/lessons/{id}/explain",
        "/v1/lessons/{id}/events",
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/v1/sites",
        "/v1/nodes",
        "/v1/nodes/{id}",
        "/v1/nodes/{id}/approve",
        "/v1/usage",
    ] {
        assert!(doc["paths"][p].is_object(), "{p} missing");
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    // An estimated RTT's error bound (decision 044) is in the contract.
    let bound = &doc["components"]["schemas"]["Rtt"]["properties"]["error_bound_ms"];
    assert!(bound.is_object(), "Rtt.error_bound_ms missing: {bound}");
}
