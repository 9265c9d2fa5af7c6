//! A PostgreSQL server of a test's own, for tests that restart or stop the
//! database under a running broker: the shared server at 127.0.0.1:5432
//! serves every other test at the same time and must never go down.
//!
//! It is Debian's own PostgreSQL (`initdb` and `pg_ctl` from the installed
//! version), in a temporary folder, on a free loopback port, with default
//! durability settings, so a restart loses exactly what a real one would.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

pub struct PgServer {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    pub port: u16,
}

/// The newest installed server's programs (`/usr/lib/postgresql/N/bin`).
fn server_bin() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, b)| b)
        .ok_or_else(|| anyhow::anyhow!("no PostgreSQL server programs under /usr/lib/postgresql"))
}

/// PostgreSQL refuses to run as root; as root the programs run as the
/// `postgres` user that Debian's package creates.
fn as_server_user(program: &Path) -> Command {
    if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut c: Command, what: &str) -> anyhow::Result<()> {
    let out = c.output()?;
    if !out.status.success() {
        anyhow::bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl PgServer {
    /// A new cluster in `dir`, started on a free port.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let bin = server_bin()?;
        let root = dir.join("pg");
        std::fs::create_dir_all(&root)?;
        if unsafe { libc::geteuid() } == 0 {
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["-R", "postgres:postgres"]).arg(&root);
                    c
                },
                "chown",
            )?;
            // The server user must be able to reach its folder.
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir)?.permissions().mode();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o711))?;
        }
        let data = root.join("data");
        let mut init = as_server_user(&bin.join("initdb"));
        init.args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "-D",
        ])
        .arg(&data);
        run(init, "initdb")?;
        let mut server = Self {
            bin,
            log: root.join("server.log"),
            data,
            port: crate::free_port(),
        };
        server.start_again()?;
        Ok(server)
    }

    /// The URL of its maintenance database, for [`crate::TestDb::on`].
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn ctl(&self, args: &[&str]) -> Command {
        let mut c = as_server_user(&self.bin.join("pg_ctl"));
        c.arg("-D").arg(&self.data).arg("-l").arg(&self.log);
        c.args(args);
        c
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=200",
            self.port
        );
        run(
            self.ctl(&["-w", "-t", "60", "-o", &opts, "start"]),
            "pg_ctl start",
        )
    }

    /// Stops the server as an operator's restart does: every session is
    /// ended at once (57P01 to its client), committed work is kept.
    pub fn stop(&self) -> anyhow::Result<()> {
        run(
            self.ctl(&["-w", "-t", "60", "-m", "fast", "stop"]),
            "pg_ctl stop",
        )
    }

    /// `stop`, then `start_again`.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.start_again()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.ctl(&["-w", "-m", "immediate", "stop"]).output();
        // Its files are tens of megabytes; the logs beside them stay.
        let _ = std::fs::remove_dir_all(&self.data);
    }
}
