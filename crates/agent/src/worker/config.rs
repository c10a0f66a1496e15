//! Turning a container of the pod spec into the runtime's [`ContainerConfig`]: the environment
//! (`envFrom`, then `env` with `value`, `fieldRef`, `configMapKeyRef` and `secretKeyRef`, each
//! value `$(VAR)`-expanded against the variables before it), `command` + `args` expanded
//! against the whole environment, `workingDir`, and the volumes (emptyDir, hostPath, configMap
//! and secret volumes as directories under the pod's directory).
//!
//! Failures here are the kubelet's `CreateContainerConfigError` texts (`configmap "cfg" not
//! found`, `couldn't find key K in ConfigMap ns/name`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, Pod, Secret, Volume};
use kube::Api;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::runtime::{ContainerConfig, Mount, Resources};

/// What config resolution needs besides the pod.
pub struct Env<'a> {
    pub client: &'a kube::Client,
    pub node_name: &'a str,
    pub node_ip: &'a str,
    pub pod_ip: Option<&'a str>,
    /// `<pods dir>/<uid>`: volumes live under `volumes/`.
    pub pod_dir: &'a Path,
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
    let mounts = mounts(env, pod, c).await?;
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
    })
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
    let mut vars: Vec<(String, String)> = Vec::new();
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
        if let Some(v) = env_value(env, pod, ns, e, &vars).await? {
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
    e: &EnvVar,
    vars: &[(String, String)],
) -> Result<Option<String>, String> {
    let Some(from) = &e.value_from else {
        return Ok(Some(expand_with(vars, e.value.as_deref().unwrap_or(""))));
    };
    if let Some(f) = &from.field_ref {
        return Ok(Some(field_value(env, pod, &f.field_path)?));
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
    if from.resource_field_ref.is_some() {
        // No resource limits are enforced by the host runtime; report no value.
        return Ok(Some(String::new()));
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
        let mut host = prepare_volume(env, ns, v).await?;
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
async fn prepare_volume(env: &Env<'_>, ns: &str, v: &Volume) -> Result<PathBuf, String> {
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
        return Ok(dir);
    }
    Err(format!(
        "volume {:?}: only emptyDir, hostPath, configMap and secret volumes are supported by this runtime",
        v.name
    ))
}

fn items(list: &[k8s_openapi::api::core::v1::KeyToPath]) -> Vec<(String, String)> {
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
}
