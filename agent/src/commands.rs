//! The commands a seat of the process runtime can start: the executables on
//! the agent's PATH, by name (issue 23). The broker keeps nodes that lack a
//! lesson's command out of its placement, so a missing `python3` is refused
//! at booking with its name instead of failing at the bell. Container,
//! cluster and notebook seats bring their own commands, so only an agent
//! that offers the process runtime reports them.

use std::{collections::BTreeSet, ffi::OsStr, os::unix::fs::PermissionsExt};

/// At most this many names are reported (a PATH with more is cut, and the
/// broker refuses a longer list from a hostile agent).
pub const MAX_COMMANDS: usize = 20_000;
/// The longest name reported, in bytes (NAME_MAX).
pub const MAX_NAME: usize = 255;

/// Executable files on `path` (a PATH value), by name, sorted. A
/// directory that cannot be read is skipped; so is a name that is not
/// UTF-8 or holds a control character, which no lesson could name.
pub fn installed(path: Option<&OsStr>) -> Vec<String> {
    let mut names = BTreeSet::new();
    let Some(path) = path else {
        return Vec::new();
    };
    for dir in std::env::split_paths(path) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
                continue;
            }
            // Following links: /usr/bin/python3 is usually one.
            let executable = std::fs::metadata(e.path())
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
            if executable {
                names.insert(name);
            }
        }
        if names.len() >= MAX_COMMANDS {
            break;
        }
    }
    names.into_iter().take(MAX_COMMANDS).collect()
}

/// What the agent reports for the seats it runs: the PATH's commands when
/// it offers the process runtime, else nothing (the broker checks nothing).
pub fn report(runtimes: &[String]) -> Option<Vec<String>> {
    runtimes
        .iter()
        .any(|r| r == "process")
        .then(|| installed(std::env::var_os("PATH").as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_executable_files_on_the_path_are_named_once_sorted() {
        let root = std::env::temp_dir().join(format!("cg-commands-{}", std::process::id()));
        let (a, b) = (root.join("a"), root.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(b.join("subdir")).unwrap();
        let write = |p: std::path::PathBuf, mode: u32| {
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write(a.join("python3.11"), 0o755);
        write(a.join("notes.txt"), 0o644);
        write(b.join("python3.11"), 0o755);
        write(b.join("zed"), 0o700);
        std::os::unix::fs::symlink(a.join("python3.11"), b.join("python3")).unwrap();
        std::os::unix::fs::symlink(a.join("gone"), b.join("dangling")).unwrap();
        let path = std::env::join_paths([&a, &b, &root.join("missing")]).unwrap();
        assert_eq!(
            installed(Some(&path)),
            vec!["python3", "python3.11", "zed"],
            "links followed, directories, plain files and dangling links left out"
        );
        assert!(installed(None).is_empty());
        assert_eq!(report(&["container".to_string()]), None);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
