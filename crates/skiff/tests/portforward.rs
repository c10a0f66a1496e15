//! `kubectl port-forward` end to end: the real kubectl (SPDY/3.1 tunnelled in a WebSocket)
//! against `skiff up` with its agent (host runtime: the pod is a plain process on the node's
//! address), and on runc (the pod's bridge IP). The API server splices the upgrade to the
//! agent's `/portForward`, which speaks SPDY.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::registry::Registry;
use common::runc::Runc;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `kubectl port-forward`; killed when dropped.
struct Forward {
    child: Child,
    /// Remote port → local port, from the `Forwarding from 127.0.0.1:L -> R` lines.
    local: Vec<(u16, u16)>,
    stderr: mpsc::Receiver<String>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Forward {
    fn start(c: &common::Skiff, args: &[&str], expect: usize) -> Forward {
        let mut child = Command::new("kubectl")
            .arg("port-forward")
            .args(args)
            .env("KUBECONFIG", &c.kubeconfig)
            .env("HOME", c.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl must be on PATH");
        let (out_tx, out_rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = out_tx.send(line);
            }
        });
        let (err_tx, err_rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = err_tx.send(line);
            }
        });
        let mut local = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while local.len() < expect {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match out_rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let errs: Vec<String> = err_rx.try_iter().collect();
                    panic!("kubectl port-forward did not start: {errs:?}");
                }
            };
            // Forwarding from 127.0.0.1:41234 -> 8080
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                let (l, r) = rest.split_once(" -> ").expect("an arrow");
                local.push((r.trim().parse().unwrap(), l.trim().parse().unwrap()));
            }
        }
        Forward {
            child,
            local,
            stderr: err_rx,
        }
    }

    fn local_port(&self, remote: u16) -> u16 {
        self.local
            .iter()
            .find(|(r, _)| *r == remote)
            .map(|(_, l)| *l)
            .expect("a local port")
    }
}

/// `GET path` through `port`; the whole answer.
fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: pod\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn kubectl_port_forward_relays_http_and_reports_closed_ports() {
    let c = Cluster::start();
    let port = free_port();
    let closed = free_port();
    let www = c.dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from the pod\n").unwrap();
    // A large file, to cross the 64 KiB flow-control windows both ways.
    let big: String = (0..20_000).map(|i| format!("{i:07}\n")).collect();
    std::fs::write(www.join("big.txt"), &big).unwrap();
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: busybox:1.36
    command: ["busybox", "httpd", "-f", "-p", "{port}", "-h", "{}"]
"#,
        www.display()
    ))
    .ok();
    c.wait_status("web", "Running", None, 60);
    // Wait until the server listens.
    common::eventually(20, || TcpStream::connect(("127.0.0.1", port)).ok());

    let fwd = Forward::start(
        &c,
        &["pod/web", &format!("0:{port}"), &format!("0:{closed}")],
        2,
    );
    let local = fwd.local_port(port);

    let page = http_get(local, "/index.html");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.ends_with("hello from the pod\n"), "{page}");

    // Several connections at once, each its own pair of SPDY streams.
    let handles: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let path = if i % 2 == 0 {
                    "/index.html"
                } else {
                    "/big.txt"
                };
                (i, http_get(local, path))
            })
        })
        .collect();
    for h in handles {
        let (i, page) = h.join().unwrap();
        assert!(page.starts_with("HTTP/1.1 200"), "{i}: {page:.200}");
        if i % 2 == 0 {
            assert!(page.ends_with("hello from the pod\n"), "{i}");
        } else {
            assert!(page.ends_with(&big), "{i}: {} bytes", page.len());
        }
    }

    // A large request body goes up too (the pod answers 404 for an unknown path, after
    // reading the request).
    {
        let mut s = TcpStream::connect(("127.0.0.1", local)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let body = vec![b'x'; 200_000];
        write!(
            s,
            "POST /nothing HTTP/1.0\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        let _ = s.write_all(&body);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 "), "{out:.200}");
    }

    // The closed port: the connection ends and kubectl reports the error…
    let dead = fwd.local_port(closed);
    let mut s = TcpStream::connect(("127.0.0.1", dead)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains(&format!("error forwarding port {closed}")))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match fwd.stderr.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(_) => panic!("no error reported by kubectl: {seen:?}"),
        }
    }
    assert!(
        seen.iter().any(|l| l.contains("connection refused")),
        "{seen:?}"
    );

    // kubectl 1.32 itself then ends the session (client-go closes the connection after an
    // error on an error stream and kubectl exits "lost connection to pod"); the agent keeps a
    // session going after a failed connect (crates/agent/tests/portforward.rs shows it with a
    // raw client). A new kubectl forwards again.
    let mut fwd = fwd;
    let deadline = Instant::now() + Duration::from_secs(20);
    while fwd.child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(fwd);
    let again = Forward::start(&c, &["pod/web", &format!("0:{port}")], 1);
    let page = http_get(again.local_port(port), "/index.html");
    assert!(page.ends_with("hello from the pod\n"), "{page}");
}

#[test]
fn kubectl_port_forward_to_a_runc_pod() {
    if common::runc::skip() {
        return;
    }
    let reg = Registry::start(None);
    let image = reg.push("busybox", "1");
    let c = Runc::start();
    c.apply_ok(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: {image}
    command: ["sh", "-c", "mkdir -p /www && echo hello-from-runc > /www/index.html && exec httpd -f -p 8080 -h /www"]
    readinessProbe:
      tcpSocket: {{port: 8080}}
      periodSeconds: 1
"#
    ));
    c.wait_status("web", "Running", Some("1/1"), 90);
    let fwd = Forward::start(&c, &["pod/web", "0:8080"], 1);
    let page = http_get(fwd.local_port(8080), "/index.html");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.ends_with("hello-from-runc\n"), "{page}");
}

#[test]
fn kubectl_port_forward_to_a_service_picks_a_selected_pod_and_its_target_port() {
    let c = Cluster::start();
    let port = free_port();
    let www = c.dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "served behind a service\n").unwrap();
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: web, labels: {{app: web}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: busybox:1.36
    command: ["busybox", "httpd", "-f", "-p", "{port}", "-h", "{}"]
    ports: [{{name: http, containerPort: {port}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{name: main, port: 80, targetPort: http}}]
"#,
        www.display()
    ))
    .ok();
    c.wait_status("web", "Running", None, 60);
    common::eventually(20, || TcpStream::connect(("127.0.0.1", port)).ok());
    // kubectl resolves svc/web to a pod its selector matches and service port 80 to the
    // container port named `http`.
    let fwd = Forward::start(&c, &["svc/web", "0:80"], 1);
    let page = http_get(fwd.local_port(port), "/index.html");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.ends_with("served behind a service\n"), "{page}");
}
