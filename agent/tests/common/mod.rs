//! What the notebook tests share: a seat's start as the agent would ask for
//! it, and a link token.

use std::path::Path;

use classgrid_agent::runtime::StartSpec;
use classgrid_proto::v1 as pb;

/// A random seat link token, 48 hex characters.
pub fn token() -> String {
    let b: [u8; 24] = rand::random();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A notebook seat `id` with its work folder, its staged datasets and its
/// link token, on `port`.
pub fn notebook_spec(id: &str, work: &Path, staged: &Path, token: &str, port: u16) -> StartSpec {
    StartSpec {
        assign: pb::Assign {
            assignment_id: id.into(),
            generation: 1,
            kind: "seat".into(),
            workload: Some(pb::Workload::default()),
            grace_seconds: 2,
            ..Default::default()
        },
        work_dir: work.to_path_buf(),
        env: vec![
            ("CLASSGRID_DATASETS".into(), staged.display().to_string()),
            ("CLASSGRID_SEAT_LINK_TOKEN".into(), token.into()),
        ],
        port,
        slices: vec![],
    }
}
