//! Running probes and lifecycle hooks for the worker: exec handlers through the runtime
//! (`$(VAR)` expanded from the container's static env), HTTP and TCP handlers through
//! [`crate::probe_io`] against the pod IP (or `httpGet.host`), gRPC health checks against the
//! pod IP, and the failure texts the
//! kubelet reports (spec §6.3, §7.2).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, LifecycleHandler, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::WorkerCtx;
use super::config::{expand_all, static_env};
use crate::format::{go_quote, pod_id};
use crate::observed::ContainerRef;
use crate::probe::{ProbeKind, ProbeOutcome, ProbeTiming};
use crate::probe_io;
use crate::runtime::PodRef;

/// Resolves a named or numbered port of a container.
pub fn resolve_port(port: &IntOrString, c: &Container) -> Result<u16, String> {
    let n = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => match s.parse::<i32>() {
            Ok(n) => n,
            Err(_) => c
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(s.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| format!("couldn't find port: {s} in container {:?}", c.name))?,
        },
    };
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port number: {n}"))
}

/// The probe's or hook's `httpHeaders`.
fn headers(h: &HTTPGetAction) -> Vec<(String, String)> {
    h.http_headers
        .iter()
        .flatten()
        .map(|x| (x.name.clone(), x.value.clone()))
        .collect()
}

/// Go's `%v` of a `[]string`: `[a b c]`.
fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// Runs one probe of instance `id`.
pub async fn run_probe(
    ctx: &WorkerCtx,
    pod: &Pod,
    pref: &PodRef,
    r: ContainerRef,
    kind: ProbeKind,
    id: &str,
    pod_ip: Option<&str>,
) -> ProbeOutcome {
    let Some(c) = pod.spec.as_ref().and_then(|s| r.spec(s)) else {
        return ProbeOutcome::Error("container not in the pod spec".into());
    };
    let Some(p) = kind.of(c) else {
        return ProbeOutcome::Error("no such probe".into());
    };
    let timeout = Duration::from_secs(ProbeTiming::of(p).timeout_seconds.max(1) as u64);
    if let Some(exec) = &p.exec {
        let argv = expand_all(exec.command.as_deref().unwrap_or_default(), &static_env(c));
        return probe_io::exec_probe(ctx.runtime.as_ref(), pref, id, &argv, timeout).await;
    }
    if let Some(h) = &p.http_get {
        let port = match resolve_port(&h.port, c) {
            Ok(p) => p,
            Err(e) => return ProbeOutcome::Error(e),
        };
        let host = h
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .or_else(|| pod_ip.map(str::to_string))
            .unwrap_or_else(|| ctx.node_ip.clone());
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let https = h.scheme.as_deref() == Some("HTTPS");
        return probe_io::http_get(
            &host,
            port,
            &path,
            https,
            &headers(h),
            timeout,
            probe_io::PROBE_USER_AGENT,
        )
        .await;
    }
    if let Some(t) = &p.tcp_socket {
        let port = match resolve_port(&t.port, c) {
            Ok(p) => p,
            Err(e) => return ProbeOutcome::Error(e),
        };
        let host = t
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .or_else(|| pod_ip.map(str::to_string))
            .unwrap_or_else(|| ctx.node_ip.clone());
        return probe_io::tcp_socket(&host, port, timeout).await;
    }
    if let Some(g) = &p.grpc {
        let Some(port) = u16::try_from(g.port).ok().filter(|p| *p > 0) else {
            return ProbeOutcome::Error(format!("invalid port number: {}", g.port));
        };
        let host = pod_ip.map_or_else(|| ctx.node_ip.clone(), str::to_string);
        let service = g.service.as_deref().unwrap_or_default();
        return probe_io::grpc_check(&host, port, service, timeout).await;
    }
    ProbeOutcome::Error("the probe has no handler".into())
}

/// Runs the postStart (`post_start`) or preStop hook of instance `id`; the error is the
/// detailed failure text.
pub async fn run_hook(
    ctx: &WorkerCtx,
    pod: &Pod,
    pref: &PodRef,
    r: ContainerRef,
    id: &str,
    pod_ip: Option<&str>,
    post_start: bool,
) -> Result<(), String> {
    let Some(c) = pod.spec.as_ref().and_then(|s| r.spec(s)) else {
        return Ok(());
    };
    let handler: Option<&LifecycleHandler> = c.lifecycle.as_ref().and_then(|l| {
        if post_start {
            l.post_start.as_ref()
        } else {
            l.pre_stop.as_ref()
        }
    });
    let Some(h) = handler else {
        return Ok(());
    };
    if let Some(exec) = &h.exec {
        let argv = expand_all(exec.command.as_deref().unwrap_or_default(), &static_env(c));
        let fail = |err: String, output: &str| {
            format!(
                "Exec lifecycle hook ({}) for Container {} in Pod {} failed - error: {err}, message: {}",
                go_list(&argv),
                go_quote(&c.name),
                go_quote(&pod_id(pod)),
                go_quote(output)
            )
        };
        return match ctx.runtime.exec(pref, id, &argv, None).await {
            Ok(res) if res.exit_code == 0 => Ok(()),
            Ok(res) => Err(fail(
                format!(
                    "command '{}' exited with {}: {}",
                    argv.join(" "),
                    res.exit_code,
                    res.output
                ),
                &res.output,
            )),
            Err(e) => Err(fail(e, "")),
        };
    }
    if let Some(hg) = &h.http_get {
        let path = hg.path.clone().unwrap_or_else(|| "/".into());
        let fail = |err: String| {
            format!(
                "HTTP lifecycle hook ({path}) for Container {} in Pod {} failed - error: {err}",
                go_quote(&c.name),
                go_quote(&pod_id(pod))
            )
        };
        let port = resolve_port(&hg.port, c).map_err(fail)?;
        let host = hg
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .or_else(|| pod_ip.map(str::to_string))
            .unwrap_or_else(|| ctx.node_ip.clone());
        let https = hg.scheme.as_deref() == Some("HTTPS");
        return probe_io::http_hook(
            &host,
            port,
            &path,
            https,
            &headers(hg),
            probe_io::HOOK_USER_AGENT,
            None,
        )
        .await
        .map_err(fail);
    }
    if let Some(s) = &h.sleep {
        tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64)).await;
        return Ok(());
    }
    // tcpSocket hooks are accepted by the API but do nothing (as in the kubelet).
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_by_number_or_name() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "ports": [{"name": "http", "containerPort": 8080}],
        }))
        .unwrap();
        assert_eq!(resolve_port(&IntOrString::Int(80), &c), Ok(80));
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &c),
            Ok(8080)
        );
        assert_eq!(
            resolve_port(&IntOrString::String("9090".into()), &c),
            Ok(9090)
        );
        assert!(resolve_port(&IntOrString::String("nope".into()), &c).is_err());
        assert!(resolve_port(&IntOrString::Int(0), &c).is_err());
        assert_eq!(
            go_list(&["sh".into(), "-c".into(), "exit 1".into()]),
            "[sh -c exit 1]"
        );
    }
}
