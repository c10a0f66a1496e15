//! Pod networking through CNI plugins, invoked directly as the CNI specification describes: the
//! command and container in `CNI_*` environment variables, the network configuration on stdin,
//! the result (or an error object) on stdout.
//!
//! Each pod gets `lo` from the `loopback` plugin and `eth0` from the `bridge` plugin (a veth pair
//! on the node's bridge, the bridge being the pods' gateway) with `host-local` addresses from the
//! pod CIDR. The leases live under the runtime's state directory, not `/var/lib/cni`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// The CNI specification version of the configurations we write.
pub const CNI_VERSION: &str = "1.0.0";

/// The plugins the runtime needs in its CNI bin directory.
pub const REQUIRED_PLUGINS: [&str; 3] = ["bridge", "host-local", "loopback"];

/// The network name (host-local keeps its leases in `<dataDir>/<name>`).
pub const NETWORK_NAME: &str = "skiff";

/// How long one plugin call may take.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(120);

/// The pod network of a node.
#[derive(Debug, Clone)]
pub struct Network {
    pub bin_dir: PathBuf,
    pub bridge: String,
    pub subnet: String,
    /// host-local's `dataDir`.
    pub ipam_dir: PathBuf,
}

impl Network {
    /// The `bridge` plugin's configuration.
    pub fn bridge_conf(&self) -> Value {
        json!({
            "cniVersion": CNI_VERSION,
            "name": NETWORK_NAME,
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.subnet}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": self.ipam_dir,
            },
        })
    }
}

/// The `loopback` plugin's configuration.
pub fn loopback_conf() -> Value {
    json!({"cniVersion": CNI_VERSION, "name": "lo", "type": "loopback"})
}

/// The plugins of `REQUIRED_PLUGINS` missing from `bin_dir`.
pub fn missing_plugins(bin_dir: &Path) -> Vec<&'static str> {
    use std::os::unix::fs::PermissionsExt;
    REQUIRED_PLUGINS
        .into_iter()
        .filter(|p| {
            !std::fs::metadata(bin_dir.join(p))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .collect()
}

/// One plugin call. `netns` may be empty (a DEL whose namespace is gone).
pub async fn invoke(
    bin_dir: &Path,
    conf: &Value,
    command: &str,
    container_id: &str,
    netns: &str,
    ifname: &str,
) -> Result<Value, String> {
    let plugin = conf["type"].as_str().unwrap_or_default().to_string();
    let what = format!("CNI plugin {plugin} {}", command.to_ascii_uppercase());
    let mut cmd = tokio::process::Command::new(bin_dir.join(&plugin));
    cmd.env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", bin_dir)
        .env_remove("CNI_ARGS")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        format!(
            "{what}: failed to run {}: {e}",
            bin_dir.join(&plugin).display()
        )
    })?;
    let input = serde_json::to_vec(conf).map_err(|e| format!("{what}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A plugin that exits early closes its stdin; the result tells what happened.
        let _ = stdin.write_all(&input).await;
    }
    let out = tokio::time::timeout(PLUGIN_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| format!("{what}: timed out after {PLUGIN_TIMEOUT:?}"))?
        .map_err(|e| format!("{what}: {e}"))?;
    let parsed: Option<Value> = serde_json::from_slice(&out.stdout).ok();
    if out.status.success() {
        return Ok(parsed.unwrap_or(Value::Null));
    }
    Err(format!(
        "{what} failed: {}",
        error_text(parsed.as_ref(), &out.stderr)
    ))
}

/// The text of a CNI error object (`msg` and `details`), else the plugin's stderr.
fn error_text(result: Option<&Value>, stderr: &[u8]) -> String {
    if let Some(v) = result {
        let msg = v["msg"].as_str().unwrap_or_default();
        let details = v["details"].as_str().unwrap_or_default();
        match (msg.is_empty(), details.is_empty()) {
            (false, false) => return format!("{msg}: {details}"),
            (false, true) => return msg.to_string(),
            (true, false) => return details.to_string(),
            (true, true) => {}
        }
    }
    let e = String::from_utf8_lossy(stderr).trim().to_string();
    if e.is_empty() {
        "no error message".to_string()
    } else {
        e
    }
}

/// The pod's IP in a CNI result (the first IPv4 address, else the first address).
pub fn pod_ip(result: &Value) -> Option<String> {
    let addrs: Vec<&str> = result["ips"]
        .as_array()?
        .iter()
        .filter_map(|ip| ip["address"].as_str())
        .map(|a| a.split('/').next().unwrap_or(a))
        .collect();
    addrs
        .iter()
        .find(|a| !a.contains(':'))
        .or(addrs.first())
        .map(|a| a.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_and_errors() {
        let r = json!({"cniVersion": "1.0.0", "ips": [
            {"address": "fd00::5/64"},
            {"address": "10.244.3.7/24", "gateway": "10.244.3.1", "interface": 2},
        ]});
        assert_eq!(pod_ip(&r).as_deref(), Some("10.244.3.7"));
        assert_eq!(pod_ip(&json!({"ips": []})), None);
        assert_eq!(pod_ip(&json!({})), None);
        let e = json!({"code": 11, "msg": "failed to allocate", "details": "range full"});
        assert_eq!(error_text(Some(&e), b""), "failed to allocate: range full");
        assert_eq!(error_text(None, b" boom \n"), "boom");
    }

    #[test]
    fn bridge_configuration() {
        let n = Network {
            bin_dir: "/usr/lib/cni".into(),
            bridge: "skiff0".into(),
            subnet: "10.244.0.0/24".into(),
            ipam_dir: "/d/cni".into(),
        };
        let c = n.bridge_conf();
        assert_eq!(c["cniVersion"], "1.0.0");
        assert_eq!(c["bridge"], "skiff0");
        assert_eq!(c["isGateway"], true);
        assert_eq!(c["ipMasq"], false);
        assert_eq!(c["hairpinMode"], true);
        assert_eq!(c["ipam"]["type"], "host-local");
        assert_eq!(c["ipam"]["ranges"][0][0]["subnet"], "10.244.0.0/24");
        assert_eq!(c["ipam"]["dataDir"], "/d/cni");
    }
}
