//! The HTTP admin API against a running daemon: health, Prometheus metrics (parsed, and checked
//! line by line against the text format) after real iSCSI I/O, status, and volume creation.

mod common;

use std::net::SocketAddr;

use common::{start_server, Client, TARGET};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct HttpResponse {
    status: u16,
    content_type: String,
    body: String,
}

/// One HTTP/1.1 request on its own connection.
async fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
    let mut s = TcpStream::connect(addr).await.expect("connect to HTTP");
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("header/body separator");
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let mut content_type = String::new();
    for l in lines {
        let (k, v) = l.split_once(':').expect("header line");
        assert!(
            !(k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked")),
            "unexpected chunked body"
        );
        if k.eq_ignore_ascii_case("content-type") {
            content_type = v.trim().to_string();
        }
    }
    HttpResponse {
        status,
        content_type,
        body: body.to_string(),
    }
}

fn json(r: &HttpResponse) -> serde_json::Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("bad JSON {:?}: {e}", r.body))
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Strict check of the text exposition format: comments are HELP/TYPE with valid names and
/// types; samples are `name{label="value",...} number`, with each family's TYPE before them.
fn check_exposition_format(text: &str) {
    let mut typed = std::collections::HashMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(valid_name(name), "HELP for bad name: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, ty) = (parts.next().unwrap(), parts.next().expect("type"));
            assert!(valid_name(name), "TYPE for bad name: {line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty),
                "unknown type: {line}"
            );
            assert!(
                typed.insert(name.to_string(), ty.to_string()).is_none(),
                "TYPE twice: {line}"
            );
            continue;
        }
        assert!(!line.starts_with('#'), "stray comment: {line}");
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad value: {line}"
        );
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, Some(l.strip_suffix('}').expect("closing brace"))),
            None => (series, None),
        };
        assert!(valid_name(name), "bad metric name: {line}");
        if let Some(labels) = labels {
            for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                assert!(valid_name(k) && !k.contains(':'), "bad label name: {line}");
                assert!(
                    !v.trim_end_matches('"').contains('"'),
                    "unescaped quote: {line}"
                );
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| typed.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(typed.contains_key(family), "sample before its TYPE: {line}");
    }
}

fn sample(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| match label {
            Some((k, v)) => s.labels.get(k) == Some(v),
            None => true,
        })
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(b) => b.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => 0.0,
        })
        .next()
        .unwrap_or_else(|| panic!("no sample {name} {label:?}"))
}

#[tokio::test]
async fn http_api_metrics_status_volumes() {
    let server = start_server().await;
    let http = rewind::http::spawn(
        server.running.registry.clone(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("HTTP listener");

    let r = request(http, "GET", "/healthz", None).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    assert_eq!(request(http, "GET", "/nope", None).await.status, 404);

    // Real iSCSI traffic: a login, a write and a read.
    let mut c = Client::connect(server.addr).await;
    let login = c.login(Some(TARGET), &[]).await;
    assert_eq!((login.status_class, login.status_detail), (0, 0));
    let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(c.write10(8, &data, 512).await.status, 0);
    let read = c.read10(8, 8, 512).await;
    assert_eq!((read.status, &read.data), (0, &data));

    let r = request(http, "GET", "/metrics", None).await;
    assert_eq!(r.status, 200);
    assert!(
        r.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        r.content_type
    );
    check_exposition_format(&r.body);
    let scrape = prometheus_parse::Scrape::parse(r.body.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text format");
    for family in [
        "rewind_build_info",
        "rewind_sessions",
        "rewind_connections",
        "rewind_logins_total",
        "rewind_scsi_commands_total",
        "rewind_bytes_total",
        "rewind_command_duration_seconds",
        "rewind_pdus_rejected_total",
        "rewind_journal_bytes",
        "rewind_journal_entries",
        "rewind_journal_oldest_point_timestamp_seconds",
        "rewind_journal_flush_lag_seconds",
        "rewind_journal_merge_lag_seconds",
        "rewind_port_valid",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        assert!(scrape.docs.contains_key(family), "no HELP for {family}");
    }
    assert!(sample(&scrape, "process_resident_memory_bytes", None) > 0.0);
    assert!(sample(&scrape, "process_open_fds", None) > 0.0);
    // Other tests in this process share the global registry: counters only grow.
    assert!(sample(&scrape, "rewind_sessions", None) >= 1.0);
    assert!(sample(&scrape, "rewind_connections", None) >= 1.0);
    assert!(sample(&scrape, "rewind_logins_total", Some(("result", "success"))) >= 1.0);
    assert!(
        sample(
            &scrape,
            "rewind_scsi_commands_total",
            Some(("kind", "write"))
        ) >= 1.0
    );
    assert!(
        sample(
            &scrape,
            "rewind_scsi_commands_total",
            Some(("kind", "read"))
        ) >= 1.0
    );
    assert!(
        sample(
            &scrape,
            "rewind_bytes_total",
            Some(("direction", "written"))
        ) >= 4096.0
    );
    assert!(sample(&scrape, "rewind_bytes_total", Some(("direction", "read"))) >= 4096.0);
    assert!(
        sample(
            &scrape,
            "rewind_command_duration_seconds_count",
            Some(("kind", "read"))
        ) >= 1.0
    );
    // Sampled from the journal at scrape time: the write above is journaled.
    assert!(sample(&scrape, "rewind_journal_bytes", Some(("volume", "vol0"))) > 0.0);
    let oldest = sample(
        &scrape,
        "rewind_journal_oldest_point_timestamp_seconds",
        Some(("volume", "vol0")),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        oldest > now - 600.0 && oldest <= now,
        "oldest point {oldest}, now {now}"
    );
    let flush_lag = sample(
        &scrape,
        "rewind_journal_flush_lag_seconds",
        Some(("volume", "vol0")),
    );
    assert!((0.0..60.0).contains(&flush_lag), "flush lag {flush_lag}");
    assert_eq!(
        sample(
            &scrape,
            "rewind_journal_merge_lag_seconds",
            Some(("volume", "vol0"))
        ),
        0.0,
        "a young journal has nothing to merge"
    );
    // The port that wrote is valid.
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "rewind_port_valid"
                && s.labels.get("volume") == Some("vol0")
                && matches!(s.value, prometheus_parse::Value::Gauge(v) if v == 1.0)),
        "no valid port for vol0"
    );
    // The write's old data is indexed once its partial journal is flushed.
    let vol0 = server
        .running
        .registry
        .volumes()
        .into_iter()
        .find(|v| v.meta.name == "vol0")
        .expect("vol0");
    vol0.journal
        .as_ref()
        .expect("vol0 is journaled")
        .flush_partials()
        .expect("flush");
    let r = request(http, "GET", "/metrics", None).await;
    let scrape = prometheus_parse::Scrape::parse(r.body.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text format");
    assert!(sample(&scrape, "rewind_journal_entries", Some(("volume", "vol0"))) >= 1.0);

    // Status: the same data as the admin socket.
    let r = request(http, "GET", "/api/v1/status", None).await;
    assert_eq!(r.status, 200);
    assert!(r.content_type.starts_with("application/json"));
    let status: rewind::admin::Status = serde_json::from_str(&r.body).expect("admin::Status");
    assert!(status.targets.iter().any(|t| t.name == TARGET));
    assert_eq!(status.sessions.len(), 1);
    assert_eq!(status.portals, vec![server.addr.to_string()]);
    // The journal facts and I/O totals `rewind status` prints.
    let j = status
        .journals
        .iter()
        .find(|j| j.volume == "vol0")
        .expect("vol0's journal in the status");
    assert!(j.journal_bytes > 0 && j.invalid_ports.is_empty(), "{j:?}");
    assert_eq!(j.merge_lag_seconds, 0.0);
    assert!(status.io.bytes_written >= 4096 && status.io.commands_read >= 1);

    // Volumes: create (text size), list, refuse a duplicate and bad bodies; the new volume is
    // served at once.
    let r = request(
        http,
        "POST",
        "/api/v1/volumes",
        Some(r#"{"name":"db","size":"16MiB","block_size":4096}"#),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let created = json(&r);
    assert_eq!(created["target"], "iqn.2026-11.dev.rewind:db");
    assert_eq!(created["volume"]["size"], 16 << 20);
    let r = request(http, "GET", "/api/v1/volumes", None).await;
    let names: Vec<String> = json(&r)
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        names.contains(&"db".into()) && names.contains(&"vol0".into()),
        "{names:?}"
    );
    let r = request(
        http,
        "POST",
        "/api/v1/volumes",
        Some(r#"{"name":"db","size":1048576}"#),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        json(&r)["error"].as_str().unwrap().contains("exists"),
        "{}",
        r.body
    );
    let r = request(
        http,
        "POST",
        "/api/v1/volumes",
        Some(r#"{"name":"x","size":"lots"}"#),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = request(http, "POST", "/api/v1/volumes", Some("{not json")).await;
    assert!((400..500).contains(&r.status), "{}", r.status);
    let mut c2 = Client::connect(server.addr).await;
    let login = c2.login(Some("iqn.2026-11.dev.rewind:db"), &[]).await;
    assert_eq!((login.status_class, login.status_detail), (0, 0));
    // Grow it (as `rewind volume resize`); shrinking and partial blocks are refused.
    let r = request(
        http,
        "POST",
        "/api/v1/volumes/db/resize",
        Some(r#"{"size":"32MiB"}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (json(&r)["size_before"].as_u64(), json(&r)["size"].as_u64()),
        (Some(16 << 20), Some(32 << 20))
    );
    let r = request(
        http,
        "POST",
        "/api/v1/volumes/db/resize",
        Some(r#"{"size":"8MiB"}"#),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(error_of(&r).contains("only grow"), "{}", r.body);
    let r = request(
        http,
        "POST",
        "/api/v1/volumes/db/resize",
        Some(r#"{"size":33554944}"#),
    )
    .await;
    assert!(error_of(&r).contains("multiple"), "{}", r.body);
    let r = request(
        http,
        "POST",
        "/api/v1/volumes/nope/resize",
        Some(r#"{"size":"1GiB"}"#),
    )
    .await;
    assert!(error_of(&r).contains("no volume"), "{}", r.body);

    // Shutdown: health turns 503 or the listener goes away.
    server.running.ctx.shutdown.cancel();
    if let Ok(s) = TcpStream::connect(http).await {
        drop(s);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_offers_history_bookmarks_snapshots_and_restore() {
    let server = start_server().await;
    let http = rewind::http::spawn(
        server.running.registry.clone(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("HTTP listener");
    let mut c = Client::connect(server.addr).await;
    assert_eq!(c.login(Some(TARGET), &[]).await.status_class, 0);
    let old = vec![0x11u8; 4096];
    assert_eq!(c.write10(0, &old, 512).await.status, 0);

    let r = request(
        http,
        "POST",
        "/api/v1/volumes/vol0/bookmarks",
        Some(r#"{"name":"b1"}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r)["bookmark"], "b1");
    assert_eq!(c.write10(0, &vec![0x22u8; 4096], 512).await.status, 0);

    let r = request(http, "GET", "/api/v1/volumes/vol0/history", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(json(&r)["bookmarks"][0]["name"], "b1");

    let r = request(
        http,
        "POST",
        "/api/v1/snapshots",
        Some(r#"{"volume":"vol0","at":"@b1","name":"h1"}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let target = json(&r)["target"].as_str().expect("target").to_string();
    assert_eq!(target, "iqn.2026-11.dev.rewind:vol0.h1");
    let mut v = Client::connect(server.addr).await;
    v.isid[5] = 0x21;
    assert_eq!(v.login(Some(&target), &[]).await.status_class, 0);
    assert_eq!(
        v.read10(0, 8, 512).await.data,
        old,
        "the snapshot reads the bookmarked data"
    );
    let r = request(http, "GET", "/api/v1/snapshots", None).await;
    assert!(r.body.contains(&target), "{}", r.body);
    let r = request(http, "DELETE", &format!("/api/v1/snapshots/{target}"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Restore refuses under a logged-in initiator, and says why.
    let r = request(
        http,
        "POST",
        "/api/v1/volumes/vol0/restore",
        Some(r#"{"to":"@b1"}"#),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        json(&r)["error"]
            .as_str()
            .unwrap_or_default()
            .contains("log them out"),
        "{}",
        r.body
    );
    let r = request(
        http,
        "POST",
        "/api/v1/volumes/vol0/restore",
        Some(r#"{"to":"@b1","force":true}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = request(
        http,
        "POST",
        "/api/v1/snapshots",
        Some(r#"{"volume":"vol0","at":"@nope"}"#),
    )
    .await;
    assert_eq!(r.status, 400);
}

/// What the CLI gets for `req` through the admin socket of `server`.
async fn admin_call(server: &common::Server, req: rewind::admin::Request) -> serde_json::Value {
    server.admin(req).await.expect("admin socket call")
}

fn error_of(r: &HttpResponse) -> String {
    json(r)["error"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_offers_replication_like_the_cli() {
    use rewind::admin::Request;
    use rewind::auth::secrets::Secret;
    use rewind::config::ReplicationConfig;
    const SECRET: &str = "correct horse battery staple";

    let secondary = common::start_server_with(|c| {
        c.replication = Some(ReplicationConfig {
            listen: Some("127.0.0.1:0".into()),
            volumes: vec!["vol0".into()],
            secret: Some(Secret::new(SECRET.to_string())),
            ..Default::default()
        });
    })
    .await;
    let primary = common::start_server_with(|c| {
        c.replication = Some(ReplicationConfig {
            secret: Some(Secret::new(SECRET.to_string())),
            ..Default::default()
        });
    })
    .await;
    let to = secondary
        .running
        .replication
        .listen_addr
        .expect("secondary listens")
        .to_string();
    let any = "127.0.0.1:0".parse().unwrap();
    let p_http = rewind::http::spawn(primary.running.registry.clone(), any)
        .await
        .expect("HTTP listener");
    let s_http = rewind::http::spawn(secondary.running.registry.clone(), any)
        .await
        .expect("HTTP listener");
    let path = "/api/v1/volumes/vol0/replication";

    // Status before any pairing: exactly the admin socket's answer.
    let r = request(p_http, "GET", "/api/v1/replication", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        json(&r),
        admin_call(&primary, Request::ReplicationStatus).await
    );

    // Start: the same answer as `rewind replicate vol0 --to ... --interval 250ms`.
    let body = format!(r#"{{"to":"{to}","interval":"250ms"}}"#);
    let r = request(p_http, "PUT", path, Some(&body)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let via_cli = admin_call(
        &primary,
        Request::Replicate {
            volume: "vol0".into(),
            to: to.clone(),
            interval_ms: 250,
        },
    )
    .await;
    assert_eq!(json(&r), via_cli);
    assert_eq!(via_cli["interval_ms"], 250);
    let r = request(p_http, "GET", "/api/v1/replication", None).await;
    assert_eq!(json(&r)["primary"][0]["volume"], "vol0", "{}", r.body);
    assert_eq!(json(&r)["primary"][0]["to"], to.as_str(), "{}", r.body);

    // Bad input: 4xx with a message that says what is wrong.
    let bad = [
        (r#"{"to":"h:1","interval":"soon"}"#.to_string(), "interval"),
        (r#"{"interval":"1s"}"#.to_string(), "missing field `to`"),
        (r#"{"to":"h:1","every":"1s"}"#.to_string(), "unknown field"),
        ("{not json".to_string(), "bad request body"),
    ];
    for (body, says) in bad {
        let r = request(p_http, "PUT", path, Some(&body)).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(error_of(&r).contains(says), "{body}: {}", r.body);
    }
    let r = request(
        p_http,
        "PUT",
        "/api/v1/volumes/nope/replication",
        Some(&format!(r#"{{"to":"{to}"}}"#)),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(error_of(&r).contains("no volume named"), "{}", r.body);
    let r = request(p_http, "POST", "/api/v1/volumes/vol0/promote", None).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        error_of(&r).contains("not a replication secondary"),
        "{}",
        r.body
    );

    // Stop: the same answer as `rewind replicate vol0 --stop`; stopping twice says why not.
    let r = request(p_http, "DELETE", path, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    admin_call(
        &primary,
        Request::Replicate {
            volume: "vol0".into(),
            to: to.clone(),
            interval_ms: 250,
        },
    )
    .await;
    let via_cli = admin_call(
        &primary,
        Request::ReplicateStop {
            volume: "vol0".into(),
        },
    )
    .await;
    assert_eq!(json(&r), via_cli);
    let r = request(p_http, "DELETE", path, None).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(error_of(&r).contains("not being replicated"), "{}", r.body);

    // Promote the secondary: the fields `rewind promote` prints; twice is refused.
    let r = request(s_http, "POST", "/api/v1/volumes/vol0/promote", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let promoted = json(&r);
    assert_eq!(promoted["volume"], "vol0");
    assert_eq!(promoted["promoted"], true);
    assert!(promoted.get("at").is_some(), "{promoted}");
    let r = request(s_http, "POST", "/api/v1/volumes/vol0/promote", None).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(error_of(&r).contains("already promoted"), "{}", r.body);
    let r = request(s_http, "GET", "/api/v1/replication", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r)["secondary"][0]["role"], "promoted", "{}", r.body);

    primary.running.ctx.shutdown.cancel();
    secondary.running.ctx.shutdown.cancel();
}
