//! Node approval against the real broker (decision 064): a node that joined
//! with a token asking for approval is connected and visible but gets no
//! work until a district admin approves it, through the one tenancy gate,
//! audited, and the decision outlives a broker restart.

use std::{process::Command, time::Duration};

use classgrid_e2e::*;
use classgrid_proto::v1::{self as pb, admin_service_client::AdminServiceClient};
use serde_json::Value;

async fn admin_as(broker: &Broker, token: &str) -> AdminServiceClient<Ch> {
    AdminServiceClient::new(broker.channel_with(token).await)
}

async fn school_admin(broker: &Broker, site: &str) -> String {
    admin_as(broker, &broker.token)
        .await
        .create_api_token(pb::CreateApiTokenRequest {
            name: format!("admin of {site}"),
            role: "school_admin".into(),
            sites: vec![site.into()],
            ttl_seconds: 0,
        })
        .await
        .expect("create school admin token")
        .into_inner()
        .secret
}

async fn approve_as(
    broker: &Broker,
    token: &str,
    id: &str,
) -> Result<pb::ApproveNodeResponse, tonic::Status> {
    pb::fleet_service_client::FleetServiceClient::new(broker.channel_with(token).await)
        .approve_node(pb::ApproveNodeRequest { id: id.into() })
        .await
        .map(|r| r.into_inner())
}

async fn node(broker: &Broker, id: &str) -> pb::Node {
    broker
        .fleet()
        .await
        .get_node(pb::GetNodeRequest { id: id.into() })
        .await
        .expect("get node")
        .into_inner()
}

/// `POST /v1/nodes/{id}/approve` over the broker's TLS; (status, body).
fn rest_approve(broker: &Broker, token: &str, id: &str) -> (u16, Value) {
    let url = format!(
        "{}/v1/nodes/{}/approve",
        broker.http_url.replace("127.0.0.1", "localhost"),
        id.replace('/', "%2F")
    );
    let out = Command::new("curl")
        .args(["-sS", "-X", "POST", "-w", "\n%{http_code}", "--cacert"])
        .arg(broker.ca_file())
        .args(["-H", &format!("Authorization: Bearer {token}"), &url])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn node_awaiting_approval_gets_no_work_until_a_district_admin_approves_it() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("approval");
    let mut broker = Broker::start_secure(&db, &dir, &["--grace-s", "1"]).await;
    broker.create_site("school-p").await;
    broker.create_site("school-q").await;

    // The token asks for approval (CLI flag → gRPC field), and says so.
    let (ok, out, err) = cli(
        &broker,
        &broker.token,
        &[
            "-o",
            "json",
            "join-tokens",
            "create",
            "--site",
            "school-p",
            "--require-approval",
        ],
    );
    assert!(ok, "join-tokens create: {out}{err}");
    let secret = serde_json::from_str::<Value>(out.lines().next().unwrap_or(""))
        .ok()
        .and_then(|v| v["secret"].as_str().map(String::from))
        .unwrap_or_else(|| panic!("no secret in {out}"));
    let tokens = admin_as(&broker, &broker.token)
        .await
        .list_join_tokens(pb::ListJoinTokensRequest {})
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert!(
        tokens.len() == 1 && tokens[0].require_approval,
        "{tokens:?}"
    );

    // The node joins, connects and reports its devices, and waits.
    let agent = Agent::join_and_start(&secret, &broker, "n1", &dir).expect("join");
    assert!(
        broker
            .wait_connected("school-p", "n1", Duration::from_secs(20))
            .await,
        "{}",
        agent.proc.log_text()
    );
    let n = node(&broker, "school-p/n1").await;
    assert!(n.awaiting_approval, "{n:?}");
    assert!(n.capacity.is_some_and(|c| c.cpu_millis > 0));
    let (ok, out, err) = cli(&broker, &broker.token, &["nodes", "list"]);
    assert!(
        ok && out.contains("connected, awaiting approval"),
        "{out}{err}"
    );

    // Placement never uses it, and the refusal counts it by its own reason.
    let booking = || {
        let mut b = web_lesson("school-p", 1, 3600.0, 600);
        b.request_id = "approval-e2e".into();
        b
    };
    let e = broker.lessons().await.book(booking()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("0/1 nodes: 1 not approved"),
        "{}",
        e.message()
    );

    // Waiting survives a broker restart: it is in PostgreSQL, not only in memory.
    broker.restart().await;
    assert!(node(&broker, "school-p/n1").await.awaiting_approval);

    // A school admin of the node's school may not approve (403); one of
    // another school does not see the node at all (404). Both are audited.
    let own = school_admin(&broker, "school-p").await;
    let other = school_admin(&broker, "school-q").await;
    let e = approve_as(&broker, &own, "school-p/n1").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("district admin"), "{}", e.message());
    let e = approve_as(&broker, &other, "school-p/n1")
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let (code, p) = rest_approve(&broker, &own, "school-p/n1");
    assert_eq!(code, 403, "{p}");
    assert_eq!(p["code"], "forbidden", "{p}");
    assert!(node(&broker, "school-p/n1").await.awaiting_approval);

    // The district admin approves over REST.
    let (code, body) = rest_approve(&broker, &broker.token, "school-p/n1");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["already_approved"], false, "{body}");
    assert_eq!(body["node"]["awaiting_approval"], false, "{body}");
    let node_id = body["node"]["id"].as_str().unwrap_or_default().to_string();
    let audit = admin_as(&broker, &broker.token)
        .await
        .list_audit(pb::ListAuditRequest {
            action: "node.approve".into(),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let approvals: Vec<_> = audit.iter().filter(|a| a.result == "ok").collect();
    assert_eq!(approvals.len(), 1, "{audit:#?}");
    assert_eq!(approvals[0].target, format!("node:{node_id}"));
    assert!(
        approvals[0].actor.starts_with("token:"),
        "{:?}",
        approvals[0]
    );
    assert_eq!(
        audit.iter().filter(|a| a.result == "error").count(),
        3,
        "the three refused attempts are audited too: {audit:#?}"
    );

    // Approving again is a no-op that says so (CLI → gRPC).
    let (ok, out, err) = cli(&broker, &broker.token, &["nodes", "approve", "school-p/n1"]);
    assert!(ok && out.contains("already approved"), "{out}{err}");

    // The approval outlives a restart too, and the same booking is admitted.
    broker.restart().await;
    assert!(!node(&broker, "school-p/n1").await.awaiting_approval);
    assert!(
        broker
            .wait_connected("school-p", "n1", Duration::from_secs(30))
            .await,
        "{}",
        agent.proc.log_text()
    );
    let lesson = broker
        .lessons()
        .await
        .book(booking())
        .await
        .expect("admitted once the node is approved")
        .into_inner();
    assert_eq!(
        (lesson.state.as_str(), lesson.seats.len()),
        ("booked", 1),
        "{lesson:?}"
    );

    // Approval is for agents; an edge token asking for it is refused by field.
    let join_token = |kind: &str| pb::CreateJoinTokenRequest {
        site: "school-p".into(),
        kind: kind.into(),
        ttl_seconds: 600,
        uses: 1,
        require_approval: Some(true),
    };
    let mut admin = admin_as(&broker, &broker.token).await;
    let e = admin
        .create_join_token(join_token("edge"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("require_approval"), "{}", e.message());

    // Another machine joining under the approved node's name (after its
    // certificate was revoked) waits for approval again.
    drop(agent);
    admin
        .revoke_node(pb::RevokeNodeRequest {
            node: "school-p/n1".into(),
        })
        .await
        .unwrap();
    let secret = admin
        .create_join_token(join_token("agent"))
        .await
        .unwrap()
        .into_inner()
        .secret;
    let _again = Agent::join_and_start(&secret, &broker, "n1", &dir).expect("join again");
    assert!(node(&broker, "school-p/n1").await.awaiting_approval);
}
