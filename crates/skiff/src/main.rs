//! skiff: a Kubernetes-compatible pod orchestrator in one binary. This file is only the command
//! line; each subcommand wires parts that live in their own crates or modules.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: the server allocates many small JSON values from several threads; glibc's malloc
/// spent a fifth of the API benchmark's CPU in allocation and arena-lock contention.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod cluster;
mod image;
mod kubeconfig;
mod runtime;
mod sim;
mod up;

#[derive(Parser)]
#[command(
    name = "skiff",
    version,
    about = "A Kubernetes-compatible pod orchestrator in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a one-machine cluster: API server with the embedded store, scheduler, controllers and
    /// a local agent (runc when it can, else the host runtime), and write a kubeconfig for kubectl.
    Up(up::UpArgs),
    /// Start a control-plane server: the API server, scheduler and controllers, no local agent
    /// (`--disable scheduler,controllers` for the API server alone). With `--store etcd`
    /// several servers share one cluster; the scheduler and controllers run on the leader.
    Server(up::UpArgs),
    /// Run only the scheduler, against the server a kubeconfig names.
    Scheduler(up::SchedulerArgs),
    /// Run a node agent that joins a server.
    Agent(up::AgentArgs),
    /// Run simulated nodes that join the server a kubeconfig names (see `up --sim-nodes`).
    Sim(sim::SimCommandArgs),
    /// Bootstrap tokens that let agents on other hosts join (`skiff token create`).
    Token {
        #[command(subcommand)]
        cmd: cluster::TokenCommand,
    },
    /// Copy an embedded store into etcd (then run `skiff server --store etcd`).
    Migrate(cluster::MigrateArgs),
    /// Manage a node's images: import, ls, pull, rm.
    Image(image::ImageArgs),
    /// Run a benchmark against an in-process server.
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
}

fn main() -> ExitCode {
    // A runc shim is this binary started by the runc runtime: no CLI, no async runtime.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(runtime::SHIM_SUBCOMMAND) {
        let code = skiff_agent::runtime::runc::shim_main(&argv[2..]);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Up(args) => up::run(args, false).await,
            Command::Server(args) => up::run(args, true).await,
            Command::Scheduler(args) => up::run_scheduler(args).await,
            Command::Agent(args) => up::run_agent(args).await,
            Command::Sim(args) => sim::run(args).await,
            Command::Token { cmd } => cluster::token(cmd).await,
            Command::Migrate(args) => cluster::migrate(args).await,
            Command::Image(args) => image::run(args).await,
            Command::Bench { which } => bench::run(which).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The default data directory: `$XDG_STATE_HOME/skiff`, else `~/.local/state/skiff`.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("skiff");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".local/state/skiff")
}
