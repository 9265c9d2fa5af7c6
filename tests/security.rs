//! Security and tenancy against the real broker: tokens, tenants,
//! certificates, plain text, and the audit log.

use std::time::{Duration, Instant};

use classgrid_e2e::*;
use classgrid_proto::v1::{
    self as pb, admin_service_client::AdminServiceClient,
    lesson_service_client::LessonServiceClient,
};

async fn admin(broker: &Broker) -> AdminServiceClient<Ch> {
    AdminServiceClient::new(broker.channel().await)
}

async fn token(broker: &Broker, role: &str, sites: &[&str], ttl_seconds: i64) -> (String, String) {
    let t = admin(broker)
        .await
        .create_api_token(pb::CreateApiTokenRequest {
            name: format!("{role}-test"),
            role: role.into(),
            sites: sites.iter().map(|s| s.to_string()).collect(),
            ttl_seconds,
        })
        .await
        .expect("create token")
        .into_inner();
    (t.id, t.secret)
}

async fn lessons_as(broker: &Broker, token: &str) -> LessonServiceClient<Ch> {
    LessonServiceClient::new(broker.channel_with(token).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_and_tenants_are_enforced_and_every_change_is_audited() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("sec-tokens");
    let broker = Broker::start(&db, &dir, &["--grace-s", "1"]).await;
    broker.create_site("school-a").await;
    broker.create_site("school-b").await;
    let _agent = Agent::start(&broker, "school-a", "n1", &dir, &[]);
    let _agent_b = Agent::start(&broker, "school-b", "n2", &dir, &[]);
    assert!(
        wait_for(Duration::from_secs(20), || async {
            broker.node_state("school-b", "n2").await.as_deref() == Some("connected")
        })
        .await
    );

    // No token: UNAUTHENTICATED, on every service.
    let mut anon = LessonServiceClient::new(broker.raw_channel().await);
    let e = anon
        .list(pb::ListLessonsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let e = lessons_as(&broker, "cg_garbage")
        .await
        .list(pb::ListLessonsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);

    // A platform for school A books there; school B's lessons do not exist for it.
    let (_, platform_a) = token(&broker, "platform", &["school-a"], 0).await;
    let mut pa = lessons_as(&broker, &platform_a).await;
    let mine = pa
        .book(web_lesson("school-a", 1, 3600.0, 600))
        .await
        .expect("platform books at its school")
        .into_inner();
    let theirs = broker
        .lessons()
        .await
        .book(web_lesson("school-b", 1, 3600.0, 600))
        .await
        .unwrap()
        .into_inner();
    let e = pa
        .get(pb::GetLessonRequest {
            id: theirs.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        tonic::Code::NotFound,
        "another school's lesson is not found: {e:?}"
    );
    let e = pa
        .cancel(pb::CancelLessonRequest {
            id: theirs.id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = pa
        .book(web_lesson("school-b", 1, 3600.0, 600))
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        tonic::Code::InvalidArgument,
        "booking elsewhere looks like an unknown site: {e:?}"
    );
    let listed = pa
        .list(pb::ListLessonsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed
            .lessons
            .iter()
            .map(|l| l.id.clone())
            .collect::<Vec<_>>(),
        vec![mine.id.clone()]
    );
    let nodes =
        pb::fleet_service_client::FleetServiceClient::new(broker.channel_with(&platform_a).await)
            .list_nodes(pb::ListNodesRequest::default())
            .await
            .unwrap()
            .into_inner();
    assert_eq!(
        nodes
            .nodes
            .iter()
            .map(|n| n.name.clone())
            .collect::<Vec<_>>(),
        vec!["n1".to_string()]
    );

    // A school admin reads its school, and cannot change anything.
    let (_, school_admin) = token(&broker, "school_admin", &["school-a"], 0).await;
    let mut sa = lessons_as(&broker, &school_admin).await;
    assert_eq!(
        sa.get(pb::GetLessonRequest {
            id: mine.id.clone()
        })
        .await
        .unwrap()
        .into_inner()
        .id,
        mine.id
    );
    let e = sa
        .cancel(pb::CancelLessonRequest {
            id: mine.id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let e = AdminServiceClient::new(broker.channel_with(&platform_a).await)
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        tonic::Code::PermissionDenied,
        "only district admins read the audit log"
    );

    // An expired token is refused.
    let (_, short) = token(&broker, "platform", &["school-a"], 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let e = lessons_as(&broker, &short)
        .await
        .list(pb::ListLessonsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert!(e.message().contains("expired"), "{}", e.message());

    // A revocation takes effect within 5 s.
    let (id, doomed) = token(&broker, "platform", &["school-a"], 0).await;
    let mut d = lessons_as(&broker, &doomed).await;
    d.list(pb::ListLessonsRequest::default())
        .await
        .expect("works before revocation");
    admin(&broker)
        .await
        .revoke_api_token(pb::RevokeRequest { id })
        .await
        .unwrap();
    let t0 = Instant::now();
    let refused = wait_for(Duration::from_secs(6), || {
        let mut d = d.clone();
        async move {
            d.list(pb::ListLessonsRequest::default())
                .await
                .is_err_and(|e| e.code() == tonic::Code::Unauthenticated)
        }
    })
    .await;
    assert!(
        refused && t0.elapsed() <= Duration::from_secs(5),
        "revoked after {:?}",
        t0.elapsed()
    );

    // Every mutating call left exactly one audit row.
    pa.cancel(pb::CancelLessonRequest {
        id: mine.id.clone(),
        reason: "test".into(),
    })
    .await
    .unwrap();
    let audit = admin(&broker)
        .await
        .list_audit(pb::ListAuditRequest {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let count = |action: &str, target: &str| {
        audit
            .entries
            .iter()
            .filter(|e| e.action == action && e.target == target)
            .count()
    };
    assert_eq!(count("lesson.book", &format!("lesson:{}", mine.id)), 1);
    assert_eq!(count("lesson.book", &format!("lesson:{}", theirs.id)), 1);
    assert_eq!(
        count("lesson.cancel", &format!("lesson:{}", mine.id)),
        2,
        "the refused and the successful cancel"
    );
    assert_eq!(
        audit
            .entries
            .iter()
            .filter(|e| e.action == "token.create")
            .count(),
        5,
        "four tokens here and the bootstrap one"
    );
    assert_eq!(
        audit
            .entries
            .iter()
            .filter(|e| e.action == "token.revoke")
            .count(),
        1
    );
    assert_eq!(
        audit
            .entries
            .iter()
            .filter(|e| e.action == "site.create")
            .count(),
        2
    );
    let failed_cancel = audit
        .entries
        .iter()
        .find(|e| e.action == "lesson.cancel" && e.result == "error")
        .expect("refused cancel audited");
    assert!(
        failed_cancel.actor.starts_with("token:"),
        "{failed_cancel:?}"
    );
    // The log is append-only, also for SQL.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    let e = sqlx::Executor::execute(&mut conn, "DELETE FROM audit_log")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_answers_resource_exhausted() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("sec-rate");
    let broker = Broker::start(&db, &dir, &["--rate-limit-per-s", "5"]).await;
    let mut l = broker.lessons().await;
    let mut exhausted = 0;
    for _ in 0..40 {
        if let Err(e) = l.list(pb::ListLessonsRequest::default()).await {
            assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
            exhausted += 1;
        }
    }
    assert!(exhausted > 0, "40 calls at once must hit a 5/s limit");
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_need_their_own_certificate_and_plain_text_is_refused() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("sec-tls");
    let broker = Broker::start_secure(&db, &dir, &[]).await;
    broker.create_site("school-t").await;
    let join = |uses: i32| {
        let broker = &broker;
        async move {
            admin(broker)
                .await
                .create_join_token(pb::CreateJoinTokenRequest {
                    site: "school-t".into(),
                    kind: "agent".into(),
                    ttl_seconds: 600,
                    uses,
                    require_approval: None,
                })
                .await
                .unwrap()
                .into_inner()
                .secret
        }
    };

    // Join with a token, then connect with mTLS only.
    let t = join(1).await;
    let a1 = Agent::join_and_start(&t, &broker, "n1", &dir).expect("join");
    assert!(
        wait_for(Duration::from_secs(20), || async {
            broker.node_state("school-t", "n1").await.as_deref() == Some("connected")
        })
        .await,
        "{}",
        a1.proc.log_text()
    );
    // The token had one use.
    assert!(
        Agent::join_and_start(&t, &broker, "n2", &dir).is_err(),
        "a spent join token is refused"
    );
    // A second node cannot join under an existing node's name.
    let t2 = join(1).await;
    let e = Agent::join_and_start(&t2, &broker, "n1", &dir)
        .err()
        .expect("duplicate identity refused");
    assert!(
        e.to_string().contains("already has a valid certificate"),
        "{e}"
    );

    // An agent with n1's certificate cannot register as someone else.
    let cert_dir = a1.state_dir.clone();
    let tls = classgrid_common::tls::NodeTls::load(&cert_dir.join("tls")).unwrap();
    let ch = tonic::transport::Endpoint::from_shared(broker.grpc_url.clone())
        .unwrap()
        .tls_config(
            classgrid_common::tls::client_config(
                &broker.grpc_url,
                &tls.ca_pem,
                Some((&tls.cert_pem, &tls.key_pem)),
            )
            .unwrap(),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let reg = pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Register(pb::Register {
            site: "school-t".into(),
            name: "impostor".into(),
            capacity: Some(pb::NodeCapacity {
                cpu_millis: 1000,
                memory_mib: 1024,
                devices: vec![],
            }),
            ..Default::default()
        })),
    };
    let e = pb::agent_service_client::AgentServiceClient::new(ch)
        .connect(tokio_stream::iter(vec![reg.clone()]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");

    // Without a certificate an agent is refused.
    let e = pb::agent_service_client::AgentServiceClient::new(broker.raw_channel().await)
        .connect(tokio_stream::iter(vec![reg.clone()]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");

    // Plain text is refused on both ports.
    let plain = broker.grpc_url.replace("https://", "http://");
    let plain_call = async {
        let ch = tonic::transport::Endpoint::from_shared(plain)
            .unwrap()
            .connect()
            .await?;
        pb::lesson_service_client::LessonServiceClient::new(ch)
            .list(pb::ListLessonsRequest::default())
            .await
            .map_err(anyhow::Error::from)?;
        anyhow::Ok(())
    };
    assert!(plain_call.await.is_err(), "plain-text gRPC must not work");
    assert!(
        http_get(&format!(
            "{}/healthz",
            broker.http_url.replace("https://", "http://")
        ))
        .await
        .map(|(c, _)| c == 200)
        .unwrap_or(false)
            == false
    );

    // Revoking the node cuts its agent off, and its certificate stays refused.
    admin(&broker)
        .await
        .revoke_node(pb::RevokeNodeRequest {
            node: "school-t/n1".into(),
        })
        .await
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(15), || async {
            broker.node_state("school-t", "n1").await.as_deref() != Some("connected")
        })
        .await
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_ne!(
        broker.node_state("school-t", "n1").await.as_deref(),
        Some("connected"),
        "a revoked certificate cannot reconnect"
    );
    assert!(
        a1.proc.log_text().contains("revoked"),
        "the agent is told why: {}",
        a1.proc.log_text()
    );

    // An expired certificate is refused too.
    let t3 = join(1).await;
    let _a3 = Agent::join_and_start(&t3, &broker, "n3", &dir).expect("join n3");
    assert!(
        wait_for(Duration::from_secs(20), || async {
            broker.node_state("school-t", "n3").await.as_deref() == Some("connected")
        })
        .await
    );
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    sqlx::Executor::execute(
        &mut conn,
        "UPDATE node_certs SET not_after = now() - interval '1 second' WHERE name = 'n3'",
    )
    .await
    .unwrap();
    let tls3 = classgrid_common::tls::NodeTls::load(&dir.join("agent-n3").join("tls")).unwrap();
    let ch = tonic::transport::Endpoint::from_shared(broker.grpc_url.clone())
        .unwrap()
        .tls_config(
            classgrid_common::tls::client_config(
                &broker.grpc_url,
                &tls3.ca_pem,
                Some((&tls3.cert_pem, &tls3.key_pem)),
            )
            .unwrap(),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let reg3 = pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Register(pb::Register {
            site: "school-t".into(),
            name: "n3".into(),
            capacity: Some(pb::NodeCapacity {
                cpu_millis: 1000,
                memory_mib: 1024,
                devices: vec![],
            }),
            ..Default::default()
        })),
    };
    let e = pb::agent_service_client::AgentServiceClient::new(ch)
        .connect(tokio_stream::iter(vec![reg3]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert!(e.message().contains("expired"), "{}", e.message());
}
