//! The process runtime: a command with its env, a port passed as `PORT`, its
//! output kept in a log file, in its own process group so it outlives the
//! agent and can be stopped as a whole; in its own cgroup with CPU and memory
//! limits where the host allows it.

use std::{
    collections::{HashMap, HashSet},
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::Path,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::future::BoxFuture;

use super::{Handle, Probe, Runtime, StartSpec, cgroup::Cgroups};

/// A free TCP port for the seat. There is a short race between this and the
/// seat binding it; the seat's start-up is checked for it.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("0.0.0.0:0")?
        .local_addr()?
        .port())
}

/// How [`ProcessRuntime::spawn_with`] starts a command.
#[derive(Debug, Clone, Default)]
pub struct SpawnOptions {
    /// The user (and group of the same number) the command runs as; the
    /// agent's own user when `None`.
    pub run_as: Option<u32>,
    /// Start from an empty environment instead of the agent's.
    pub clear_env: bool,
    /// The folder it starts in, when not the work folder (which keeps its
    /// output log, and stays the agent's).
    pub cwd: Option<std::path::PathBuf>,
}

pub struct ProcessRuntime {
    /// `None` when the host does not allow limits; seats then run without.
    cgroups: Option<Cgroups>,
    /// Pids we spawned (our children) and, once reaped, their exit codes:
    /// a child's exit status is only observable through `wait`.
    children: Arc<Mutex<HashSet<i32>>>,
    exits: Arc<Mutex<HashMap<i32, Option<i32>>>>,
}

impl ProcessRuntime {
    /// `cgroups` comes from [`Cgroups::probe`]; the caller reports why it is
    /// missing, once, as a node warning.
    pub fn new(cgroups: Option<Cgroups>) -> Self {
        Self {
            cgroups,
            children: Arc::default(),
            exits: Arc::default(),
        }
    }

    pub fn enforces_limits(&self) -> bool {
        self.cgroups.is_some()
    }

    fn spawn(&self, spec: &StartSpec) -> anyhow::Result<Handle> {
        self.spawn_with(spec, &SpawnOptions::default())
    }

    /// Starts the seat's command; `opts` lets another runtime (notebook)
    /// run it as an unprivileged user with only the variables it was given.
    pub fn spawn_with(&self, spec: &StartSpec, opts: &SpawnOptions) -> anyhow::Result<Handle> {
        let argv = spec.argv()?;
        let Some((program, args)) = argv.split_first() else {
            anyhow::bail!("workload.command: is required for the process runtime");
        };
        if spec.workload()?.command.is_empty() {
            anyhow::bail!("workload.command: is required for the process runtime");
        }
        std::fs::create_dir_all(&spec.work_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(spec.work_dir.join("output.log"))?;
        let seat_cg = match &self.cgroups {
            Some(cg) => Some(
                cg.create(
                    &spec.assign.assignment_id,
                    spec.assign.cpu_millis,
                    spec.assign.memory_mib,
                )
                .map_err(|e| anyhow::anyhow!("cgroup limits: {e}"))?,
            ),
            None => None,
        };
        let mut cmd = std::process::Command::new(program);
        if opts.clear_env {
            // The agent's own environment may hold its join token or proxy
            // credentials; a seat run for a student gets none of it.
            cmd.env_clear();
        }
        cmd.args(args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(opts.cwd.as_ref().unwrap_or(&spec.work_dir))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own group: a signal to the agent does not reach it, and a stop
            // reaches all its children.
            .process_group(0);
        if let Some(seat) = &seat_cg {
            let fd = seat.procs.as_raw_fd();
            // SAFETY: between fork and exec only async-signal-safe calls are
            // allowed; write(2) is one. Writing "0" to cgroup.procs moves the
            // calling process, so the seat is limited before its first
            // instruction and every child it forks inherits the cgroup.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        if let Some(uid) = opts.run_as {
            // SAFETY: setgroups, setgid and setuid are async-signal-safe
            // system calls. They run after the cgroup move above (which
            // needs root) and drop every privilege before exec: group list
            // first, then the group, then the user, or the later calls
            // would be refused.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(uid) != 0
                        || libc::setuid(uid) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = tokio::process::Command::from(cmd)
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start `{program}`: {e}"))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow::anyhow!("process exited at once"))? as i32;
        self.children.lock().expect("lock").insert(pid);
        let (children, exits) = (self.children.clone(), self.exits.clone());
        tokio::spawn(async move {
            let code = child.wait().await.ok().and_then(|s| s.code());
            exits.lock().expect("lock").insert(pid, code);
            children.lock().expect("lock").remove(&pid);
        });
        Ok(Handle::Process {
            pid,
            start_ticks: start_ticks(pid).unwrap_or(0),
        })
    }
}

impl Runtime for ProcessRuntime {
    fn kind(&self) -> &'static str {
        "process"
    }

    fn start(&self, spec: StartSpec) -> BoxFuture<'_, anyhow::Result<Handle>> {
        Box::pin(async move { self.spawn(&spec) })
    }

    fn probe<'a>(&'a self, handle: &'a Handle) -> BoxFuture<'a, Probe> {
        Box::pin(async move {
            let Handle::Process { pid, start_ticks } = handle else {
                return Probe::Gone;
            };
            if let Some(code) = self.exits.lock().expect("lock").remove(pid) {
                return Probe::Exited(code);
            }
            // Our own child stays "running" until reaped, so its exit code is
            // never lost to a zombie seen first.
            if self.children.lock().expect("lock").contains(pid) || alive(*pid, *start_ticks) {
                Probe::Running {
                    host: None,
                    ready: false,
                }
            } else {
                Probe::Exited(None)
            }
        })
    }

    fn stop<'a>(
        &'a self,
        handle: &'a Handle,
        grace: Duration,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let Handle::Process { pid, start_ticks } = handle.clone() else {
                anyhow::bail!("not a process handle");
            };
            signal_group(pid, libc::SIGTERM);
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                if alive(pid, start_ticks) {
                    signal_group(pid, libc::SIGKILL);
                }
            });
            Ok(())
        })
    }

    fn output_tail<'a>(&'a self, _h: &'a Handle, work_dir: &'a Path) -> BoxFuture<'a, String> {
        Box::pin(async move { super::file_tail(&work_dir.join("output.log"), 2048) })
    }

    fn cleanup<'a>(&'a self, _h: &'a Handle, assignment_id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Some(cg) = &self.cgroups {
                super::cgroup::remove(&cg.seat_dir(assignment_id));
            }
        })
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(250)
    }
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
