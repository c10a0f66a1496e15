//! `skiff bench proxy`: what the agent's service proxy costs. A small HTTP/1.1 backend on
//! loopback, the proxy in front of it on a NodePort (fed a fixed routing table, no API server),
//! and clients measuring requests/s and latency directly and through the proxy, with kept-alive
//! connections (the copy cost) and with a new connection per request (the accept + connect cost).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use skiff_agent::proxy::{
    self, Endpoint, ProxyConfig, RoutingTable, ServicePortEntry, ServicePortKey,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::percentile;

#[derive(Args, Debug)]
pub struct ProxyBench {
    /// Concurrent client connections.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
}

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// An HTTP/1.1 server answering every request on a connection with `200 ok`.
async fn backend() -> std::io::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut pending = Vec::new();
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        if s.write_all(RESPONSE).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// Sends one request on `s` and reads the whole response.
async fn request(s: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<()> {
    s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        .await?;
    let mut got = 0;
    while got < RESPONSE.len() {
        let n = s.read(&mut buf[got..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    Ok(())
}

struct Measured {
    requests: usize,
    errors: usize,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

async fn load(target: SocketAddr, connections: usize, secs: u64, keep_alive: bool) -> Measured {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            let mut buf = vec![0u8; 256];
            let mut conn: Option<TcpStream> = None;
            while Instant::now() < deadline {
                let t = Instant::now();
                if conn.is_none() {
                    match TcpStream::connect(target).await {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            conn = Some(s);
                        }
                        Err(_) => {
                            errors += 1;
                            continue;
                        }
                    }
                }
                let s = conn.as_mut().expect("connected");
                match request(s, &mut buf).await {
                    Ok(()) => lat.push(t.elapsed()),
                    Err(_) => {
                        errors += 1;
                        conn = None;
                        continue;
                    }
                }
                if !keep_alive {
                    conn = None;
                }
            }
            (lat, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            latencies.extend(l);
            errors += e;
        }
    }
    latencies.sort();
    Measured {
        requests: latencies.len(),
        errors,
        latencies,
        elapsed: started.elapsed(),
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub async fn run(b: ProxyBench) -> Result<(), String> {
    let backend = backend().await.map_err(|e| e.to_string())?;
    let node_port = free_port().map_err(|e| e.to_string())?;
    let mut entry = ServicePortEntry::new(
        ServicePortKey::new("default", "bench", "http"),
        80,
        vec![Endpoint::ready(backend)],
    );
    entry.node_port = Some(node_port);
    let mut table = RoutingTable::default();
    table.insert(entry);
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(table));
    let cfg = ProxyConfig {
        nodeport_addresses: vec!["127.0.0.1".parse().expect("address")],
        ..ProxyConfig::default()
    };
    let handle = proxy::serve(cfg, rx).await?;
    let front: SocketAddr = format!("127.0.0.1:{node_port}").parse().expect("address");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(front).await.is_err() {
        if Instant::now() > deadline {
            return Err("the proxy did not open its node port".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "{} connections, {} s each; backend {backend}, proxy on {front}",
        b.connections, b.seconds
    );
    println!("| mode | path | requests/s | p50 | p99 | errors |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (mode, keep_alive) in [("kept-alive", true), ("connection per request", false)] {
        for (path, target) in [("direct", backend), ("through the proxy", front)] {
            let r = load(target, b.connections, b.seconds, keep_alive).await;
            println!(
                "| {mode} | {path} | {:.0} | {:.3} ms | {:.3} ms | {} |",
                r.requests as f64 / r.elapsed.as_secs_f64(),
                percentile(&r.latencies, 0.5).as_secs_f64() * 1000.0,
                percentile(&r.latencies, 0.99).as_secs_f64() * 1000.0,
                r.errors
            );
        }
    }
    handle.shutdown().await;
    Ok(())
}
