//! CPU and memory limits for process seats through cgroup v2, where the host
//! allows them: a writable cgroup2 mount whose root offers the `cpu` and
//! `memory` controllers. Seats go under `<mount>/classgrid/<assignment>`;
//! the parent sits beside (not below) the agent's own cgroup so that seats
//! outlive the agent and the "no internal processes" rule never applies.

use std::{
    fs,
    path::{Path, PathBuf},
};

const PERIOD_US: u64 = 100_000;

/// A usable cgroup v2 parent for seats.
#[derive(Debug, Clone)]
pub struct Cgroups {
    parent: PathBuf,
}

/// The cgroup2 mount point listed in a mountinfo text.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        // Fields: id parent major:minor root mount-point options... - fstype source super
        let (pre, post) = l.split_once(" - ")?;
        (post.split_whitespace().next()? == "cgroup2")
            .then(|| pre.split_whitespace().nth(4).map(PathBuf::from))
            .flatten()
    })
}

/// `cpu.max` for a CPU share in millicores: quota and period in µs.
pub fn cpu_max(cpu_millis: i32) -> String {
    let quota = (cpu_millis.max(1) as u64 * PERIOD_US / 1000).max(1000);
    format!("{quota} {PERIOD_US}")
}

/// `memory.max` in bytes.
pub fn memory_max(memory_mib: i64) -> String {
    (memory_mib.max(1) as u64 * 1024 * 1024).to_string()
}

fn enable(dir: &Path, controllers: &[&str]) -> Result<(), String> {
    let control = dir.join("cgroup.subtree_control");
    let current =
        fs::read_to_string(&control).map_err(|e| format!("{}: {e}", control.display()))?;
    for c in controllers {
        if current.split_whitespace().any(|x| x == *c) {
            continue;
        }
        fs::write(&control, format!("+{c}")).map_err(|e| {
            format!(
                "cannot enable the {c} controller in {}: {e}",
                control.display()
            )
        })?;
    }
    Ok(())
}

impl Cgroups {
    /// Finds and prepares the parent cgroup, or says why limits cannot be
    /// enforced on this host.
    pub fn probe() -> Result<Self, String> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
        let mount = cgroup2_mount(&mountinfo).ok_or("no cgroup2 file system is mounted")?;
        Self::at(&mount)
    }

    /// Prepares `<mount>/classgrid` under a given cgroup2 mount.
    pub fn at(mount: &Path) -> Result<Self, String> {
        let offered = fs::read_to_string(mount.join("cgroup.controllers"))
            .map_err(|e| format!("{}: {e}", mount.join("cgroup.controllers").display()))?;
        let missing: Vec<&str> = ["cpu", "memory"]
            .into_iter()
            .filter(|c| !offered.split_whitespace().any(|x| x == *c))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "the cgroup2 hierarchy at {} does not offer the {} controller(s) (offered: `{}`; on a cgroup v1 or hybrid host they belong to v1)",
                mount.display(),
                missing.join(" and "),
                offered.trim()
            ));
        }
        enable(mount, &["cpu", "memory"])?;
        let parent = mount.join("classgrid");
        fs::create_dir_all(&parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        enable(&parent, &["cpu", "memory"])?;
        Ok(Self { parent })
    }

    /// Creates the seat's cgroup with its limits and returns the open
    /// `cgroup.procs` file that the child joins before exec.
    pub fn create(&self, id: &str, cpu_millis: i32, memory_mib: i64) -> Result<Seat, String> {
        let dir = self.parent.join(id);
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let write = |name: &str, value: String| {
            fs::write(dir.join(name), &value)
                .map_err(|e| format!("{}: cannot write `{value}`: {e}", dir.join(name).display()))
        };
        if cpu_millis > 0 {
            write("cpu.max", cpu_max(cpu_millis))?;
        }
        if memory_mib > 0 {
            write("memory.max", memory_max(memory_mib))?;
        }
        let procs = fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
            .map_err(|e| format!("{}: {e}", dir.join("cgroup.procs").display()))?;
        Ok(Seat { dir, procs })
    }

    pub fn seat_dir(&self, id: &str) -> PathBuf {
        self.parent.join(id)
    }
}

/// One seat's cgroup, before its process joins it.
pub struct Seat {
    pub dir: PathBuf,
    pub procs: fs::File,
}

/// Removes a seat's cgroup once its processes are gone; a cgroup that still
/// has members is left for the kernel to keep.
pub fn remove(dir: &Path) {
    let _ = fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_turns_millicores_into_quota_per_period() {
        assert_eq!(cpu_max(500), "50000 100000");
        assert_eq!(cpu_max(2000), "200000 100000");
        // The kernel refuses a quota under 1 ms.
        assert_eq!(cpu_max(1), "1000 100000");
    }

    #[test]
    fn memory_max_is_in_bytes() {
        assert_eq!(memory_max(64), "67108864");
    }

    #[test]
    fn cgroup2_mount_is_found_in_hybrid_and_unified_hosts() {
        let hybrid = "35 25 0:30 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw\n\
                      36 25 0:31 / /sys/fs/cgroup/cpu rw shared:11 - cgroup cgroup rw,cpu\n";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified =
            "29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(cgroup2_mount("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"), None);
    }
}
