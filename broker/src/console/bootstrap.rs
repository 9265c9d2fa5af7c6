//! The first console admin of a region, created from the server's own shell
//! (`classgrid-broker admin-user NAME`) or by `classgrid up`, where no
//! signed-in admin exists yet to create one. Audited as `bootstrap`.

use uuid::Uuid;

use crate::{
    auth::passwords,
    store::{
        Store,
        security::{AuditEntry, UserRow},
    },
};

pub const PASSWORD_ENV: &str = "CLASSGRID_ADMIN_PASSWORD";

/// Creates a district-admin console user, or with `reset` sets the password
/// of an existing one. Refuses weak input with the field and the rule.
pub async fn admin_user(
    store: &Store,
    username: &str,
    password: &str,
    reset: bool,
) -> anyhow::Result<()> {
    let valid = !username.is_empty()
        && username.len() <= 64
        && username
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "._-@".contains(ch));
    if !valid {
        anyhow::bail!("username: must be 1 to 64 letters, digits, '.', '_', '-' or '@'");
    }
    if !(10..=256).contains(&password.chars().count()) {
        anyhow::bail!("password ({PASSWORD_ENV}): must be 10 to 256 characters");
    }
    let hash = passwords::hash(password)?;
    let action = match store.user_by_name(username).await? {
        Some(_) if !reset => {
            anyhow::bail!("user `{username}` exists; pass --reset to set a new password")
        }
        Some(u) => {
            store.set_user_password(u.id, &hash).await?;
            "user.reset_password"
        }
        None => {
            store
                .insert_user(&UserRow {
                    id: Uuid::now_v7(),
                    username: username.to_string(),
                    password_hash: hash,
                    role: "district_admin".into(),
                    sites: Vec::new(),
                    disabled: false,
                })
                .await?;
            "user.create"
        }
    };
    store
        .append_audit(&AuditEntry {
            actor: "bootstrap",
            role: "district_admin",
            action,
            target: &format!("user:{username}"),
            source: "local",
            result: "ok",
            detail: "console district admin set up on the server",
        })
        .await?;
    Ok(())
}

/// A password for a generated login: 20 characters from a 56-letter
/// alphabet without look-alikes (about 116 bits).
pub fn generate_password() -> String {
    const A: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    (0..20)
        .map(|_| A[rand::random_range(0..A.len())] as char)
        .collect()
}
