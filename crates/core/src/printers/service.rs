//! The tables of services (NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE, wide SELECTOR),
//! endpoints (NAME ENDPOINTS AGE) and endpointslices (NAME ADDRESSTYPE PORTS ENDPOINTS AGE),
//! with the cell text of Kubernetes' printers: `80:31234/TCP,443/TCP`, `<none>`, `<pending>`,
//! `10.244.0.5:8080,10.244.0.6:8080 + 1 more...`, `<unset>`.

use jiff::Timestamp;
use serde_json::Value;

use super::{AGE_DESC, Column, col, creation_age, name, name_col};
use crate::fields::{at, int_at, list_at, str_at};

/// How many addresses (or ports) a cell lists before `+ N more...`.
const MAX_LISTED: usize = 3;

/// Column definitions for `services`, `endpoints` or `endpointslices`; None for others.
pub fn columns(resource: &str) -> Option<Vec<Column>> {
    Some(match resource {
        "services" => vec![
            name_col(0),
            col(
                "Type",
                "How the service is exposed: ClusterIP, NodePort, LoadBalancer or ExternalName.",
                0,
            ),
            col(
                "Cluster-IP",
                "The service's virtual IP inside the cluster (its first clusterIPs entry), `None` for a headless service.",
                0,
            ),
            col(
                "External-IP",
                "Addresses the service is reachable at from outside: externalIPs, load-balancer ingress, or the externalName.",
                0,
            ),
            col(
                "Port(s)",
                "The service's ports as port[:nodePort]/protocol.",
                0,
            ),
            col("Age", AGE_DESC, 0),
            col(
                "Selector",
                "The label selector that picks the pods behind the service.",
                1,
            ),
        ],
        "endpoints" => vec![
            name_col(0),
            col(
                "Endpoints",
                "The ready addresses with their ports (ip:port), at most three listed.",
                0,
            ),
            col("Age", AGE_DESC, 0),
        ],
        "endpointslices" => vec![
            name_col(0),
            col(
                "AddressType",
                "The kind of addresses the slice holds: IPv4, IPv6 or FQDN.",
                0,
            ),
            col(
                "Ports",
                "The slice's port numbers, at most three listed.",
                0,
            ),
            col(
                "Endpoints",
                "The slice's endpoint addresses, at most three listed.",
                0,
            ),
            col("Age", AGE_DESC, 0),
        ],
        _ => return None,
    })
}

/// The cells of one row (wide cells included), or None for other resources.
pub fn row_cells(resource: &str, obj: &Value, now: Timestamp) -> Option<Vec<Value>> {
    Some(match resource {
        "services" => service_cells(obj, now),
        "endpoints" => vec![
            name(obj).into(),
            format_endpoints(obj).into(),
            creation_age(obj, now).into(),
        ],
        "endpointslices" => vec![
            name(obj).into(),
            str_at(obj, &["addressType"]).into(),
            slice_ports(obj).into(),
            slice_addresses(obj).into(),
            creation_age(obj, now).into(),
        ],
        _ => return None,
    })
}

fn strings(v: &Value, path: &[&str]) -> Vec<String> {
    list_at(v, path)
        .iter()
        .filter_map(|s| s.as_str().map(String::from))
        .collect()
}

fn service_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let cluster_ip = strings(obj, &["spec", "clusterIPs"])
        .into_iter()
        .next()
        .unwrap_or_else(|| "<none>".to_string());
    let ports = port_string(list_at(obj, &["spec", "ports"]));
    vec![
        name(obj).into(),
        str_at(obj, &["spec", "type"]).into(),
        cluster_ip.into(),
        external_ip(obj).into(),
        (if ports.is_empty() {
            "<none>".into()
        } else {
            ports
        })
        .into(),
        creation_age(obj, now).into(),
        selector(obj).into(),
    ]
}

/// The EXTERNAL-IP cell; the server prints it in wide form (no truncation), as the real one does.
fn external_ip(obj: &Value) -> String {
    let external = strings(obj, &["spec", "externalIPs"]);
    match str_at(obj, &["spec", "type"]) {
        "ClusterIP" | "NodePort" => {
            if external.is_empty() {
                "<none>".into()
            } else {
                external.join(",")
            }
        }
        "LoadBalancer" => {
            let mut all: Vec<String> = list_at(obj, &["status", "loadBalancer", "ingress"])
                .iter()
                .filter_map(|ing| {
                    let ip = str_at(ing, &["ip"]);
                    let host = str_at(ing, &["hostname"]);
                    if !ip.is_empty() {
                        Some(ip.to_string())
                    } else if !host.is_empty() {
                        Some(host.to_string())
                    } else {
                        None
                    }
                })
                .collect();
            all.extend(external);
            if all.is_empty() {
                "<pending>".into()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => str_at(obj, &["spec", "externalName"]).to_string(),
        _ => "<unknown>".into(),
    }
}

/// `80/TCP` per port, `80:31234/TCP` when it has a node port, joined by commas.
fn port_string(ports: &[Value]) -> String {
    ports
        .iter()
        .map(|p| {
            let port = int_at(p, &["port"]);
            let protocol = str_at(p, &["protocol"]);
            let node_port = int_at(p, &["nodePort"]);
            if node_port > 0 {
                format!("{port}:{node_port}/{protocol}")
            } else {
                format!("{port}/{protocol}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The selector as `k=v,k2=v2` (sorted), `<none>` when empty.
fn selector(obj: &Value) -> String {
    match at(obj, &["spec", "selector"]).and_then(|s| s.as_object()) {
        Some(m) if !m.is_empty() => {
            let mut pairs: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect();
            pairs.sort();
            pairs.join(",")
        }
        _ => "<none>".into(),
    }
}

/// `host:port` the way Go's `net.JoinHostPort` writes it (IPv6 in brackets).
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn with_more(list: &[String], more: bool, count: usize) -> String {
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", count - MAX_LISTED)
    } else {
        joined
    }
}

/// The ENDPOINTS cell of an Endpoints object: ready addresses with each port of their subset
/// (bare addresses for a subset without ports), three at most, `<none>` with no subsets.
fn format_endpoints(obj: &Value) -> String {
    let subsets = list_at(obj, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".into();
    }
    let mut list = Vec::new();
    let mut more = false;
    let mut count = 0;
    for ss in subsets {
        let addresses = list_at(ss, &["addresses"]);
        let ports = list_at(ss, &["ports"]);
        if ports.is_empty() {
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX_LISTED {
                    more = true;
                    break;
                }
                list.push(str_at(a, &["ip"]).to_string());
            }
            continue;
        }
        for p in ports {
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX_LISTED {
                    more = true;
                    break;
                }
                list.push(join_host_port(str_at(a, &["ip"]), int_at(p, &["port"])));
            }
        }
    }
    with_more(&list, more, count)
}

/// A list cell of an EndpointSlice: three entries at most, `<unset>` when empty.
fn slice_list(items: impl Iterator<Item = String>) -> String {
    let mut list = Vec::new();
    let mut more = false;
    let mut count = 0;
    for item in items {
        if list.len() < MAX_LISTED {
            list.push(item);
        } else {
            more = true;
        }
        count += 1;
    }
    let out = with_more(&list, more, count);
    if out.is_empty() {
        "<unset>".into()
    } else {
        out
    }
}

/// The PORTS cell: port numbers (the name for a port without a number, `*` for neither).
fn slice_ports(obj: &Value) -> String {
    slice_list(list_at(obj, &["ports"]).iter().map(|p| {
        match (at(p, &["port"]).and_then(Value::as_i64), at(p, &["name"])) {
            (Some(n), _) => n.to_string(),
            (None, Some(Value::String(name))) => name.clone(),
            _ => "*".to_string(),
        }
    }))
}

/// The ENDPOINTS cell: every address of every endpoint.
fn slice_addresses(obj: &Value) -> String {
    slice_list(
        list_at(obj, &["endpoints"])
            .iter()
            .flat_map(|e| strings(e, &["addresses"])),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2026-01-01T01:00:00Z".parse().unwrap()
    }

    fn cells(resource: &str, v: Value) -> Vec<Value> {
        row_cells(resource, &v, now()).unwrap()
    }

    #[test]
    fn shapes() {
        for r in ["services", "endpoints", "endpointslices"] {
            let cols = columns(r).unwrap();
            assert_eq!(cols.len(), cells(r, json!({})).len(), "{r}");
            assert_eq!(cols[0].format, "name");
        }
        assert!(columns("pods").is_none());
        assert!(row_cells("pods", &json!({}), now()).is_none());
        let names: Vec<_> = columns("services")
            .unwrap()
            .iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(
            names,
            [
                "Name",
                "Type",
                "Cluster-IP",
                "External-IP",
                "Port(s)",
                "Age",
                "Selector"
            ]
        );
        assert_eq!(columns("services").unwrap()[6].priority, 1);
        let names: Vec<_> = columns("endpointslices")
            .unwrap()
            .iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["Name", "AddressType", "Ports", "Endpoints", "Age"]);
    }

    #[test]
    fn service_rows() {
        let svc = json!({"metadata": {"name": "web", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"type": "NodePort", "clusterIPs": ["10.96.12.34"],
                     "selector": {"tier": "fe", "app": "web"},
                     "ports": [{"port": 80, "nodePort": 31234, "protocol": "TCP"},
                               {"port": 443, "protocol": "TCP"}]}});
        assert_eq!(
            cells("services", svc),
            [
                json!("web"),
                json!("NodePort"),
                json!("10.96.12.34"),
                json!("<none>"),
                json!("80:31234/TCP,443/TCP"),
                json!("60m"),
                json!("app=web,tier=fe")
            ]
        );
        let headless = json!({"spec": {"type": "ClusterIP", "clusterIPs": ["None"]}});
        let c = cells("services", headless);
        assert_eq!(
            (&c[2], &c[4], &c[6]),
            (&json!("None"), &json!("<none>"), &json!("<none>"))
        );
        let lb = json!({"spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.9"],
            "ports": [{"port": 80, "nodePort": 30001, "protocol": "TCP"}]}, "status": {"loadBalancer": {}}});
        assert_eq!(cells("services", lb)[3], json!("<pending>"));
        let en = json!({"spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        let c = cells("services", en);
        assert_eq!((&c[2], &c[3]), (&json!("<none>"), &json!("db.example.com")));
        let ext = json!({"spec": {"type": "ClusterIP", "externalIPs": ["1.2.3.4", "5.6.7.8"]}});
        assert_eq!(cells("services", ext)[3], json!("1.2.3.4,5.6.7.8"));
    }

    #[test]
    fn endpoints_rows() {
        let none = json!({"metadata": {"name": "web"}});
        assert_eq!(cells("endpoints", none)[1], json!("<none>"));
        let ep = json!({"subsets": [
            {"addresses": [{"ip": "10.244.0.5"}, {"ip": "10.244.0.6"}], "ports": [{"port": 8080}]},
            {"addresses": [{"ip": "10.244.0.7"}, {"ip": "fd00::8"}], "ports": [{"port": 8080}]}]});
        assert_eq!(
            cells("endpoints", ep)[1],
            json!("10.244.0.5:8080,10.244.0.6:8080,10.244.0.7:8080 + 1 more...")
        );
        let two = json!({"subsets": [{"addresses": [{"ip": "fd00::8"}], "ports": [{"port": 80}, {"port": 81}]}]});
        assert_eq!(
            cells("endpoints", two)[1],
            json!("[fd00::8]:80,[fd00::8]:81")
        );
        let bare = json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}]}]});
        assert_eq!(cells("endpoints", bare)[1], json!("10.0.0.1"));
        let only_not_ready = json!({"subsets": [{"notReadyAddresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]});
        assert_eq!(cells("endpoints", only_not_ready)[1], json!(""));
    }

    #[test]
    fn endpoint_slice_rows() {
        let s = json!({"metadata": {"name": "web-x7d2k"}, "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}, {"name": "named"}, {}],
            "endpoints": [{"addresses": ["10.244.0.5"]}, {"addresses": ["10.244.0.6"]},
                          {"addresses": ["10.244.0.7"]}, {"addresses": ["10.244.0.8"]}]});
        let c = cells("endpointslices", s);
        assert_eq!(
            c[..4],
            [
                json!("web-x7d2k"),
                json!("IPv4"),
                json!("8080,named,*"),
                json!("10.244.0.5,10.244.0.6,10.244.0.7 + 1 more...")
            ]
        );
        let empty = json!({"addressType": "IPv4", "endpoints": []});
        let c = cells("endpointslices", empty);
        assert_eq!((&c[2], &c[3]), (&json!("<unset>"), &json!("<unset>")));
    }
}
