//! Turning a container of the pod spec into the runtime's [`ContainerConfig`]: the environment
//! (service links, then `envFrom`, then `env` with `value`, `fieldRef`, `resourceFieldRef`,
//! `configMapKeyRef` and `secretKeyRef`, each value `$(VAR)`-expanded against the variables
//! before it), `command` + `args` expanded against the whole environment, `workingDir`, the
//! volumes (emptyDir, hostPath, configMap, secret, downwardAPI and projected volumes as
//! directories under the pod's directory, files 0644 unless `defaultMode`/`mode` say
//! otherwise; projected `serviceAccountToken` sources are skipped), the termination message
//! file and the effective `securityContext` users.
//!
//! Failures here are the kubelet's `CreateContainerConfigError` texts (`configmap "cfg" not
//! found`, `couldn't find key K in ConfigMap ns/name`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, EnvVar, KeyToPath, Pod, Secret, Service, Volume,
};
use kube::Api;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::runtime::{ContainerConfig, Mount, Resources, Security};

/// What config resolution needs besides the pod.
pub struct Env<'a> {
    pub client: &'a kube::Client,
    pub node_name: &'a str,
    pub node_ip: &'a str,
    pub pod_ip: Option<&'a str>,
    /// `<pods dir>/<uid>`: volumes live under `volumes/`.
    pub pod_dir: &'a Path,
    /// The node's `status.allocatable`: the limits `resourceFieldRef` reports for a container
    /// without its own.
    pub allocatable: &'a BTreeMap<String, Quantity>,
}

/// Expands `$(VAR)` references the Kubernetes way: `$$` is a literal `$`, an unknown or
/// unterminated reference is left as written.
pub fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut start = 0;
    while i < b.len() {
        if b[i] != b'$' || i + 1 >= b.len() {
            i += 1;
            continue;
        }
        out.push_str(&s[start..i]);
        match b[i + 1] {
            b'$' => {
                out.push('$');
                i += 2;
            }
            b'(' => match s[i + 2..].find(')') {
                Some(len) => {
                    let name = &s[i + 2..i + 2 + len];
                    match lookup(name) {
                        Some(v) => out.push_str(&v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    i += 2 + len + 1;
                }
                None => {
                    out.push_str("$(");
                    i += 2;
                }
            },
            _ => {
                // `$x`: kept as written.
                out.push('$');
                i += 1;
            }
        }
        start = i;
    }
    out.push_str(&s[start..]);
    out
}

/// Expands each string against `env` (the last definition of a name wins).
pub fn expand_all(items: &[String], env: &[(String, String)]) -> Vec<String> {
    let map: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let lookup = |n: &str| map.get(n).map(|v| v.to_string());
    items.iter().map(|s| expand(s, &lookup)).collect()
}

/// The container's static `env` values (no `valueFrom`), for exec probes and hooks.
pub fn static_env(c: &Container) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for e in c.env.iter().flatten() {
        if e.value_from.is_none() {
            let v = expand_with(&env, e.value.as_deref().unwrap_or(""));
            env.push((e.name.clone(), v));
        }
    }
    env
}

fn expand_with(env: &[(String, String)], s: &str) -> String {
    let lookup = |n: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    expand(s, &lookup)
}

/// Builds the runtime config of instance `attempt` of container `c`.
pub async fn resolve(
    env: &Env<'_>,
    pod: &Pod,
    c: &Container,
    attempt: u32,
) -> Result<ContainerConfig, String> {
    let vars = environment(env, pod, c).await?;
    let command = expand_all(c.command.as_deref().unwrap_or_default(), &vars);
    let args = expand_all(c.args.as_deref().unwrap_or_default(), &vars);
    let mut mounts = mounts(env, pod, c).await?;
    if let Some(m) = termination_mount(env.pod_dir, c, attempt, &mounts)? {
        mounts.push(m);
    }
    Ok(ContainerConfig {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        command,
        args,
        env: vars,
        working_dir: c.working_dir.clone().filter(|d| !d.is_empty()),
        attempt,
        mounts,
        resources: resources(c),
        tty: c.tty.unwrap_or(false),
        stdin: c.stdin.unwrap_or(false),
        security: security(pod, c),
    })
}

/// The effective user settings of `securityContext`: each field from the container, else from
/// the pod; the pod's `supplementalGroups` and `fsGroup` as extra groups.
pub fn security(pod: &Pod, c: &Container) -> Security {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let csc = c.security_context.as_ref();
    let mut groups: Vec<i64> = psc
        .and_then(|p| p.supplemental_groups.clone())
        .unwrap_or_default();
    if let Some(g) = psc.and_then(|p| p.fs_group)
        && !groups.contains(&g)
    {
        groups.push(g);
    }
    Security {
        run_as_user: csc
            .and_then(|c| c.run_as_user)
            .or(psc.and_then(|p| p.run_as_user)),
        run_as_group: csc
            .and_then(|c| c.run_as_group)
            .or(psc.and_then(|p| p.run_as_group)),
        run_as_non_root: csc
            .and_then(|c| c.run_as_non_root)
            .or(psc.and_then(|p| p.run_as_non_root))
            == Some(true),
        supplemental_groups: groups,
    }
}

/// The container path of the termination message file when the spec leaves it unset.
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

/// The host file behind instance `attempt`'s termination message:
/// `<pod dir>/containers/<name>/<attempt>.termination-log`.
pub fn termination_file(pod_dir: &Path, container: &str, attempt: u32) -> PathBuf {
    pod_dir
        .join("containers")
        .join(container)
        .join(format!("{attempt}.termination-log"))
}

/// Like the kubelet: an empty, world-writable file per instance (so a non-root user can write
/// it), bind-mounted read-write at `terminationMessagePath` unless a volume already covers that
/// path. The worker reads it once the instance has exited.
fn termination_mount(
    pod_dir: &Path,
    c: &Container,
    attempt: u32,
    volumes: &[Mount],
) -> Result<Option<Mount>, String> {
    use std::os::unix::fs::PermissionsExt;
    let path = match c.termination_message_path.as_deref() {
        Some("") => return Ok(None),
        Some(p) => p,
        None => DEFAULT_TERMINATION_MESSAGE_PATH,
    };
    let norm = |p: &str| p.trim_end_matches('/').to_string();
    if volumes
        .iter()
        .any(|m| norm(&m.container_path) == norm(path))
    {
        return Ok(None);
    }
    let file = termination_file(pod_dir, &c.name, attempt);
    let fail = |e: std::io::Error| format!("failed to create the termination message file: {e}");
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    std::fs::write(&file, b"").map_err(fail)?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).map_err(fail)?;
    Ok(Some(Mount {
        host_path: file,
        container_path: path.to_string(),
        read_only: false,
    }))
}

/// The container's cpu request and limit (millicores) and memory limit (bytes).
fn resources(c: &Container) -> Resources {
    let r = c.resources.as_ref();
    let get = |list: Option<&BTreeMap<String, Quantity>>, name: &str, milli: bool| {
        let q = skiff_core::quantity::Quantity::parse(&list?.get(name)?.0).ok()?;
        let v = if milli { q.milli_value() } else { q.value() };
        u64::try_from(v).ok()
    };
    Resources {
        cpu_request_millis: get(r.and_then(|r| r.requests.as_ref()), "cpu", true),
        cpu_limit_millis: get(r.and_then(|r| r.limits.as_ref()), "cpu", true),
        memory_limit_bytes: get(r.and_then(|r| r.limits.as_ref()), "memory", false),
    }
}

/// `envFrom` then `env`, in order, each value expanded against what came before.
async fn environment(
    env: &Env<'_>,
    pod: &Pod,
    c: &Container,
) -> Result<Vec<(String, String)>, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    // Service links come first: explicit variables override them, and `$(VAR)` sees them.
    let links = pod.spec.as_ref().and_then(|s| s.enable_service_links) != Some(false);
    let mut vars: Vec<(String, String)> = service_env(&services(env, ns, links).await?, ns, links);
    let set = |vars: &mut Vec<(String, String)>, k: String, v: String| {
        vars.retain(|(n, _)| *n != k);
        vars.push((k, v));
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match config_map(env, ns, &r.name).await? {
                Some(data) => {
                    for (k, v) in data {
                        set(&mut vars, format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("configmap {:?} not found", r.name)),
            }
        }
        if let Some(r) = &from.secret_ref {
            match secret(env, ns, &r.name).await? {
                Some(data) => {
                    for (k, v) in data {
                        set(&mut vars, format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("secret {:?} not found", r.name)),
            }
        }
    }
    for e in c.env.iter().flatten() {
        if let Some(v) = env_value(env, pod, ns, &c.name, e, &vars).await? {
            set(&mut vars, e.name.clone(), v);
        }
    }
    Ok(vars)
}

/// One `env` entry's value (None: an optional reference that is missing).
async fn env_value(
    env: &Env<'_>,
    pod: &Pod,
    ns: &str,
    container: &str,
    e: &EnvVar,
    vars: &[(String, String)],
) -> Result<Option<String>, String> {
    let Some(from) = &e.value_from else {
        return Ok(Some(expand_with(vars, e.value.as_deref().unwrap_or(""))));
    };
    if let Some(f) = &from.field_ref {
        return Ok(Some(field_value(env, pod, &f.field_path)?));
    }
    if let Some(r) = &from.resource_field_ref {
        let name = r.container_name.as_deref().filter(|n| !n.is_empty());
        return Ok(Some(resource_field_value(
            pod,
            name.unwrap_or(container),
            &r.resource,
            r.divisor.as_ref(),
            env.allocatable,
        )?));
    }
    if let Some(r) = &from.config_map_key_ref {
        let optional = r.optional == Some(true);
        return match config_map(env, ns, &r.name).await? {
            Some(data) => match data.get(&r.key) {
                Some(v) => Ok(Some(v.clone())),
                None if optional => Ok(None),
                None => Err(format!(
                    "couldn't find key {} in ConfigMap {ns}/{}",
                    r.key, r.name
                )),
            },
            None if optional => Ok(None),
            None => Err(format!("configmap {:?} not found", r.name)),
        };
    }
    if let Some(r) = &from.secret_key_ref {
        let optional = r.optional == Some(true);
        return match secret(env, ns, &r.name).await? {
            Some(data) => match data.get(&r.key) {
                Some(v) => Ok(Some(v.clone())),
                None if optional => Ok(None),
                None => Err(format!(
                    "couldn't find key {} in Secret {ns}/{}",
                    r.key, r.name
                )),
            },
            None if optional => Ok(None),
            None => Err(format!("secret {:?} not found", r.name)),
        };
    }
    Ok(Some(String::new()))
}

/// The downward API's `fieldRef` values.
fn field_value(env: &Env<'_>, pod: &Pod, path: &str) -> Result<String, String> {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    let label = |map: &Option<BTreeMap<String, String>>, key: &str| {
        map.as_ref()
            .and_then(|l| l.get(key))
            .cloned()
            .unwrap_or_default()
    };
    let bracket = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix("['"))
            .and_then(|r| r.strip_suffix("']"))
            .map(str::to_string)
    };
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => env.node_name.to_string(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => env.node_ip.to_string(),
        "status.podIP" | "status.podIPs" => env.pod_ip.unwrap_or("").to_string(),
        _ => {
            if let Some(k) = bracket("metadata.labels") {
                label(&m.labels, &k)
            } else if let Some(k) = bracket("metadata.annotations") {
                label(&m.annotations, &k)
            } else {
                return Err(format!("unsupported fieldPath: {path}"));
            }
        }
    })
}

fn api_error(what: &str, name: &str, e: kube::Error) -> String {
    format!("cannot read {what} {name:?}: {e}")
}

/// A ConfigMap's data (binary data as lossy UTF-8); None when it does not exist.
async fn config_map(
    env: &Env<'_>,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, String>>, String> {
    let api: Api<ConfigMap> = Api::namespaced(env.client.clone(), ns);
    match api.get_opt(name).await {
        Ok(Some(cm)) => {
            let mut data = cm.data.unwrap_or_default();
            for (k, v) in cm.binary_data.unwrap_or_default() {
                data.insert(k, String::from_utf8_lossy(&v.0).into_owned());
            }
            Ok(Some(data))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(api_error("configmap", name, e)),
    }
}

/// A Secret's data, decoded; None when it does not exist.
async fn secret(
    env: &Env<'_>,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, String>>, String> {
    let api: Api<Secret> = Api::namespaced(env.client.clone(), ns);
    match api.get_opt(name).await {
        Ok(Some(s)) => {
            let mut data: BTreeMap<String, String> = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                .collect();
            data.extend(s.string_data.unwrap_or_default());
            Ok(Some(data))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(api_error("secret", name, e)),
    }
}

/// Where the pod's volume `name` lives on the node.
pub fn volume_dir(pod_dir: &Path, name: &str) -> PathBuf {
    pod_dir.join("volumes").join(name)
}

/// The container's `volumeMounts`, preparing the volumes they name.
async fn mounts(env: &Env<'_>, pod: &Pod, c: &Container) -> Result<Vec<Mount>, String> {
    let volumes: &[Volume] = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default();
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut out = Vec::new();
    for vm in c.volume_mounts.iter().flatten() {
        let Some(v) = volumes.iter().find(|v| v.name == vm.name) else {
            return Err(format!(
                "cannot find volume {:?} to mount into container {:?}",
                vm.name, c.name
            ));
        };
        let mut host = prepare_volume(env, pod, ns, v).await?;
        if let Some(sub) = vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
            host = host.join(sub);
            if !host.exists() {
                std::fs::create_dir_all(&host)
                    .map_err(|e| format!("failed to create subPath directory: {e}"))?;
            }
        }
        out.push(Mount {
            host_path: host,
            container_path: vm.mount_path.clone(),
            read_only: vm.read_only == Some(true),
        });
    }
    Ok(out)
}

/// Makes a volume's directory ready and returns it.
async fn prepare_volume(env: &Env<'_>, pod: &Pod, ns: &str, v: &Volume) -> Result<PathBuf, String> {
    if let Some(hp) = &v.host_path {
        let p = PathBuf::from(&hp.path);
        if matches!(hp.type_.as_deref(), Some("DirectoryOrCreate")) {
            std::fs::create_dir_all(&p).map_err(|e| e.to_string())?;
        }
        return Ok(p);
    }
    let dir = volume_dir(env.pod_dir, &v.name);
    let mkdir = |d: &Path| {
        std::fs::create_dir_all(d)
            .map_err(|e| format!("MountVolume.SetUp failed for volume {:?} : {e}", v.name))
    };
    if v.empty_dir.is_some() {
        mkdir(&dir)?;
        return Ok(dir);
    }
    if let Some(cm) = &v.config_map {
        let name = cm.name.clone();
        let data = match config_map(env, ns, &name).await? {
            Some(d) => d,
            None if cm.optional == Some(true) => BTreeMap::new(),
            None => return Err(format!("configmap {name:?} not found")),
        };
        mkdir(&dir)?;
        write_files(&dir, &data, cm.items.as_deref().map(items))?;
        set_modes(&dir, cm.default_mode, cm.items.as_deref())?;
        return Ok(dir);
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let data = match secret(env, ns, &name).await? {
            Some(d) => d,
            None if s.optional == Some(true) => BTreeMap::new(),
            None => return Err(format!("secret {name:?} not found")),
        };
        mkdir(&dir)?;
        write_files(&dir, &data, s.items.as_deref().map(items))?;
        set_modes(&dir, s.default_mode, s.items.as_deref())?;
        return Ok(dir);
    }
    if let Some(d) = &v.downward_api {
        let files = downward_files(env, pod, d.items.as_deref().unwrap_or_default())?;
        mkdir(&dir)?;
        write_file_modes(&dir, &files, d.default_mode)?;
        return Ok(dir);
    }
    if let Some(p) = &v.projected {
        let mut files: Vec<(String, String, Option<i32>)> = Vec::new();
        for src in p.sources.iter().flatten() {
            if let Some(cm) = &src.config_map {
                let data = match config_map(env, ns, &cm.name).await? {
                    Some(d) => d,
                    None if cm.optional == Some(true) => BTreeMap::new(),
                    None => return Err(format!("configmap {:?} not found", cm.name)),
                };
                files.extend(select(&data, cm.items.as_deref()));
            }
            if let Some(sec) = &src.secret {
                let data = match secret(env, ns, &sec.name).await? {
                    Some(d) => d,
                    None if sec.optional == Some(true) => BTreeMap::new(),
                    None => return Err(format!("secret {:?} not found", sec.name)),
                };
                files.extend(select(&data, sec.items.as_deref()));
            }
            if let Some(d) = &src.downward_api {
                files.extend(downward_files(
                    env,
                    pod,
                    d.items.as_deref().unwrap_or_default(),
                )?);
            }
            // serviceAccountToken sources are not served (no token issuer): skipped.
        }
        mkdir(&dir)?;
        write_file_modes(&dir, &files, p.default_mode)?;
        return Ok(dir);
    }
    Err(format!(
        "volume {:?}: only emptyDir, hostPath, configMap, secret, downwardAPI and projected volumes are supported by this runtime",
        v.name
    ))
}

/// The file mode of volume files when neither the item nor the volume sets one (0644).
pub const DEFAULT_FILE_MODE: i32 = 0o644;

/// Applies `defaultMode` and the items' `mode` to the files a configMap or secret volume wrote.
fn set_modes(
    dir: &Path,
    default_mode: Option<i32>,
    list: Option<&[KeyToPath]>,
) -> Result<(), String> {
    let default = default_mode.unwrap_or(DEFAULT_FILE_MODE);
    let mut paths: Vec<(String, i32)> = Vec::new();
    match list {
        Some(list) => {
            for k in list {
                paths.push((k.path.clone(), k.mode.unwrap_or(default)));
            }
        }
        None => {
            for e in std::fs::read_dir(dir).map_err(|e| e.to_string())?.flatten() {
                if e.file_type().is_ok_and(|t| t.is_file()) {
                    paths.push((e.file_name().to_string_lossy().into_owned(), default));
                }
            }
        }
    }
    for (path, mode) in paths {
        chmod(&dir.join(path), mode)?;
    }
    Ok(())
}

fn chmod(file: &Path, mode: i32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if !file.exists() {
        return Ok(());
    }
    let mode = u32::try_from(mode & 0o777).unwrap_or(0o644);
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())
}

/// (path, content, mode) of the keys of a projected configMap/secret source (every key, or the
/// listed ones).
fn select(
    data: &BTreeMap<String, String>,
    list: Option<&[KeyToPath]>,
) -> Vec<(String, String, Option<i32>)> {
    match list {
        Some(list) => list
            .iter()
            .filter_map(|k| {
                data.get(&k.key)
                    .map(|v| (k.path.clone(), v.clone(), k.mode))
            })
            .collect(),
        None => data
            .iter()
            .map(|(k, v)| (k.clone(), v.clone(), None))
            .collect(),
    }
}

/// The files of a downwardAPI volume (or projected source): (path, content, mode).
fn downward_files(
    env: &Env<'_>,
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
) -> Result<Vec<(String, String, Option<i32>)>, String> {
    let mut out = Vec::new();
    for item in items {
        let value = if let Some(f) = &item.field_ref {
            match f.field_path.as_str() {
                "metadata.labels" => format_map(pod.metadata.labels.as_ref()),
                "metadata.annotations" => format_map(pod.metadata.annotations.as_ref()),
                path => field_value(env, pod, path)?,
            }
        } else if let Some(r) = &item.resource_field_ref {
            resource_field_value(
                pod,
                r.container_name.as_deref().unwrap_or(""),
                &r.resource,
                r.divisor.as_ref(),
                env.allocatable,
            )?
        } else {
            continue;
        };
        out.push((item.path.clone(), value, item.mode));
    }
    Ok(out)
}

/// Writes each (path, content, mode) under `dir`, mode defaulting to `default_mode` or 0644.
fn write_file_modes(
    dir: &Path,
    files: &[(String, String, Option<i32>)],
    default_mode: Option<i32>,
) -> Result<(), String> {
    for (path, content, mode) in files {
        if path.split('/').any(|p| p == "..") || path.starts_with('/') {
            return Err(format!("invalid path {path:?}"));
        }
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::write(&file, content).map_err(|e| e.to_string())?;
        chmod(&file, mode.or(default_mode).unwrap_or(DEFAULT_FILE_MODE))?;
    }
    Ok(())
}

/// The downward API's rendering of a whole label or annotation map: `key="value"` lines in key
/// order (values quoted the Go way), no trailing newline.
pub fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", crate::format::go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A `resourceFieldRef` value of container `container`: `limits.*`/`requests.*` of cpu,
/// memory or ephemeral-storage divided by `divisor` (default 1) and rounded up; cpu in
/// millicores against the divisor's millicores. A limit the container does not set is the
/// node's allocatable amount, as the kubelet reports it.
pub fn resource_field_value(
    pod: &Pod,
    container: &str,
    resource: &str,
    divisor: Option<&Quantity>,
    allocatable: &BTreeMap<String, Quantity>,
) -> Result<String, String> {
    use skiff_core::quantity::Quantity as Q;
    let spec = pod.spec.as_ref();
    let c = spec
        .into_iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .find(|c| c.name == container)
        .ok_or_else(|| format!("container {container} not found"))?;
    let (kind, name) = resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported container resource : {resource}"))?;
    if !matches!(name, "cpu" | "memory" | "ephemeral-storage")
        || !matches!(kind, "limits" | "requests")
    {
        return Err(format!("unsupported container resource : {resource}"));
    }
    let res = c.resources.as_ref();
    let list = match kind {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        _ => res.and_then(|r| r.requests.as_ref()),
    };
    let parse = |q: &Quantity| Q::parse(&q.0).map_err(|_| format!("invalid quantity {:?}", q.0));
    let value = match list.and_then(|l| l.get(name)) {
        Some(q) => parse(q)?,
        None if kind == "limits" => match allocatable.get(name) {
            Some(q) => parse(q)?,
            None => Q::from_units(0),
        },
        None => Q::from_units(0),
    };
    let divisor = match divisor.map(parse).transpose()? {
        Some(d) if !d.is_zero() => d,
        _ => Q::from_units(1),
    };
    let ceil_div = |a: i128, b: i128| if b <= 0 { 0 } else { (a + b - 1).div_euclid(b) };
    let n = if name == "cpu" {
        ceil_div(value.milli_value(), divisor.milli_value())
    } else {
        ceil_div(value.value(), divisor.value().max(1))
    };
    Ok(n.to_string())
}

/// The Services of `ns` (when `links`) and the `kubernetes` Service of `default`, as the
/// kubelet reads them for service-link variables.
async fn services(env: &Env<'_>, ns: &str, links: bool) -> Result<Vec<Service>, String> {
    let list = |ns: String| {
        let api: Api<Service> = Api::namespaced(env.client.clone(), &ns);
        async move {
            api.list(&Default::default())
                .await
                .map(|l| l.items)
                .map_err(|e| format!("failed to list services: {e}"))
        }
    };
    let mut out = if links || ns == "default" {
        list(ns.to_string()).await?
    } else {
        Vec::new()
    };
    if ns != "default" {
        out.extend(
            list("default".to_string())
                .await?
                .into_iter()
                .filter(|s| s.metadata.name.as_deref() == Some("kubernetes")),
        );
    }
    Ok(out)
}

/// The service-link variables of a pod in `ns`: for every Service with a cluster IP (not
/// headless) and at least one port — those of `ns` only when `links` (`enableServiceLinks`),
/// the `kubernetes` Service of `default` always — `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT`,
/// `<NAME>_SERVICE_PORT_<PORTNAME>` per named port, and the Docker link variables
/// (`<NAME>_PORT`, `<NAME>_PORT_<PORT>_<PROTO>` and its `_PROTO`, `_PORT`, `_ADDR`). Names are
/// upper-cased with `-` → `_`; Services in name order.
pub fn service_env(services: &[Service], ns: &str, links: bool) -> Vec<(String, String)> {
    let mut chosen: BTreeMap<&str, &Service> = BTreeMap::new();
    for s in services {
        let Some(name) = s.metadata.name.as_deref() else {
            continue;
        };
        let s_ns = s.metadata.namespace.as_deref().unwrap_or(ns);
        if s_ns == "default" && name == "kubernetes" {
            chosen.entry(name).or_insert(s);
        } else if s_ns == ns && links {
            chosen.insert(name, s);
        }
    }
    let var = |s: &str| s.replace('-', "_").to_uppercase();
    let mut out = Vec::new();
    for (name, s) in chosen {
        let Some(spec) = s.spec.as_ref() else {
            continue;
        };
        let ip = match spec.cluster_ip.as_deref() {
            Some(ip) if !ip.is_empty() && ip != "None" => ip,
            _ => continue,
        };
        let ports = spec.ports.as_deref().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        let prefix = var(name);
        out.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
        out.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        for p in ports {
            if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!("{prefix}_SERVICE_PORT_{}", var(pn)),
                    p.port.to_string(),
                ));
            }
        }
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        for (i, p) in ports.iter().enumerate() {
            let proto = p
                .protocol
                .as_deref()
                .filter(|p| !p.is_empty())
                .unwrap_or("TCP");
            let lower = proto.to_lowercase();
            let url = format!("{lower}://{host}:{}", p.port);
            if i == 0 {
                out.push((format!("{prefix}_PORT"), url.clone()));
            }
            let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
            out.push((format!("{pp}_PROTO"), lower.clone()));
            out.push((format!("{pp}_PORT"), p.port.to_string()));
            out.push((format!("{pp}_ADDR"), ip.to_string()));
            out.push((pp, url));
        }
    }
    out
}

fn items(list: &[KeyToPath]) -> Vec<(String, String)> {
    list.iter()
        .map(|k| (k.key.clone(), k.path.clone()))
        .collect()
}

/// Writes each key as a file (or only the listed keys, at their paths).
fn write_files(
    dir: &Path,
    data: &BTreeMap<String, String>,
    items: Option<Vec<(String, String)>>,
) -> Result<(), String> {
    let pairs: Vec<(String, String)> = match items {
        Some(list) => list,
        None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
    };
    for (key, path) in pairs {
        let Some(value) = data.get(&key) else {
            continue;
        };
        if path.split('/').any(|p| p == "..") {
            return Err(format!("invalid path {path:?}"));
        }
        let file = dir.join(&path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::write(&file, value).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(n: &str) -> Option<String> {
        match n {
            "A" => Some("alpha".into()),
            "B" => Some("$(A)".into()),
            _ => None,
        }
    }

    #[test]
    fn expansion_follows_kubernetes() {
        assert_eq!(expand("x $(A) y", &lookup), "x alpha y");
        assert_eq!(expand("$(A)$(A)", &lookup), "alphaalpha");
        assert_eq!(expand("$(NOPE)", &lookup), "$(NOPE)");
        assert_eq!(expand("$$(A)", &lookup), "$(A)");
        assert_eq!(expand("$$", &lookup), "$");
        assert_eq!(expand("$A", &lookup), "$A");
        assert_eq!(expand("tail $", &lookup), "tail $");
        assert_eq!(expand("$(A", &lookup), "$(A");
        // Values are not expanded twice.
        assert_eq!(expand("$(B)", &lookup), "$(A)");
        assert_eq!(expand("héllo $(A) ü", &lookup), "héllo alpha ü");
    }

    #[test]
    fn static_env_expands_in_order() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "env": [
                {"name": "A", "value": "1"},
                {"name": "B", "value": "$(A)-2"},
                {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "D", "value": "$(C)"},
            ],
        }))
        .unwrap();
        assert_eq!(
            static_env(&c),
            [
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), "1-2".to_string()),
                ("D".to_string(), "$(C)".to_string()),
            ]
        );
        assert_eq!(
            expand_all(&["echo $(B)".to_string()], &static_env(&c)),
            ["echo 1-2"]
        );
    }

    #[test]
    fn files_from_data() {
        let dir = std::env::temp_dir().join(format!("skiff-cfg-test-{}", std::process::id()));
        let data = BTreeMap::from([
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
        ]);
        write_files(&dir, &data, None).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "1");
        write_files(&dir, &data, Some(vec![("b".into(), "sub/x".into())])).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("sub/x")).unwrap(), "2");
        assert!(write_files(&dir, &data, Some(vec![("b".into(), "../x".into())])).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn svc(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": ports},
        }))
        .unwrap()
    }

    #[test]
    fn service_links() {
        let services = vec![
            svc(
                "default",
                "kubernetes",
                "10.96.0.1",
                serde_json::json!([{"name": "https", "port": 443, "protocol": "TCP"}]),
            ),
            svc(
                "web",
                "my-svc",
                "10.96.0.20",
                serde_json::json!([{"port": 80}, {"name": "dns-udp", "port": 53, "protocol": "UDP"}]),
            ),
            svc("web", "headless", "None", serde_json::json!([{"port": 80}])),
            svc(
                "other",
                "elsewhere",
                "10.96.0.30",
                serde_json::json!([{"port": 80}]),
            ),
        ];
        let env = service_env(&services, "web", true);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("MY_SVC_SERVICE_HOST"), Some("10.96.0.20"));
        assert_eq!(get("MY_SVC_SERVICE_PORT"), Some("80"));
        assert_eq!(get("MY_SVC_SERVICE_PORT_DNS_UDP"), Some("53"));
        assert_eq!(get("MY_SVC_PORT"), Some("tcp://10.96.0.20:80"));
        assert_eq!(get("MY_SVC_PORT_80_TCP"), Some("tcp://10.96.0.20:80"));
        assert_eq!(get("MY_SVC_PORT_80_TCP_PROTO"), Some("tcp"));
        assert_eq!(get("MY_SVC_PORT_80_TCP_PORT"), Some("80"));
        assert_eq!(get("MY_SVC_PORT_80_TCP_ADDR"), Some("10.96.0.20"));
        assert_eq!(get("MY_SVC_PORT_53_UDP"), Some("udp://10.96.0.20:53"));
        assert_eq!(get("MY_SVC_PORT_53_UDP_PROTO"), Some("udp"));
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("443"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(get("KUBERNETES_PORT"), Some("tcp://10.96.0.1:443"));
        assert!(get("HEADLESS_SERVICE_HOST").is_none());
        assert!(get("ELSEWHERE_SERVICE_HOST").is_none());
        // enableServiceLinks: false keeps only the kubernetes Service.
        let env = service_env(&services, "web", false);
        assert!(env.iter().all(|(k, _)| k.starts_with("KUBERNETES_")));
        assert!(!env.is_empty());
    }

    #[test]
    fn resource_field_refs() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "d"},
            "spec": {"containers": [
                {"name": "a", "resources": {
                    "limits": {"cpu": "500m", "memory": "64Mi"},
                    "requests": {"cpu": "250m", "memory": "32Mi"}}},
                {"name": "b"},
            ]},
        }))
        .unwrap();
        let mut alloc = BTreeMap::new();
        alloc.insert("cpu".to_string(), Quantity("2".into()));
        alloc.insert("memory".to_string(), Quantity("1Gi".into()));
        let q = |s: &str| Quantity(s.to_string());
        let v = |c: &str, r: &str, d: Option<&Quantity>| {
            resource_field_value(&pod, c, r, d, &alloc).unwrap()
        };
        assert_eq!(v("a", "limits.cpu", None), "1");
        assert_eq!(v("a", "limits.cpu", Some(&q("1m"))), "500");
        assert_eq!(v("a", "requests.cpu", Some(&q("1m"))), "250");
        assert_eq!(v("a", "limits.memory", None), "67108864");
        assert_eq!(v("a", "limits.memory", Some(&q("1Mi"))), "64");
        assert_eq!(v("a", "requests.memory", Some(&q("1Mi"))), "32");
        assert_eq!(v("a", "limits.memory", Some(&q("0"))), "67108864");
        // No limit: the node's allocatable.
        assert_eq!(v("b", "limits.cpu", None), "2");
        assert_eq!(v("b", "limits.memory", Some(&q("1Mi"))), "1024");
        assert_eq!(v("b", "requests.cpu", None), "0");
        assert!(resource_field_value(&pod, "a", "limits.gpu", None, &alloc).is_err());
        assert!(resource_field_value(&pod, "zz", "limits.cpu", None, &alloc).is_err());
    }

    #[test]
    fn label_maps_render_sorted_and_quoted() {
        let mut m = BTreeMap::new();
        m.insert("b".to_string(), "two".to_string());
        m.insert("a".to_string(), "say \"hi\"".to_string());
        assert_eq!(format_map(Some(&m)), "a=\"say \\\"hi\\\"\"\nb=\"two\"");
        assert_eq!(format_map(None), "");
    }

    #[test]
    fn security_context_merges_container_over_pod() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "securityContext": {"runAsUser": 1000, "runAsGroup": 2000, "runAsNonRoot": true,
                                    "supplementalGroups": [3000], "fsGroup": 4000},
                "containers": [
                    {"name": "a", "securityContext": {"runAsUser": 1500, "runAsNonRoot": false}},
                    {"name": "b"},
                ]},
        }))
        .unwrap();
        let spec = pod.spec.as_ref().unwrap();
        let a = security(&pod, &spec.containers[0]);
        assert_eq!(a.run_as_user, Some(1500));
        assert_eq!(a.run_as_group, Some(2000));
        assert!(!a.run_as_non_root);
        assert_eq!(a.supplemental_groups, [3000, 4000]);
        let b = security(&pod, &spec.containers[1]);
        assert_eq!(b.run_as_user, Some(1000));
        assert!(b.run_as_non_root);
    }
}
