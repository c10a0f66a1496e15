//! The host runtime with real processes. Timeouts are generous and nothing asserts that an
//! operation was fast: these run on loaded 2-core machines.

use std::path::{Path, PathBuf};
use std::time::Duration;

use skiff_agent::runtime::host::HostRuntime;
use skiff_agent::runtime::{ContainerConfig, ExitNotice, Mount, PodRef, Runtime};
use skiff_agent::{ExitReason, InstanceState, ProbeOutcome, StartError, probe_io};
use tokio::sync::broadcast;

const PATIENCE: Duration = Duration::from_secs(60);

/// A temporary state directory, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let mut bytes = [0u8; 8];
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .unwrap();
        let p = std::env::temp_dir().join(format!(
            "skiff-host-{tag}-{}-{}",
            std::process::id(),
            u64::from_le_bytes(bytes)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pod(name: &str) -> PodRef {
    PodRef {
        namespace: "default".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
    }
}

fn config(name: &str, argv: &[&str]) -> ContainerConfig {
    ContainerConfig {
        name: name.into(),
        image: "busybox:1.36".into(),
        command: argv.iter().map(|s| s.to_string()).collect(),
        args: vec![],
        env: vec![],
        working_dir: None,
        attempt: 0,
        mounts: vec![],
        resources: Default::default(),
        tty: false,
        stdin: false,
        security: Default::default(),
    }
}

fn sv(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

async fn next_exit(rx: &mut broadcast::Receiver<ExitNotice>, id: &str) -> ExitNotice {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match rx.recv().await {
                Ok(n) if n.id == id => return n,
                Ok(_) => {}
                Err(e) => panic!("exit channel: {e}"),
            }
        }
    })
    .await
    .expect("no exit notice")
}

/// (stream, tag, content) of every record of a CRI log file; checks each timestamp parses.
fn records(path: &Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            let mut parts = l.splitn(4, ' ');
            let ts = parts.next().unwrap();
            ts.parse::<jiff::Timestamp>()
                .unwrap_or_else(|e| panic!("bad timestamp {ts:?}: {e}"));
            assert!(ts.ends_with('Z'), "{ts}");
            let stream = parts.next().unwrap().to_string();
            let tag = parts.next().unwrap().to_string();
            let content = parts.next().unwrap_or("").to_string();
            (stream, tag, content)
        })
        .collect()
}

/// Processes of a group that are still running (zombies do not count: init may be slow to
/// reap them, or not reap them at all in some containers).
fn live_members(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid) && f[0] != "Z" {
            out.push(pid);
        }
    }
    out
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_code_reason_and_cri_logs() {
    let dir = TempDir::new("exit");
    let rt = HostRuntime::new(dir.0.clone(), "127.0.0.1".into()).unwrap();
    assert_eq!(rt.name(), "host");
    let p = pod("exit");
    let sb = rt.create_sandbox(&p, &Default::default()).await.unwrap();
    assert_eq!(sb.pod_ip, "127.0.0.1");
    let mut exits = rt.exits();

    let mut c = config("main", &["sh", "-c", "echo hi; echo err >&2; exit 3"]);
    c.attempt = 2;
    let inst = rt.start_container(&p, &c).await.unwrap();
    assert_eq!(inst.attempt, 2);
    assert!(inst.id.starts_with("host://"), "{}", inst.id);
    assert_eq!(inst.id.len(), "host://".len() + 64);
    assert!(
        inst.id["host://".len()..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit())
    );
    assert_eq!(inst.image, "busybox:1.36");
    let started_at = inst.running_since().expect("running");

    let n = next_exit(&mut exits, &inst.id).await;
    assert_eq!(n.pod_uid, p.uid);
    assert_eq!(n.container, "main");
    assert_eq!(n.exit.exit_code, 3);
    assert_eq!(n.exit.reason, ExitReason::Error);
    assert_eq!(n.exit.started_at, Some(started_at));
    assert!(n.exit.finished_at >= started_at);

    let log = rt.log_path(&p, "main", 2);
    assert_eq!(
        log,
        dir.0.join("logs/default_exit_uid-exit/main/2.log"),
        "log path layout"
    );
    let recs = records(&log);
    assert!(
        recs.contains(&("stdout".into(), "F".into(), "hi".into())),
        "{recs:?}"
    );
    assert!(
        recs.contains(&("stderr".into(), "F".into(), "err".into())),
        "{recs:?}"
    );
    assert_eq!(recs.len(), 2, "{recs:?}");

    // The exit is listed, and stopping an exited instance returns its exit at once.
    let known = rt.list().await;
    let k = known.iter().find(|k| k.instance.id == inst.id).unwrap();
    assert_eq!(k.pod_uid, p.uid);
    assert_eq!(k.container, "main");
    assert!(matches!(&k.instance.state, InstanceState::Exited(e) if e.exit_code == 3));
    let e = rt
        .stop_container(&p, &inst.id, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(e, n.exit);

    // A clean exit is Completed.
    let ok = rt
        .start_container(&p, &config("ok", &["true"]))
        .await
        .unwrap();
    let n = next_exit(&mut exits, &ok.id).await;
    assert_eq!(
        (n.exit.exit_code, n.exit.reason),
        (0, ExitReason::Completed)
    );

    // remove_container keeps the log; remove_sandbox removes it.
    rt.remove_container(&p, &inst.id).await.unwrap();
    rt.remove_container(&p, &inst.id).await.unwrap();
    assert!(
        rt.list().await.iter().all(|k| k.instance.id != inst.id),
        "removed"
    );
    assert!(log.exists());
    rt.remove_sandbox(&p).await.unwrap();
    assert!(!log.exists());
    assert!(rt.list().await.is_empty());
    assert!(!rt.pod_root(&p).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lines_are_split_into_partial_records() {
    let dir = TempDir::new("long");
    let rt = HostRuntime::new(dir.0.clone(), "127.0.0.1".into()).unwrap();
    let p = pod("long");
    let mut exits = rt.exits();
    let inst = rt
        .start_container(
            &p,
            &config(
                "c",
                &[
                    "sh",
                    "-c",
                    "head -c 20000 /dev/zero | tr '\\0' a; echo; printf tail",
                ],
            ),
        )
        .await
        .unwrap();
    let n = next_exit(&mut exits, &inst.id).await;
    assert_eq!(n.exit.exit_code, 0);
    let recs = records(&rt.log_path(&p, "c", 0));
    let shape: Vec<(&str, usize)> = recs.iter().map(|r| (r.1.as_str(), r.2.len())).collect();
    assert_eq!(shape, vec![("P", 16384), ("F", 20000 - 16384), ("F", 4)]);
    assert_eq!(recs[2].2, "tail");
    rt.remove_sandbox(&p).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_kills_a_term_ignoring_process_group() {
    let dir = TempDir::new("stop");
    let rt = HostRuntime::new(dir.0.clone(), "127.0.0.1".into()).unwrap();
    let p = pod("stop");
    let mut exits = rt.exits();
    // The shell ignores SIGTERM (and so do the sleeps it starts); one sleep runs in the
    // background, the other in the foreground.
    let inst = rt
        .start_container(
            &p,
            &config(
                "c",
                &[
                    "sh",
                    "-c",
                    "trap '' TERM; sleep 1000 & echo ready; sleep 1000",
                ],
            ),
        )
        .await
        .unwrap();
    let pgid = rt.pid(&inst.id).unwrap();
    let log = rt.log_path(&p, "c", 0);
    eventually("ready", || {
        records(&log).iter().any(|r| r.2 == "ready") && live_members(pgid).len() >= 2
    })
    .await;

    let exit = rt
        .stop_container(&p, &inst.id, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(exit.exit_code, 137);
    assert_eq!(exit.reason, ExitReason::Error);
    let n = next_exit(&mut exits, &inst.id).await;
    assert_eq!(n.exit, exit);
    eventually("the whole group is gone", || live_members(pgid).is_empty()).await;
    assert_eq!(rt.pid(&inst.id), None);

    // A process that exits on SIGTERM is reported 143.
    let inst = rt
        .start_container(&p, &config("d", &["sleep", "1000"]))
        .await
        .unwrap();
    let exit = rt
        .stop_container(&p, &inst.id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!((exit.exit_code, exit.reason), (143, ExitReason::Error));
    rt.remove_sandbox(&p).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_with_the_container_env_and_times_out() {
    let dir = TempDir::new("exec");
    let rt = HostRuntime::new(dir.0.clone(), "127.0.0.1".into()).unwrap();
    let p = pod("exec");
    let mut c = config("c", &["sleep", "1000"]);
    c.env = vec![("FOO".into(), "bar".into())];
    let inst = rt.start_container(&p, &c).await.unwrap();

    let r = rt
        .exec(
            &p,
            &inst.id,
            &sv(&["sh", "-c", "echo $FOO; echo oops >&2; exit 2"]),
            Some(PATIENCE),
        )
        .await
        .unwrap();
    assert_eq!(r.exit_code, 2);
    assert!(!r.timed_out);
    assert_eq!(r.output, "bar\noops\n");

    // A timeout kills the command and what it started.
    let r = rt
        .exec(
            &p,
            &inst.id,
            &sv(&["sh", "-c", "sleep 1000 & sleep 1000"]),
            Some(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    assert!(r.timed_out);

    // Output is capped at 10 KiB.
    let r = rt
        .exec(
            &p,
            &inst.id,
            &sv(&["sh", "-c", "head -c 50000 /dev/zero | tr '\\0' x"]),
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.exit_code, 0);
    assert_eq!(r.output.len(), 10 * 1024);

    // Probes through the runtime.
    let probe = |argv: &[&str], t: u64| {
        let argv = sv(argv);
        let rt = &rt;
        let p = &p;
        let id = inst.id.clone();
        async move { probe_io::exec_probe(rt, p, &id, &argv, Duration::from_secs(t)).await }
    };
    assert_eq!(probe(&["true"], 60).await, ProbeOutcome::Success);
    assert_eq!(
        probe(&["sh", "-c", "echo unhealthy; exit 1"], 60).await,
        ProbeOutcome::Failure("unhealthy\n".into())
    );
    assert_eq!(
        probe(&["sleep", "1000"], 1).await,
        ProbeOutcome::Failure("command \"sleep 1000\" timed out".into())
    );
    match probe(&["no-such-probe-binary"], 60).await {
        ProbeOutcome::Failure(m) => assert!(
            m.contains("exec: \"no-such-probe-binary\": executable file not found in $PATH"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }

    rt.stop_container(&p, &inst.id, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(rt.exec(&p, &inst.id, &sv(&["true"]), None).await.is_err());
    assert!(matches!(probe(&["true"], 60).await, ProbeOutcome::Error(_)));
    assert!(
        rt.exec(&p, "host://nope", &sv(&["true"]), None)
            .await
            .is_err()
    );
    rt.remove_sandbox(&p).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_errors() {
    let dir = TempDir::new("starterr");
    let rt = HostRuntime::new(dir.0.clone(), "127.0.0.1".into()).unwrap();
    let p = pod("bad");

    match rt.start_container(&p, &config("c", &[])).await {
        Err(StartError::Create(m)) => assert_eq!(
            m,
            "the host runtime needs a command: set command or args in the container spec"
        ),
        other => panic!("{other:?}"),
    }

    match rt
        .start_container(&p, &config("c", &["skiff-no-such-binary", "x"]))
        .await
    {
        Err(StartError::Run(m)) => assert_eq!(
            m,
            "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: \"skiff-no-such-binary\": executable file not found in $PATH: unknown"
        ),
        other => panic!("{other:?}"),
    }
    // The failed instance is listed as containerd reports it.
    let known = rt.list().await;
    assert_eq!(known.len(), 1);
    match &known[0].instance.state {
        InstanceState::Exited(e) => {
            assert_eq!(e.exit_code, 128);
            assert_eq!(e.reason, ExitReason::StartError);
            assert!(
                e.message
                    .as_deref()
                    .unwrap()
                    .contains("skiff-no-such-binary")
            );
        }
        s => panic!("{s:?}"),
    }

    let mut c = config("c", &["true"]);
    c.working_dir = Some("/skiff/no/such/dir".into());
    match rt.start_container(&p, &c).await {
        Err(StartError::Run(m)) => assert!(
            m.contains("chdir to cwd (\"/skiff/no/such/dir\") set in config.json failed"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    rt.remove_sandbox(&p).await.unwrap();
    assert!(rt.list().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_defaults_pod_root_and_mounts() {
    let dir = TempDir::new("env");
    let rt = HostRuntime::new(dir.0.clone(), "127.0.0.1".into()).unwrap();
    let p = pod("env");
    let vol = dir.0.join("volume");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("file"), "x").unwrap();
    let mut c = config(
        "c",
        &[
            "sh",
            "-c",
            "echo \"$HOME|$SKIFF_POD_ROOT|$SKIFF_MOUNT_DATA_DIR|$HOSTNAME|$FOO|$(pwd)\"; echo \"$PATH\"; ls \"$SKIFF_POD_ROOT/data/dir\"; echo ---; env",
        ],
    );
    c.env = vec![("FOO".into(), "1".into())];
    c.mounts = vec![Mount {
        host_path: vol.clone(),
        container_path: "/data/dir".into(),
        read_only: false,
    }];
    let mut exits = rt.exits();
    let inst = rt.start_container(&p, &c).await.unwrap();
    next_exit(&mut exits, &inst.id).await;
    let root = rt.pod_root(&p);
    let lines: Vec<String> = records(&rt.log_path(&p, "c", 0))
        .into_iter()
        .map(|r| r.2)
        .collect();
    let sep = lines.iter().position(|l| l == "---").expect("separator");
    // The agent's own environment does not leak into containers (the shell adds PWD, SHLVL...).
    let expected = [
        "PATH",
        "HOME",
        "HOSTNAME",
        "SKIFF_POD_ROOT",
        "SKIFF_MOUNT_DATA_DIR",
        "FOO",
    ];
    let shell = ["PWD", "OLDPWD", "SHLVL", "_"];
    let container_env: Vec<&str> = lines[sep + 1..]
        .iter()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    for k in expected {
        assert!(container_env.contains(&k), "{k} missing: {container_env:?}");
    }
    for k in &container_env {
        assert!(
            expected.contains(k) || shell.contains(k),
            "unexpected {k} in {container_env:?}"
        );
    }
    assert_eq!(
        lines[..sep],
        vec![
            format!(
                "{}|{}|{}|env|1|{}",
                root.display(),
                root.display(),
                vol.display(),
                root.display()
            ),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            "file".to_string(),
        ]
    );
    rt.remove_sandbox(&p).await.unwrap();
    assert!(vol.join("file").exists(), "the volume itself is left alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_runtime_adopts_running_processes() {
    let dir = TempDir::new("adopt");
    let p = pod("adopt");
    let a = HostRuntime::new(dir.0.clone(), "127.0.0.1".into()).unwrap();
    let inst = a
        .start_container(&p, &config("c", &["sh", "-c", "echo first; sleep 1000"]))
        .await
        .unwrap();
    let pid = a.pid(&inst.id).unwrap();
    let log = a.log_path(&p, "c", 0);
    eventually("first output", || {
        records(&log).iter().any(|r| r.2 == "first")
    })
    .await;
    drop(a);

    let b = HostRuntime::new(dir.0.clone(), "127.0.0.1".into()).unwrap();
    let known = b.list().await;
    assert_eq!(known.len(), 1);
    assert_eq!(known[0].pod_uid, p.uid);
    assert_eq!(known[0].container, "c");
    assert_eq!(known[0].instance.id, inst.id);
    assert_eq!(
        known[0].instance.state, inst.state,
        "running since the same time"
    );
    assert_eq!(b.pid(&inst.id), Some(pid));

    let r = b
        .exec(
            &p,
            &inst.id,
            &sv(&["sh", "-c", "echo $HOSTNAME"]),
            Some(PATIENCE),
        )
        .await
        .unwrap();
    assert_eq!(r.output, "adopt\n");

    let mut exits = b.exits();
    let exit = b
        .stop_container(&p, &inst.id, Duration::from_secs(30))
        .await
        .unwrap();
    // The first runtime's waiter (same process) records the real code; a separate agent
    // process would report 255.
    assert!(exit.exit_code == 143 || exit.exit_code == 255, "{exit:?}");
    let n = next_exit(&mut exits, &inst.id).await;
    assert_eq!(n.exit, exit);
    eventually("the process is gone", || live_members(pid).is_empty()).await;
    assert!(matches!(
        b.list().await[0].instance.state,
        InstanceState::Exited(_)
    ));

    // A third runtime sees the recorded exit.
    drop(b);
    let c = HostRuntime::new(dir.0.clone(), "127.0.0.1".into()).unwrap();
    assert_eq!(
        c.list().await[0].instance.state,
        InstanceState::Exited(exit)
    );
    c.remove_sandbox(&p).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_died_unrecorded_is_unknown() {
    let dir = TempDir::new("lost");
    let p = pod("lost");
    let a = HostRuntime::new(dir.0.clone(), "127.0.0.1".into()).unwrap();
    let mut exits = a.exits();
    let inst = a
        .start_container(&p, &config("c", &["sleep", "1000"]))
        .await
        .unwrap();
    a.stop_container(&p, &inst.id, Duration::from_secs(30))
        .await
        .unwrap();
    next_exit(&mut exits, &inst.id).await;
    drop(a);
    // Pretend the agent died before it could record the exit.
    let record = dir
        .0
        .join("containers")
        .join(&inst.id["host://".len()..])
        .join("record.json");
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    v["exit"] = serde_json::Value::Null;
    std::fs::write(&record, serde_json::to_vec(&v).unwrap()).unwrap();

    let b = HostRuntime::new(dir.0.clone(), "127.0.0.1".into()).unwrap();
    let known = b.list().await;
    assert_eq!(known[0].instance.state, InstanceState::Unknown);
    let exit = b
        .stop_container(&p, &inst.id, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(exit.exit_code, 255);
    assert_eq!(exit.reason, ExitReason::Other("Unknown".into()));
    b.remove_sandbox(&p).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_always_present() {
    let dir = TempDir::new("img");
    let rt = HostRuntime::new(dir.0.clone(), "10.0.0.7".into()).unwrap();
    assert_eq!(
        rt.image_status("anything:latest").await,
        skiff_agent::ImagePresence::Present
    );
    assert_eq!(rt.pull_image("x", None).await.unwrap().size_bytes, 0);
    assert_eq!(
        rt.create_sandbox(&pod("a"), &Default::default())
            .await
            .unwrap()
            .pod_ip,
        "10.0.0.7"
    );
    // Removing what does not exist is fine.
    rt.remove_sandbox(&pod("never")).await.unwrap();
    rt.remove_container(&pod("never"), "host://0")
        .await
        .unwrap();
    assert!(
        rt.stop_container(&pod("never"), "host://0", Duration::from_secs(1))
            .await
            .is_err()
    );
}
