//! `smlog cluster`: make, run, grow, shrink and look at a replicated volume's nodes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use smlog::EngineOptions;
use smlog_cluster::auth::ClusterKey;
use smlog_cluster::node_dir::{read_key, NodeDir};
use smlog_cluster::server::Server;
use smlog_cluster::tcp::Client;
use smlog_cluster::wire::{Request, Response, StatusReport};

use crate::cli::OpenArgs;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// `smlog cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Make a node's directory: a new cluster's first node, or (with --key) a node that
    /// joins an existing cluster once `smlog cluster add` names it.
    Init(InitArgs),
    /// Run the node in DIR until SIGINT or SIGTERM (a clean stop: the volume is synced
    /// and checkpointed). A node made to start a cluster becomes its only voter on its
    /// first start.
    Serve(ServeArgs),
    /// Show what a node sees: leader, term, members, its log, committed and applied
    /// indexes, and on the leader each member's progress and lag.
    Status(StatusArgs),
    /// Add node ID (already serving at ADDR) as a learner, wait until it has caught up,
    /// then make it a voter.
    Add(AddArgs),
    /// Remove node ID from the cluster.
    Remove(RemoveArgs),
}

/// `smlog cluster init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The node's directory (made when missing; it must hold no node).
    pub dir: PathBuf,
    /// The node's id (1 or more, unique in the cluster).
    #[arg(long)]
    pub id: u64,
    /// The address it listens on, that the other nodes reach it at (127.0.0.1:PORT).
    #[arg(long)]
    pub listen: String,
    /// The cluster's KEY file (from the first node's directory): join that cluster.
    /// Without it, a new cluster with a new key.
    #[arg(long)]
    pub key: Option<PathBuf>,
}

/// `smlog cluster serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The node's directory.
    pub dir: PathBuf,
    #[command(flatten)]
    pub open: OpenArgs,
}

/// How a command reaches the cluster.
#[derive(Debug, Args)]
pub struct Reach {
    /// The cluster's KEY file.
    #[arg(long)]
    pub key: PathBuf,
}

/// `smlog cluster status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A node's address.
    pub addr: String,
    #[command(flatten)]
    pub reach: Reach,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `smlog cluster add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// The new node's id.
    #[arg(long)]
    pub id: u64,
    /// The new node's address.
    #[arg(long)]
    pub addr: String,
    /// Any member's address (the command finds the leader from there).
    #[arg(long)]
    pub to: String,
    #[command(flatten)]
    pub reach: Reach,
}

/// `smlog cluster remove`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The node to remove.
    #[arg(long)]
    pub id: u64,
    /// Any member's address.
    #[arg(long)]
    pub to: String,
    #[command(flatten)]
    pub reach: Reach,
}

/// Runs a `smlog cluster` command.
pub fn run(command: ClusterCommand) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match command {
            ClusterCommand::Init(args) => init(args),
            ClusterCommand::Serve(args) => serve(args).await,
            ClusterCommand::Status(args) => status(args).await,
            ClusterCommand::Add(args) => add(args).await,
            ClusterCommand::Remove(args) => remove(args).await,
        }
    })
}

fn init(args: InitArgs) -> Result<ExitCode> {
    let key = args.key.as_deref().map(read_key).transpose()?;
    let dir = NodeDir::init(&args.dir, args.id, &args.listen, key)?;
    if dir.bootstrap {
        println!(
            "node {} of a new cluster in {}; copy {} to the nodes that join and to whoever \
             runs the cluster commands",
            dir.id,
            dir.path.display(),
            dir.key_file().display()
        );
    } else {
        println!(
            "node {} in {}: serve it, then `smlog cluster add --id {} --addr {}` on the cluster",
            dir.id,
            dir.path.display(),
            dir.id,
            dir.listen
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: ServeArgs) -> Result<ExitCode> {
    let dir = NodeDir::open(&args.dir)?;
    let server = Server::start(
        &dir,
        args.open.device_options(true),
        EngineOptions::default(),
    )
    .await?;
    eprintln!("smlog: node {} serving on {}", dir.id, server.addr);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    eprintln!("smlog: node {} stopping", dir.id);
    server.stop().await;
    Ok(ExitCode::SUCCESS)
}

async fn call(addr: &str, key: &ClusterKey, request: &Request) -> Result<Response> {
    let mut client = Client::connect(addr, key).await?;
    Ok(client.call(request).await?)
}

/// What the node at `addr` sees.
pub(crate) async fn report(addr: &str, key: &ClusterKey) -> Result<StatusReport> {
    match call(addr, key, &Request::Status).await? {
        Response::Status(report) => Ok(report),
        other => Err(format!("{addr} answered {other:?}").into()),
    }
}

/// The leader's address, found from any member's: waits up to 10 s for an election.
async fn leader_addr(addr: &str, key: &ClusterKey) -> Result<String> {
    for _ in 0..100 {
        let seen = report(addr, key).await?;
        if let Some(leader) = seen.leader {
            if let Some(member) = seen.members.iter().find(|m| m.id == leader) {
                return Ok(member.addr.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{addr} knows no leader").into())
}

async fn status(args: StatusArgs) -> Result<ExitCode> {
    let key = read_key(&args.reach.key)?;
    let seen = report(&args.addr, &key).await?;
    if args.json {
        println!("{}", serde_json::to_string(&seen)?);
        return Ok(ExitCode::SUCCESS);
    }
    let show = |index: Option<u64>| index.map_or("-".to_string(), |i| i.to_string());
    println!(
        "node {} ({}), term {}, leader {}",
        seen.id,
        seen.state,
        seen.term,
        seen.leader.map_or("none".to_string(), |l| l.to_string())
    );
    println!(
        "log: last {}, committed {}, applied {}",
        show(seen.last_log_index),
        show(seen.committed),
        show(seen.applied)
    );
    if seen.log_batches > 0 {
        println!(
            "raft log since start: {} records in {} durable writes ({:.1} per write)",
            seen.log_records,
            seen.log_batches,
            seen.log_records as f64 / seen.log_batches as f64
        );
    }
    for member in &seen.members {
        let role = if member.voter { "voter" } else { "learner" };
        let progress = match (member.matched, seen.last_log_index) {
            (Some(matched), Some(last)) => {
                format!("matched {matched} (lag {})", last.saturating_sub(matched))
            }
            _ => String::new(),
        };
        println!("  {} {} {role} {progress}", member.id, member.addr);
    }
    Ok(ExitCode::SUCCESS)
}

async fn membership_call(to: &str, key: &ClusterKey, request: Request) -> Result<()> {
    let leader = leader_addr(to, key).await?;
    match call(&leader, key, &request).await? {
        Response::Done => Ok(()),
        Response::Failed(why) => Err(why.into()),
        other => Err(format!("{leader} answered {other:?}").into()),
    }
}

async fn add(args: AddArgs) -> Result<ExitCode> {
    let key = read_key(&args.reach.key)?;
    add_voter(&args.to, &key, args.id, &args.addr).await?;
    println!("node {} ({}) is a voter", args.id, args.addr);
    Ok(ExitCode::SUCCESS)
}

/// Adds node `id` (serving at `addr`) as a learner through the cluster member at `to`,
/// waits until it caught up, then makes it a voter.
pub(crate) async fn add_voter(to: &str, key: &ClusterKey, id: u64, addr: &str) -> Result<()> {
    let learner = Request::AddLearner {
        id,
        addr: addr.to_owned(),
    };
    membership_call(to, key, learner).await?;
    let seen = report(&leader_addr(to, key).await?, key).await?;
    let mut voters: Vec<u64> = seen
        .members
        .iter()
        .filter(|m| m.voter)
        .map(|m| m.id)
        .collect();
    if !voters.contains(&id) {
        voters.push(id);
    }
    let change = Request::ChangeMembership {
        voters,
        keep_learners: true,
    };
    membership_call(to, key, change).await
}

async fn remove(args: RemoveArgs) -> Result<ExitCode> {
    let key = read_key(&args.reach.key)?;
    let seen = report(&leader_addr(&args.to, &key).await?, &key).await?;
    if !seen.members.iter().any(|m| m.id == args.id) {
        return Err(format!("node {} is not a member", args.id).into());
    }
    let voters: Vec<u64> = seen
        .members
        .iter()
        .filter(|m| m.voter && m.id != args.id)
        .map(|m| m.id)
        .collect();
    let change = Request::ChangeMembership {
        voters,
        keep_learners: false,
    };
    membership_call(&args.to, &key, change).await?;
    println!("node {} removed", args.id);
    Ok(ExitCode::SUCCESS)
}
