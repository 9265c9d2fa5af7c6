//! docs/agent-install.md, followed literally against a TLS broker (issue
//! #23): its `join` and `run` commands are taken from the document, only
//! the placeholders filled in. Before the join, an agent pointed at the
//! broker stops at once with the one line that says what to run, instead of
//! retrying for ever; after it, `run` needs nothing more, although the
//! node's name is not the host name (decision 077).

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use classgrid_e2e::*;
use serde_json::Value;

/// The commands of a fenced block that start with `classgrid-agent VERB`,
/// with `\` continuations joined, in document order.
fn doc_commands(doc: &str, verb: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    let mut cur: Option<String> = None;
    for line in doc.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        let (part, more) = match t.strip_suffix('\\') {
            Some(p) => (p.trim(), true),
            None => (t, false),
        };
        match cur.as_mut() {
            Some(c) => {
                c.push(' ');
                c.push_str(part);
            }
            None if part.starts_with(&format!("classgrid-agent {verb} ")) => {
                cur = Some(part.to_string())
            }
            None => continue,
        }
        if !more {
            out.extend(cur.take());
        }
    }
    out
}

/// Fills the document's placeholders and splits into arguments (no shell).
fn fill(cmd: &str, grpc: &str, token: &str) -> Vec<String> {
    let cmd = cmd
        .split(" #")
        .next()
        .unwrap()
        .replace("https://BROKER:7443", grpc)
        .replace("cgjoin_…", token)
        .replace("10.x.y.z", "127.0.0.1");
    let mut args: Vec<String> = cmd.split_whitespace().map(String::from).collect();
    assert_eq!(args.remove(0), "classgrid-agent");
    args
}

/// Runs the agent until it exits or `limit` passes; (exit code, stderr).
fn agent_until_exit(home: &Path, args: &[String], limit: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(bin("classgrid-agent"))
        .args(args)
        .env("CLASSGRID_HOME", home)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn agent");
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (st.code(), err);
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return (None, String::new());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_install_guide_joins_a_node_and_a_wrong_start_says_what_to_run() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/agent-install.md"
    ))
    .unwrap();
    let joins = doc_commands(&doc, "join");
    let runs = doc_commands(&doc, "run");
    assert!(
        !joins.is_empty() && !runs.is_empty(),
        "no join/run commands in the guide"
    );
    // Every start in the guide comes after a join: no plain-text broker.
    assert!(
        !doc.contains("http://BROKER"),
        "the guide still shows an http:// broker"
    );

    let db = TestDb::new().await.unwrap();
    let dir = tempdir("agent-install");
    let broker = Broker::start_secure(&db, &dir, &[]).await;
    broker.create_site("school-i").await;
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();

    // Before any join: plain HTTP/2 to the TLS broker stops with the line.
    let plain = broker.grpc_url.replace("https://", "http://");
    let (code, err) = agent_until_exit(
        &home,
        &[
            "run".into(),
            "--broker".into(),
            plain,
            "--site".into(),
            "school-i".into(),
            "--log-format".into(),
            "text".into(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, Some(2), "plain text against TLS must stop: {err}");
    assert!(
        err.contains("this broker needs TLS")
            && err.contains("classgrid-agent join --broker https://"),
        "{err}"
    );
    // The https address without a certificate: the same kind of line.
    let (code, err) = agent_until_exit(
        &home,
        &[
            "run".into(),
            "--broker".into(),
            broker.grpc_url.clone(),
            "--site".into(),
            "school-i".into(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, Some(2), "no certificate must stop: {err}");
    assert!(
        err.contains("no node certificate") && err.contains("this broker needs TLS"),
        "{err}"
    );

    // The district admin's join token, from the CLI as the guide says.
    let out = Command::new(bin("classgrid"))
        .args(["--context", "/nonexistent/classgrid-context.toml"])
        .args(["--grpc-url", &broker.grpc_url, "--token", &broker.token])
        .arg("--ca")
        .arg(broker.ca_file())
        .args([
            "-o",
            "json",
            "join-tokens",
            "create",
            "--site",
            "school-i",
            "--uses",
            "3",
            "--ttl",
            "24h",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let token = serde_json::from_str::<Value>(text.lines().next().unwrap_or(""))
        .ok()
        .and_then(|v| v["secret"].as_str().map(String::from))
        .unwrap_or_else(|| panic!("no secret in {text}"));

    // The guide's join (step 4), literally; its name is not the host name.
    let join = fill(&joins[0], &broker.grpc_url, &token);
    let name = join
        .iter()
        .skip_while(|a| *a != "--name")
        .nth(1)
        .cloned()
        .expect("the guide's join names the node");
    let out = Command::new(bin("classgrid-agent"))
        .args(&join)
        .env("CLASSGRID_HOME", &home)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("next: classgrid-agent run"), "{said}");
    assert!(home.join("agent").join("join.json").exists());

    // §1's run, literally: nothing but the advertised address.
    let run = fill(&runs[0], &broker.grpc_url, &token);
    assert!(
        !run.iter()
            .any(|a| a == "--broker" || a == "--name" || a == "--state-dir"),
        "§1's run should need nothing from the join: {run:?}"
    );
    let mut args = run.clone();
    args.extend(["--log-format".into(), "text".into()]);
    let mut agent = Proc::spawn(
        &bin("classgrid-agent"),
        &args,
        dir.join("agent.log"),
        &[("CLASSGRID_HOME", home.to_str().unwrap())],
    );
    assert!(
        broker
            .wait_connected("school-i", &name, Duration::from_secs(30))
            .await,
        "the node did not connect; agent log:\n{}",
        agent.log_text()
    );
    agent.kill9();
}
