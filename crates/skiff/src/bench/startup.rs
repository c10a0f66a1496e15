//! `skiff bench up` (start-up and idle cost of `skiff up`) and `skiff bench suite` (the standard
//! benchmarks one after another, at sizes that finish in minutes, with a summary).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Api;

use super::mib;

#[derive(clap::Args, Debug, Clone)]
pub struct UpBench {
    /// Times to start `skiff up` on a fresh data dir.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Seconds to let it idle before reading its RSS and CPU.
    #[arg(long, default_value_t = 10)]
    pub idle: u64,
    /// The local agent's runtime.
    #[arg(long, default_value = "host")]
    pub runtime: String,
}

/// What a process uses: RSS, of which anonymous (heap, stacks) bytes, and CPU ticks.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    rss: u64,
    anon: u64,
    ticks: u64,
}

fn usage(pid: u32) -> Option<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |field: &str| -> Option<u64> {
        let v = status
            .lines()
            .find(|l| l.starts_with(field))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()?;
        Some(v * 1024)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Usage {
        rss: kib("VmRSS:")?,
        anon: kib("RssAnon:")?,
        ticks,
    })
}

pub async fn up(b: UpBench) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut ready = Vec::new();
    let mut node_ready = Vec::new();
    let mut idle = Vec::new();
    for run in 0..b.runs.max(1) {
        let dir = std::env::temp_dir().join(format!("skiff-bench-up-{}-{run}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let t0 = Instant::now();
        let mut child = Command::new(&exe)
            .args(["up", "--port", "0", "--runtime", &b.runtime])
            .arg("--data-dir")
            .arg(&dir)
            .env("SKIFF_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            if line
                .map_err(|e| e.to_string())?
                .starts_with("export KUBECONFIG=")
            {
                break;
            }
        }
        let t_ready = t0.elapsed();
        std::thread::spawn(move || for _ in lines {});
        let kc = std::fs::read_to_string(dir.join("kubeconfig")).map_err(|e| e.to_string())?;
        let nodes: Api<Node> = Api::all(crate::up::client_from_kubeconfig(&kc).await?);
        let t_node = loop {
            let ok = nodes.list(&Default::default()).await.is_ok_and(|l| {
                l.items.iter().any(|n| {
                    n.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                })
            });
            if ok {
                break t0.elapsed();
            }
            if t0.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                return Err("no Ready node within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        drop(nodes);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = usage(child.id()).unwrap_or_default();
        tokio::time::sleep(Duration::from_secs(b.idle)).await;
        let after = usage(child.id()).unwrap_or_default();
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
        let ticks = after.ticks.saturating_sub(before.ticks);
        eprintln!(
            "  run {}: ready {t_ready:.0?}, node Ready {t_node:.0?}, idle RSS {:.1} MiB ({:.1} MiB anonymous), {ticks} CPU ticks in {} s",
            run + 1,
            mib(after.rss),
            mib(after.anon),
            b.idle
        );
        ready.push(t_ready);
        node_ready.push(t_node);
        idle.push(after);
    }
    ready.sort();
    node_ready.sort();
    let median = |v: &[Duration]| v[v.len() / 2];
    let mut rss: Vec<u64> = idle.iter().map(|i| i.rss).collect();
    rss.sort();
    let mut anon: Vec<u64> = idle.iter().map(|i| i.anon).collect();
    anon.sort();
    println!(
        "skiff up → serving:          {:.0?} median of {} (process start to the kubeconfig line)",
        median(&ready),
        ready.len()
    );
    println!(
        "skiff up → node Ready:       {:.0?} median (process start to a Ready node in a list)",
        median(&node_ready)
    );
    println!(
        "idle RSS (server + agent):   {:.1} MiB median, of which {:.1} MiB anonymous (the rest: pages of the binary), runtime {}",
        mib(rss[rss.len() / 2]),
        mib(anon[anon.len() / 2]),
        b.runtime
    );
    Ok(())
}

#[derive(clap::Args, Debug, Clone)]
pub struct Suite {
    /// Also the 5,000-node / 150,000-pod simulation (several minutes, several GiB).
    #[arg(long)]
    pub full: bool,
}

/// The standard benchmarks, each run as `skiff bench …` in a child process (its progress on
/// stderr), then a summary of what each printed.
pub async fn suite(s: Suite) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let sim: &[&str] = if s.full {
        &[
            "sim",
            "--nodes",
            "5000",
            "--pods",
            "150000",
            "--measure",
            "60",
        ]
    } else {
        &[
            "sim",
            "--nodes",
            "1000",
            "--pods",
            "20000",
            "--measure",
            "30",
        ]
    };
    let runs: Vec<(&str, Vec<&str>)> = vec![
        ("start-up and idle", vec!["up", "--runs", "3"]),
        ("API creates", vec!["api", "--pods", "20000"]),
        (
            "scheduler, 5,000 nodes",
            vec!["scheduler", "--nodes", "5000", "--pods", "10000"],
        ),
        (
            "pod start, host runtime",
            vec!["pod-start", "--runtime", "host", "--pods", "100"],
        ),
        ("simulated fleet", sim.to_vec()),
    ];
    let mut results = Vec::new();
    for (i, (name, args)) in runs.iter().enumerate() {
        eprintln!(
            "[{}/{}] {name}: skiff bench {}",
            i + 1,
            runs.len(),
            args.join(" ")
        );
        let t = Instant::now();
        let out = Command::new(&exe)
            .arg("bench")
            .args(args)
            .env("SKIFF_LOG", "warn")
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let status = if out.status.success() {
            format!("{:.0?}", t.elapsed())
        } else {
            format!("FAILED ({})", out.status)
        };
        results.push((name.to_string(), args.join(" "), status, text));
    }
    println!("\n| benchmark | command | took |\n| --- | --- | --- |");
    for (name, cmd, status, _) in &results {
        println!("| {name} | `skiff bench {cmd}` | {status} |");
    }
    for (name, _, _, text) in &results {
        println!("\n{name}:");
        for line in text.lines() {
            println!("    {line}");
        }
    }
    Ok(())
}
