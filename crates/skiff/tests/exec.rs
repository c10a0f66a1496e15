//! `kubectl exec` end to end: the real kubectl against `skiff up` with its agent (host runtime).
//! kubectl speaks WebSocket (v5.channel.k8s.io) to the API server, which proxies the upgrade to
//! the agent's `/exec`, where the command runs as a process with the container's env.
//!
//! `-t` needs a terminal on kubectl's side, so that case runs kubectl under util-linux `script`.

mod common;

use common::cluster::Cluster;

#[test]
fn exec_streams_exit_codes_stdin_and_a_terminal() {
    let s = Cluster::start();
    s.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: shell}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1.36
    command: ["sleep", "600"]
    env: [{name: WHO, value: main-container}]
"#,
    )
    .ok();
    s.wait_status("shell", "Running", None, 60);

    // stdout and stderr, each to its own stream; the container's env.
    let out = s
        .kubectl(&[
            "exec",
            "shell",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; echo \"$WHO\"",
        ])
        .ok();
    assert_eq!(out.stdout, "out\nmain-container\n");
    assert_eq!(out.stderr, "err\n");

    // A non-zero exit code becomes kubectl's.
    let out = s.kubectl(&["exec", "shell", "--", "sh", "-c", "exit 3"]);
    assert_eq!(
        out.code, 3,
        "stdout {:?} stderr {:?}",
        out.stdout, out.stderr
    );
    assert!(
        out.stderr.contains("command terminated with exit code 3"),
        "{}",
        out.stderr
    );

    // stdin until its end.
    let out = s
        .kubectl_stdin(
            &["exec", "-i", "shell", "--", "cat"],
            Some("line one\nline two\n"),
        )
        .ok();
    assert_eq!(out.stdout, "line one\nline two\n");

    // A command that does not exist.
    let out = s.kubectl(&["exec", "shell", "--", "no-such-command-xyz"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains("exec: \"no-such-command-xyz\": executable file not found in $PATH"),
        "{}",
        out.stderr
    );

    // A container the pod does not have.
    let out = s.kubectl(&["exec", "shell", "-c", "nosuch", "--", "true"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains("container nosuch is not valid for pod shell"),
        "{}",
        out.stderr
    );

    // With a terminal: the command sees a tty, output comes back through it.
    let out = s.exec_tty("shell -- sh -c 'tty; echo hi from $WHO'");
    assert_eq!(out.code, 0, "{out:?}", out = (&out.stdout, &out.stderr));
    assert!(out.stdout.contains("/dev/pts/"), "{:?}", out.stdout);
    assert!(
        out.stdout.contains("hi from main-container\r\n"),
        "{:?}",
        out.stdout
    );
    // And its exit code too.
    let out = s.exec_tty("shell -- sh -c 'exit 5'");
    assert_eq!(out.code, 5, "{out:?}", out = (&out.stdout, &out.stderr));
}

#[test]
fn exec_picks_the_container_and_refuses_completed_pods() {
    let s = Cluster::start();
    s.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: two}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: first
    image: busybox:1.36
    command: ["sleep", "600"]
    env: [{name: WHO, value: first}]
  - name: second
    image: busybox:1.36
    command: ["sleep", "600"]
    env: [{name: WHO, value: second}]
---
apiVersion: v1
kind: Pod
metadata: {name: finished}
spec:
  restartPolicy: Never
  containers:
  - name: once
    image: busybox:1.36
    command: ["true"]
"#,
    )
    .ok();
    s.wait_status("two", "Running", None, 60);
    let who = |args: &[&str]| {
        let mut a = vec!["exec", "two"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--", "sh", "-c", "echo $WHO"]);
        s.kubectl(&a).ok().stdout
    };
    assert_eq!(who(&["-c", "second"]), "second\n");
    assert_eq!(who(&["-c", "first"]), "first\n");
    // Without -c: the first container (kubectl says which it picked).
    assert_eq!(who(&[]), "first\n");

    s.wait_status("finished", "Completed", None, 60);
    let out = s.kubectl(&["exec", "finished", "--", "true"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains(
            "cannot exec into a container in a completed pod; current phase is Succeeded"
        ),
        "{}",
        out.stderr
    );
}
