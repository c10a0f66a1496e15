//! The few cgroup reads and removals the runtime does itself (runc creates and deletes the
//! containers' own cgroups): OOM kill counts, and the removal of a pod's cgroup directories on
//! every hierarchy, for cgroup v1, v2 and the hybrid layout.

use std::io;
use std::path::{Path, PathBuf};

use super::sys;

/// Whether the host runs the unified (v2-only) hierarchy.
pub fn is_unified() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// Mount points of every cgroup hierarchy (v1 controllers, named v1 hierarchies, v2).
pub fn hierarchy_roots() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = sys::mountinfo()
        .into_iter()
        .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
        .map(|m| m.mount_point)
        .collect();
    roots.sort();
    roots.dedup();
    roots
}

fn relative(path: &str) -> &str {
    path.trim_start_matches('/')
}

/// The file that counts the OOM kills of a cgroup (`cgroupsPath` as in the runtime spec):
/// `memory.oom_control` of the v1 memory controller, else the v2 `memory.events`.
pub fn oom_file(cgroups_path: &str) -> Option<PathBuf> {
    let mounts = sys::mountinfo();
    if let Some(m) = mounts
        .iter()
        .find(|m| m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == "memory"))
    {
        return Some(
            m.mount_point
                .join(relative(cgroups_path))
                .join("memory.oom_control"),
        );
    }
    mounts.iter().find(|m| m.fstype == "cgroup2").map(|m| {
        m.mount_point
            .join(relative(cgroups_path))
            .join("memory.events")
    })
}

/// Whether the v1 memory controller accounts swap (`memory.memsw.limit_in_bytes` exists).
pub fn v1_memsw_available() -> bool {
    sys::mountinfo()
        .iter()
        .filter(|m| m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == "memory"))
        .any(|m| m.mount_point.join("memory.memsw.limit_in_bytes").exists())
}

/// The `oom_kill` counter of a `memory.oom_control` or `memory.events` text.
pub fn parse_oom_kills(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(char::is_whitespace)?;
        (k == "oom_kill").then(|| v.trim().parse().ok()).flatten()
    })
}

/// How many processes of the cgroup the OOM killer ended (None: unknown).
pub fn oom_kills(cgroups_path: &str) -> Option<u64> {
    let file = oom_file(cgroups_path)?;
    parse_oom_kills(&std::fs::read_to_string(file).ok()?)
}

/// Removes the cgroup `path` (relative to each hierarchy's root) and every cgroup below it, on
/// every hierarchy. Missing directories are fine; a cgroup that still has processes is an
/// error.
pub fn remove_tree(path: &str) -> Result<(), String> {
    let rel = relative(path);
    if rel.is_empty() {
        return Err("refusing to remove a root cgroup".to_string());
    }
    let mut errors = Vec::new();
    for root in hierarchy_roots() {
        let dir = root.join(rel);
        if let Err(e) = rmdir_tree(&dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            errors.push(format!("failed to remove cgroup {}: {e}", dir.display()));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// cgroup directories cannot be emptied, only removed leaf first with rmdir.
fn rmdir_tree(dir: &Path) -> io::Result<()> {
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        if item.file_type()?.is_dir() {
            match rmdir_tree(&item.path()) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    std::fs::remove_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_counters() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(parse_oom_kills(v1), Some(3));
        let v2 = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_oom_kills(v2), Some(1));
        assert_eq!(parse_oom_kills("oom_kill_disable 0\n"), None);
    }
}
