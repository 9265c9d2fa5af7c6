//! The process runtime: a command with its env, a port passed as `PORT`, its
//! output kept in a log file, in its own process group so it outlives the
//! agent and can be stopped as a whole.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Stdio,
};

use classgrid_proto::v1 as pb;

pub struct Spawned {
    pub child: tokio::process::Child,
    pub pid: i32,
    pub start_ticks: u64,
    pub port: u16,
    pub log_path: PathBuf,
}

/// A free TCP port for the seat. There is a short race between this and the
/// seat binding it; the seat's start-up is checked for it.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("0.0.0.0:0")?
        .local_addr()?
        .port())
}

pub fn spawn(
    a: &pb::Assign,
    work_dir: &Path,
    extra_env: &[(String, String)],
) -> anyhow::Result<Spawned> {
    let w = a
        .workload
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("assignment has no workload"))?;
    if w.command.is_empty() {
        anyhow::bail!("workload.command is empty");
    }
    std::fs::create_dir_all(work_dir)?;
    let port = free_port()?;
    let log_path = work_dir.join("output.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let mut env: Vec<(String, String)> =
        w.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    env.extend(extra_env.iter().cloned());
    env.push(("PORT".into(), port.to_string()));
    env.push(("CLASSGRID_ASSIGNMENT_ID".into(), a.assignment_id.clone()));
    env.push(("CLASSGRID_WORK_DIR".into(), work_dir.display().to_string()));
    let args: Vec<String> = w.args.iter().map(|arg| expand(arg, &env)).collect();
    let mut cmd = std::process::Command::new(expand(&w.command, &env));
    cmd.args(&args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(work_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own group: a signal to the agent does not reach it, and a stop
        // reaches all its children.
        .process_group(0);
    let child = tokio::process::Command::from(cmd)
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start `{}`: {e}", w.command))?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow::anyhow!("process exited at once"))? as i32;
    Ok(Spawned {
        child,
        pid,
        start_ticks: start_ticks(pid).unwrap_or(0),
        port,
        log_path,
    })
}

/// Replaces `$(NAME)` with the seat's variable NAME, as Kubernetes does for
/// container args, so a command can take its port without a shell:
/// `python3 -m http.server $(PORT)`. `$$(NAME)` stays literal; unknown names
/// are left as written.
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("$(") {
        if i > 0 && rest.as_bytes()[i - 1] == b'$' {
            out.push_str(&rest[..i - 1]);
            out.push_str("$(");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.find(')') {
            Some(j) => {
                let name = &after[..j];
                match env.iter().rev().find(|(k, _)| k == name) {
                    Some((_, v)) => out.push_str(v),
                    None => out.push_str(&rest[i..i + 3 + j]),
                }
                rest = &after[j + 1..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Field 22 of /proc/PID/stat: when the process started.
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); field 22 is index 19.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// True when `pid` is still the process we started.
pub fn alive(pid: i32, ticks: u64) -> bool {
    match start_ticks(pid) {
        Some(t) => ticks == 0 || t == ticks,
        None => false,
    }
}

pub fn signal_group(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a negative pid signals the process group; it has no
    // memory effects on this process.
    unsafe {
        libc::kill(-pid, sig);
    }
}

/// The last `max` bytes of the seat's output, on a char boundary.
pub fn tail(path: &Path, max: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let start = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn port_is_expanded_in_args_like_kubernetes() {
        let env = vec![("PORT".to_string(), "8123".to_string())];
        assert_eq!(expand("$(PORT)", &env), "8123");
        assert_eq!(expand("--port=$(PORT)/x", &env), "--port=8123/x");
        assert_eq!(expand("$$(PORT)", &env), "$(PORT)");
        assert_eq!(expand("$(NOPE) $(PORT", &env), "$(NOPE) $(PORT");
    }
}
