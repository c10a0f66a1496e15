//! The OCI runtime `config.json` of a container, built from the pod's sandbox, the container
//! config and the image config. Pure: no I/O, so every rule here is unit-tested.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::runtime::{Mount, Resources, Security};

/// containerd's default `PATH`, used when neither the image nor the container sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The capabilities a container gets by default (containerd's default set).
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Paths hidden from containers (containerd's defaults).
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths made read-only in containers (containerd's defaults).
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The CFS period every quota is expressed over (100 ms).
pub const CPU_PERIOD: u64 = 100_000;

/// What the image contributes to a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `K=V` entries.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// The process' argv by Kubernetes' rule: a `command` replaces the image's entrypoint and cmd;
/// `args` alone replace the cmd; neither runs the image's entrypoint + cmd.
pub fn process_args(
    command: &[String],
    args: &[String],
    image: &ImageDefaults,
) -> Result<Vec<String>, String> {
    let argv: Vec<String> = if !command.is_empty() {
        command.iter().chain(args).cloned().collect()
    } else if !args.is_empty() {
        image.entrypoint.iter().chain(args).cloned().collect()
    } else {
        image.entrypoint.iter().chain(&image.cmd).cloned().collect()
    };
    if argv.is_empty() {
        return Err("no command specified".to_string());
    }
    Ok(argv)
}

/// The environment: `HOSTNAME`, then the image's, then the container's; a later value of a name
/// replaces an earlier one in place. `PATH` is added when nobody sets it.
pub fn merge_env(
    hostname: &str,
    image_env: &[String],
    container: &[(String, String)],
) -> Vec<String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match out.iter_mut().find(|(n, _)| n == k) {
        Some(e) => e.1 = v.to_string(),
        None => out.push((k.to_string(), v.to_string())),
    };
    set("HOSTNAME", hostname);
    for e in image_env {
        match e.split_once('=') {
            Some((k, v)) => set(k, v),
            None => set(e, ""),
        }
    }
    for (k, v) in container {
        set(k, v);
    }
    if !out.iter().any(|(k, _)| k == "PATH") {
        out.insert(0, ("PATH".to_string(), DEFAULT_PATH.to_string()));
    }
    out.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The container's working directory: its own, else the image's, else `/`.
pub fn working_dir(container: Option<&str>, image: Option<&str>) -> String {
    container
        .filter(|w| !w.is_empty())
        .or(image.filter(|w| !w.is_empty()))
        .unwrap_or("/")
        .to_string()
}

/// The identity a container's process runs as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Resolves an image's `User` (`uid`, `name`, `uid:gid`, `name:group`, …) against the rootfs'
/// `/etc/passwd` and `/etc/group` texts (empty when the files are missing).
pub fn resolve_user(spec: Option<&str>, passwd: &str, group: &str) -> Result<User, String> {
    let spec = spec.map(str::trim).unwrap_or("");
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let users: Vec<Vec<&str>> = passwd
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect())
        .filter(|f: &Vec<&str>| f.len() >= 4)
        .collect();
    let groups: Vec<Vec<&str>> = group
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect())
        .filter(|f: &Vec<&str>| f.len() >= 3)
        .collect();

    // (uid, primary gid, user name when known)
    let (uid, mut gid, name) = if user_part.is_empty() {
        let root = users.iter().find(|f| f[2] == "0");
        (
            0,
            root.and_then(|f| f[3].parse().ok()).unwrap_or(0),
            root.map(|f| f[0]),
        )
    } else if let Ok(uid) = user_part.parse::<u32>() {
        let entry = users.iter().find(|f| f[2].parse() == Ok(uid));
        (
            uid,
            entry.and_then(|f| f[3].parse().ok()).unwrap_or(0),
            entry.map(|f| f[0]),
        )
    } else {
        let f = users.iter().find(|f| f[0] == user_part).ok_or_else(|| {
            format!("unable to find user {user_part}: no matching entries in passwd file")
        })?;
        let uid = f[2]
            .parse()
            .map_err(|_| format!("invalid uid for user {user_part} in passwd file"))?;
        (uid, f[3].parse().unwrap_or(0), Some(f[0]))
    };
    if let Some(g) = group_part.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    format!("unable to find group {g}: no matching entries in group file")
                })?,
        };
    }
    let mut additional_gids = Vec::new();
    if let Some(name) = name {
        for f in &groups {
            let member = f.get(3).is_some_and(|m| m.split(',').any(|m| m == name));
            if let (true, Ok(g)) = (member, f[2].parse::<u32>())
                && g != gid
                && !additional_gids.contains(&g)
            {
                additional_gids.push(g);
            }
        }
    }
    Ok(User {
        uid,
        gid,
        additional_gids,
    })
}

/// The user string to resolve: `runAsUser`/`runAsGroup` over the image's `User` (a group
/// alone keeps the image's user, as the kubelet passes the image's uid then).
pub fn effective_user(image_user: Option<&str>, sec: &Security) -> String {
    let image = image_user.map(str::trim).unwrap_or("");
    let (img_user, img_group) = match image.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (image, None),
    };
    let user = match sec.run_as_user {
        Some(uid) => uid.to_string(),
        None => img_user.to_string(),
    };
    let group = match sec.run_as_group {
        Some(gid) => Some(gid.to_string()),
        // An explicit runAsUser drops the image's group (the user's primary group applies).
        None if sec.run_as_user.is_some() => None,
        None => img_group.map(str::to_string),
    };
    match group.filter(|g| !g.is_empty()) {
        Some(g) => format!("{user}:{g}"),
        None => user,
    }
}

/// The kubelet's `runAsNonRoot` check (before the container is created): an explicit
/// `runAsUser: 0`, an image running as uid 0 (or with no user: root), or an image user name
/// that cannot be verified fail with `CreateContainerConfigError`. `pod_id` is
/// `NAME_NAMESPACE(UID)`.
pub fn verify_run_as_non_root(
    sec: &Security,
    image_user: Option<&str>,
    pod_id: &str,
    container: &str,
) -> Result<(), String> {
    if !sec.run_as_non_root {
        return Ok(());
    }
    let pod = crate::format::go_quote(pod_id);
    if let Some(uid) = sec.run_as_user {
        if uid == 0 {
            return Err(format!(
                "container's runAsUser breaks non-root policy (pod: {pod}, container: {container})"
            ));
        }
        return Ok(());
    }
    let image = image_user.map(str::trim).unwrap_or("");
    let user = image.split_once(':').map_or(image, |(u, _)| u);
    match user.parse::<u32>() {
        Ok(0) => Err(format!(
            "container has runAsNonRoot and image will run as root (pod: {pod}, container: {container})"
        )),
        Ok(_) => Ok(()),
        Err(_) if user.is_empty() => Err(format!(
            "container has runAsNonRoot and image will run as root (pod: {pod}, container: {container})"
        )),
        Err(_) => Err(format!(
            "container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root (pod: {pod}, container: {container})"
        )),
    }
}

/// cgroup v1 cpu shares for a request in millicores (Kubernetes' rule: at least 2).
pub fn cpu_shares(request_millis: Option<u64>) -> u64 {
    (request_millis.unwrap_or(0).saturating_mul(1024) / 1000).max(2)
}

/// CFS quota (µs per [`CPU_PERIOD`]) for a limit in millicores (at least 1 ms).
pub fn cpu_quota(limit_millis: u64) -> u64 {
    limit_millis.saturating_mul(CPU_PERIOD / 1000).max(1000)
}

/// The namespaces a container joins: paths of the pod's, or None for the node's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodNamespaces {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
}

/// Everything `config.json` is made of.
#[derive(Debug, Clone)]
pub struct SpecInput<'a> {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: User,
    pub terminal: bool,
    pub rootfs: &'a Path,
    pub namespaces: PodNamespaces,
    /// A private cgroup namespace (on cgroup v2 hosts, as containerd does).
    pub cgroup_ns: bool,
    /// Make the memory limit cover swap too (cgroup v1 with swap accounting).
    pub limit_swap: bool,
    /// Files the runtime manages per pod, bound at these container paths
    /// (`/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`).
    pub pod_files: Vec<(String, PathBuf)>,
    pub volumes: &'a [Mount],
    pub cgroups_path: String,
    pub resources: &'a Resources,
}

fn normalise_destination(p: &str) -> String {
    let parts: Vec<&str> = p
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// The OCI runtime spec, as runc reads it.
pub fn build(input: &SpecInput) -> Value {
    let caps: Vec<&str> = DEFAULT_CAPABILITIES.to_vec();
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    let volume_dests: Vec<String> = input
        .volumes
        .iter()
        .map(|m| normalise_destination(&m.container_path))
        .collect();
    for (dest, src) in &input.pod_files {
        if volume_dests.iter().any(|d| d == dest) {
            continue;
        }
        mounts.push(json!({"destination": dest, "type": "bind", "source": src,
                           "options": ["rbind", "rprivate", "rw"]}));
    }
    // Parents before children.
    let mut volumes: Vec<(&Mount, &String)> = input.volumes.iter().zip(&volume_dests).collect();
    volumes.sort_by_key(|(_, d)| d.matches('/').count());
    for (m, dest) in volumes {
        mounts.push(json!({"destination": dest, "type": "bind", "source": m.host_path,
                           "options": ["rbind", "rprivate", if m.read_only { "ro" } else { "rw" }]}));
    }

    let mut namespaces = vec![json!({"type": "pid"}), json!({"type": "mount"})];
    let ns = &input.namespaces;
    for (kind, path) in [("network", &ns.net), ("ipc", &ns.ipc), ("uts", &ns.uts)] {
        if let Some(p) = path {
            namespaces.push(json!({"type": kind, "path": p}));
        }
    }
    if input.cgroup_ns {
        namespaces.push(json!({"type": "cgroup"}));
    }

    let r = input.resources;
    let mut cpu = json!({"shares": cpu_shares(r.cpu_request_millis)});
    if let Some(limit) = r.cpu_limit_millis {
        cpu["quota"] = json!(cpu_quota(limit));
        cpu["period"] = json!(CPU_PERIOD);
    }
    let mut resources = json!({
        "devices": [{"allow": false, "access": "rwm"}],
        "cpu": cpu,
    });
    if let Some(limit) = r.memory_limit_bytes {
        resources["memory"] = if input.limit_swap {
            json!({"limit": limit, "swap": limit})
        } else {
            json!({"limit": limit})
        };
    }

    let mut user = json!({"uid": input.user.uid, "gid": input.user.gid});
    if !input.user.additional_gids.is_empty() {
        user["additionalGids"] = json!(input.user.additional_gids);
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": input.terminal,
            "user": user,
            "args": input.args,
            "env": input.env,
            "cwd": input.cwd,
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            "noNewPrivileges": false,
        },
        "root": {"path": input.rootfs, "readonly": false},
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": input.cgroups_path,
            "resources": resources,
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn image() -> ImageDefaults {
        ImageDefaults {
            entrypoint: sv(&["/entry"]),
            cmd: sv(&["serve", "--port=80"]),
            ..ImageDefaults::default()
        }
    }

    #[test]
    fn args_follow_kubernetes() {
        let img = image();
        assert_eq!(
            process_args(&sv(&["sh", "-c"]), &sv(&["echo"]), &img).unwrap(),
            sv(&["sh", "-c", "echo"])
        );
        assert_eq!(
            process_args(&[], &sv(&["x"]), &img).unwrap(),
            sv(&["/entry", "x"])
        );
        assert_eq!(
            process_args(&[], &[], &img).unwrap(),
            sv(&["/entry", "serve", "--port=80"])
        );
        let bare = ImageDefaults::default();
        assert_eq!(
            process_args(&[], &[], &bare).unwrap_err(),
            "no command specified"
        );
        assert_eq!(process_args(&[], &sv(&["ls"]), &bare).unwrap(), sv(&["ls"]));
    }

    #[test]
    fn env_order_and_overrides() {
        let env = merge_env(
            "web",
            &sv(&["PATH=/bin", "A=1", "B=2", "NOVALUE"]),
            &[("B".into(), "3".into()), ("C".into(), "x=y".into())],
        );
        assert_eq!(
            env,
            sv(&[
                "HOSTNAME=web",
                "PATH=/bin",
                "A=1",
                "B=3",
                "NOVALUE=",
                "C=x=y"
            ])
        );
        let env = merge_env("h", &[], &[("HOSTNAME".into(), "mine".into())]);
        assert_eq!(
            env,
            vec![format!("PATH={DEFAULT_PATH}"), "HOSTNAME=mine".into()]
        );
    }

    #[test]
    fn working_dirs() {
        assert_eq!(working_dir(Some("/w"), Some("/i")), "/w");
        assert_eq!(working_dir(Some(""), Some("/i")), "/i");
        assert_eq!(working_dir(None, None), "/");
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\nweb:x:1000:1001::/home/web:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:root,web\nwebg:x:1001:\nextra:x:2000:web\n";

    #[test]
    fn users_resolve() {
        let u = |s: Option<&str>| resolve_user(s, PASSWD, GROUP);
        assert_eq!(
            u(None).unwrap(),
            User {
                uid: 0,
                gid: 0,
                additional_gids: vec![10]
            }
        );
        assert_eq!(
            u(Some("web")).unwrap(),
            User {
                uid: 1000,
                gid: 1001,
                additional_gids: vec![10, 2000]
            }
        );
        assert_eq!(u(Some("1000")).unwrap().gid, 1001);
        assert_eq!(
            u(Some("4242")).unwrap(),
            User {
                uid: 4242,
                gid: 0,
                additional_gids: vec![]
            }
        );
        assert_eq!(u(Some("4242:7")).unwrap().gid, 7);
        assert_eq!(u(Some("web:wheel")).unwrap().gid, 10);
        assert_eq!(
            u(Some("ghost")).unwrap_err(),
            "unable to find user ghost: no matching entries in passwd file"
        );
        assert_eq!(
            u(Some("web:nogroup")).unwrap_err(),
            "unable to find group nogroup: no matching entries in group file"
        );
        assert_eq!(resolve_user(Some("5:6"), "", "").unwrap().uid, 5);
    }

    #[test]
    fn security_context_users() {
        let sec = |u: Option<i64>, g: Option<i64>| Security {
            run_as_user: u,
            run_as_group: g,
            ..Security::default()
        };
        assert_eq!(effective_user(Some("nobody"), &sec(None, None)), "nobody");
        assert_eq!(effective_user(None, &sec(Some(1000), None)), "1000");
        assert_eq!(effective_user(Some("1:2"), &sec(Some(1000), None)), "1000");
        assert_eq!(
            effective_user(Some("1:2"), &sec(Some(1000), Some(3000))),
            "1000:3000"
        );
        assert_eq!(effective_user(Some("www"), &sec(None, Some(5))), "www:5");
        let passwd = "root:x:0:0::/root:/bin/sh\n";
        let u = resolve_user(
            Some(&effective_user(None, &sec(Some(1000), None))),
            passwd,
            "",
        )
        .unwrap();
        assert_eq!((u.uid, u.gid), (1000, 0));
    }

    #[test]
    fn run_as_non_root() {
        let non_root = |u: Option<i64>| Security {
            run_as_user: u,
            run_as_non_root: true,
            ..Security::default()
        };
        let id = "web_default(1234)";
        let root = "container has runAsNonRoot and image will run as root (pod: \"web_default(1234)\", container: app)";
        assert_eq!(
            verify_run_as_non_root(&non_root(None), None, id, "app"),
            Err(root.to_string())
        );
        assert_eq!(
            verify_run_as_non_root(&non_root(None), Some("0:0"), id, "app"),
            Err(root.to_string())
        );
        assert_eq!(
            verify_run_as_non_root(&non_root(None), Some("nobody"), id, "app"),
            Err("container has runAsNonRoot and image has non-numeric user (nobody), cannot verify user is non-root (pod: \"web_default(1234)\", container: app)".to_string())
        );
        assert_eq!(
            verify_run_as_non_root(&non_root(None), Some("65534"), id, "app"),
            Ok(())
        );
        assert_eq!(
            verify_run_as_non_root(&non_root(Some(1000)), None, id, "app"),
            Ok(())
        );
        assert_eq!(
            verify_run_as_non_root(&non_root(Some(0)), Some("1000"), id, "app"),
            Err("container's runAsUser breaks non-root policy (pod: \"web_default(1234)\", container: app)".to_string())
        );
        assert_eq!(
            verify_run_as_non_root(&Security::default(), None, id, "app"),
            Ok(())
        );
    }

    #[test]
    fn cpu_rules() {
        assert_eq!(cpu_shares(None), 2);
        assert_eq!(cpu_shares(Some(1)), 2);
        assert_eq!(cpu_shares(Some(250)), 256);
        assert_eq!(cpu_shares(Some(1000)), 1024);
        assert_eq!(cpu_quota(500), 50_000);
        assert_eq!(cpu_quota(1), 1000);
    }

    #[test]
    fn spec_shape() {
        let volumes = vec![
            Mount {
                host_path: "/v/b".into(),
                container_path: "/data/sub/".into(),
                read_only: true,
            },
            Mount {
                host_path: "/v/a".into(),
                container_path: "/data".into(),
                read_only: false,
            },
            Mount {
                host_path: "/v/h".into(),
                container_path: "/etc/hosts".into(),
                read_only: false,
            },
        ];
        let res = Resources {
            cpu_request_millis: Some(100),
            cpu_limit_millis: Some(500),
            memory_limit_bytes: Some(20 << 20),
        };
        let rootfs = PathBuf::from("/s/rootfs");
        let spec = build(&SpecInput {
            args: sv(&["sh"]),
            env: sv(&["A=1"]),
            cwd: "/".into(),
            user: User::default(),
            terminal: false,
            rootfs: &rootfs,
            namespaces: PodNamespaces {
                net: Some("/p/ns/net".into()),
                ipc: Some("/p/ns/ipc".into()),
                uts: None,
            },
            cgroup_ns: false,
            limit_swap: true,
            pod_files: vec![
                ("/etc/hosts".into(), "/p/hosts".into()),
                ("/etc/hostname".into(), "/p/hostname".into()),
            ],
            volumes: &volumes,
            cgroups_path: "/skiff/podu/c".into(),
            resources: &res,
        });
        let linux = &spec["linux"];
        assert_eq!(linux["cgroupsPath"], "/skiff/podu/c");
        assert_eq!(linux["resources"]["memory"]["limit"], 20 << 20);
        assert_eq!(linux["resources"]["memory"]["swap"], 20 << 20);
        assert_eq!(linux["resources"]["cpu"]["shares"], 102);
        assert_eq!(linux["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(linux["resources"]["cpu"]["period"], 100_000);
        let ns: Vec<&str> = linux["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "mount", "network", "ipc"]);
        assert_eq!(spec["root"]["path"], "/s/rootfs");
        assert_eq!(spec["process"]["noNewPrivileges"], false);
        let dests: Vec<&str> = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        // The volume at /etc/hosts replaces the pod's file; parents come before children.
        assert_eq!(
            &dests[7..],
            ["/etc/hostname", "/data", "/data/sub", "/etc/hosts"]
        );
        let sub = &spec["mounts"][9];
        assert_eq!(sub["options"][2], "ro");
    }
}
