//! The dummy interface carrying the cluster IPs (`cluster_ip: true`), driven with iproute2's
//! `ip`: the interface is created (`type dummy`) and brought up once, and each cluster IP is
//! added as a host address (/32, or /128 `nodad`) so the proxy can bind to it. A kernel without
//! the dummy link type gets the addresses on `lo` instead. IPv4 addresses carry the label
//! `<dev>:skiff`, so the proxy only ever removes addresses it added itself.

use std::net::IpAddr;

use tokio::process::Command;

/// Runs `ip <args>`; the error carries its stderr.
async fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Where the cluster IPs go: the device, and the label marking the addresses this proxy adds
/// (IPv4 only; a label starts with the device name and has at most 15 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Iface {
    pub dev: String,
    pub label: String,
}

impl Iface {
    fn new(dev: &str, tag: &str) -> Iface {
        let mut label = format!("{dev}:{tag}");
        label.truncate(15);
        Iface {
            dev: dev.to_string(),
            label,
        }
    }
}

/// Creates the dummy interface `name` if missing and brings it up. A kernel without the dummy
/// link type gets the addresses on `lo`, labelled `lo:<name>` so that proxies configured with
/// different names never take each other's addresses for stale ones.
pub(crate) async fn ensure_interface(name: &str) -> Result<Iface, String> {
    if ip(&["link", "show", "dev", name]).await.is_err()
        && let Err(e) = ip(&["link", "add", name, "type", "dummy"]).await
    {
        tracing::info!(error = %e, "no dummy interface: cluster IPs go on lo");
        return Ok(Iface::new("lo", name));
    }
    ip(&["link", "set", "dev", name, "up"]).await?;
    Ok(Iface::new(name, "skiff"))
}

fn host_prefix(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(_) => format!("{addr}/32"),
        IpAddr::V6(_) => format!("{addr}/128"),
    }
}

/// Adds `addr` to the interface (no error if it is there already).
pub(crate) async fn add_address(iface: &Iface, addr: IpAddr) -> Result<(), String> {
    let prefix = host_prefix(addr);
    let mut args = vec![
        "addr",
        "replace",
        prefix.as_str(),
        "dev",
        iface.dev.as_str(),
    ];
    if addr.is_ipv6() {
        // No duplicate address detection: the address must be bindable at once.
        args.push("nodad");
    } else {
        args.extend(["label", iface.label.as_str()]);
    }
    ip(&args).await.map(|_| ())
}

/// Removes `addr` from the interface.
pub(crate) async fn del_address(iface: &Iface, addr: IpAddr) -> Result<(), String> {
    let prefix = host_prefix(addr);
    ip(&["addr", "del", prefix.as_str(), "dev", iface.dev.as_str()])
        .await
        .map(|_| ())
}

/// The host addresses (/32, /128) the interface carries, loopback and link-local ones aside:
/// those the proxy may have put there.
pub(crate) async fn addresses(iface: &Iface) -> Result<Vec<IpAddr>, String> {
    let text = ip(&["-j", "addr", "show", "dev", iface.dev.as_str()]).await?;
    Ok(parse_addresses(&text, &iface.label))
}

/// The host addresses of `ip -j addr show` output, loopback and link-local ones aside; IPv4
/// ones only with our `label`.
fn parse_addresses(json: &str, label: &str) -> Vec<IpAddr> {
    let Ok(serde_json::Value::Array(links)) = serde_json::from_str(json) else {
        return Vec::new();
    };
    links
        .iter()
        .filter_map(|l| l.get("addr_info").and_then(|a| a.as_array()))
        .flatten()
        .filter_map(|a| {
            let ip: IpAddr = a.get("local")?.as_str()?.parse().ok()?;
            let prefix = a.get("prefixlen")?.as_u64()?;
            let host = match ip {
                IpAddr::V4(_) => prefix == 32,
                IpAddr::V6(_) => prefix == 128,
            };
            let ours = ip.is_ipv6() || a.get("label").and_then(|l| l.as_str()) == Some(label);
            (host && ours && !ip.is_loopback() && !is_link_local(&ip)).then_some(ip)
        })
        .collect()
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_json() {
        let text = r#"[{"ifindex":7,"ifname":"skiff-svc","flags":["BROADCAST","NOARP","UP","LOWER_UP"],
            "addr_info":[{"family":"inet","local":"10.96.0.1","prefixlen":32,"scope":"global","label":"skiff-svc:skiff"},
                         {"family":"inet","local":"10.96.0.2","prefixlen":32,"scope":"global","label":"skiff-svc"},
                         {"family":"inet","local":"127.0.0.1","prefixlen":8},
                         {"family":"inet","local":"192.168.3.1","prefixlen":24},
                         {"family":"inet6","local":"::1","prefixlen":128},
                         {"family":"inet6","local":"fe80::1","prefixlen":128},
                         {"family":"inet6","local":"fd00::1","prefixlen":128}]}]"#;
        assert_eq!(
            parse_addresses(text, &Iface::new("skiff-svc", "skiff").label),
            vec![
                "10.96.0.1".parse::<IpAddr>().unwrap(),
                "fd00::1".parse().unwrap()
            ]
        );
        assert!(parse_addresses("", "x").is_empty());
        assert_eq!(Iface::new("lo", "skiff-svc").label, "lo:skiff-svc");
        assert_eq!(Iface::new("skiff-svc", "skiff").label, "skiff-svc:skiff");
        assert_eq!(host_prefix("10.0.0.1".parse().unwrap()), "10.0.0.1/32");
    }
}
