//! The cluster simulation: nodes in one process on the simulated device and the in-process
//! transport, clients writing concurrently, and a nemesis that partitions the network (both
//! ways and one way), loses, delays and reorders messages and replies, crashes nodes with a
//! crash plan on their devices (power loss, or lost, kept and torn writes) and restarts
//! them, and changes the membership while clients write. Nodes snapshot every 25 entries
//! and keep 3 behind, so a node that was away often catches up by installing a snapshot
//! (crashes fall during builds and installs too). Every client operation is recorded
//! (invoked, acknowledged with a reply, or unknown), then checked:
//!
//! - at most one leader per term (sampled throughout);
//! - no two nodes apply different entries at one index (every applied entry is recorded:
//!   the witness of the committed log, since nodes purge theirs), and what each node's log
//!   still holds is that log (no committed entry lost or changed);
//! - **linearizable**: the committed log is the witness order. The commands in it, applied
//!   in order to a reference engine (the request table answering repeats), give a result
//!   for each entry; every acknowledged operation has an entry with its request key whose
//!   result is the reply it got, and an operation acknowledged before another was invoked
//!   has its entry before any of the other's;
//! - every node's volume, once all have applied the whole log, equals the reference: same
//!   tree, same inode numbers, fsck clean.
//!
//! Seeds choose the workload and the faults. Thread scheduling and timers are the host's,
//! so a seed reproduces the same plan, not the same interleaving: a failure prints its seed
//! and what it found, and replaying the seed usually (not always) finds it again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use smlog::io::sim::{CrashPlan, SimDevice};
use smlog::{
    Engine, EntryId, FileKind, Ino, NewAttrs, RequestKey, SetAttrChanges, Time, TxnResult, ROOT_INO,
};
use smlog_recovery::harness::fs::tree_of;
use smlog_recovery::OpenOptions;

use crate::command::{Command, FileOp, Reply};
use crate::node::{raft_config, Node, WriteError};
use crate::raft::SnapshotPolicy;
use crate::raft::{EntryPayload, NodeInfo, RaftLogReader};
use crate::state_machine::{apply_command, MachineEvent, Observer};
use crate::transport::{LinkFaults, MemoryRouter};

/// How big a simulation is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimOptions {
    /// Nodes (3 or 5).
    pub nodes: u64,
    /// Concurrent clients.
    pub clients: u64,
    /// Operations each client issues.
    pub ops_per_client: u64,
    /// What links do to messages.
    pub faults: LinkFaults,
    /// Nemesis actions (partition, one-way cut, heal, crash, restart, membership change).
    pub nemesis_actions: u64,
    /// Plant a bug: appends acknowledged before they are durable (the simulation must
    /// report a violation).
    pub plant_ack_before_durable: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            nodes: 3,
            clients: 3,
            ops_per_client: 25,
            faults: LinkFaults {
                loss_percent: 3,
                reply_loss_percent: 3,
                delay_max: Duration::from_millis(5),
            },
            nemesis_actions: 12,
            plant_ack_before_durable: false,
        }
    }
}

/// What a simulation did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimReport {
    /// Operations invoked.
    pub ops: u64,
    /// Acknowledged.
    pub acknowledged: u64,
    /// Outcome unknown (no answer before the client gave up).
    pub unknown: u64,
    /// Entries in the committed log checked against the reference.
    pub entries_checked: u64,
    /// Partitions and one-way cuts.
    pub partitions: u64,
    /// Node crashes.
    pub crashes: u64,
    /// Membership changes.
    pub membership_changes: u64,
    /// Terms that had a leader.
    pub terms_with_leader: u64,
    /// Snapshots installed by a node behind the purged log.
    pub snapshots_installed: u64,
}

impl std::fmt::Display for SimReport {
    /// One line: what the runs checked.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} operations ({} acknowledged, {} unknown), {} log entries checked against the \
             reference, {} partitions, {} node crashes, {} membership changes, {} terms with \
             a leader, {} snapshots installed",
            self.ops,
            self.acknowledged,
            self.unknown,
            self.entries_checked,
            self.partitions,
            self.crashes,
            self.membership_changes,
            self.terms_with_leader,
            self.snapshots_installed
        )
    }
}

impl SimReport {
    /// Adds `other`'s counts to these (a run of many seeds).
    pub fn add(&mut self, other: &SimReport) {
        self.ops += other.ops;
        self.acknowledged += other.acknowledged;
        self.unknown += other.unknown;
        self.entries_checked += other.entries_checked;
        self.partitions += other.partitions;
        self.crashes += other.crashes;
        self.membership_changes += other.membership_changes;
        self.terms_with_leader += other.terms_with_leader;
        self.snapshots_installed += other.snapshots_installed;
    }
}

/// One client operation as the client saw it.
#[derive(Clone, Debug)]
struct Op {
    key: RequestKey,
    invoked: Instant,
    /// When it was acknowledged, with the reply.
    acked: Option<(Instant, Reply)>,
}

struct Host {
    log: Arc<SimDevice>,
    volume: Arc<SimDevice>,
    node: Option<Arc<Node<SimDevice>>>,
}

/// Every entry any node applied, by index: the witness of the committed log (nodes purge
/// theirs behind their snapshots). Two nodes applying different entries at one index is a
/// violation.
#[derive(Default)]
struct Witness {
    entries: Mutex<BTreeMap<u64, crate::raft::Entry>>,
    conflict: Mutex<Option<String>>,
    installs: std::sync::atomic::AtomicU64,
}

impl Witness {
    fn heard(&self, node: u64, event: MachineEvent<'_>) {
        match event {
            MachineEvent::Applied(entry) => {
                let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
                let index = entry.log_id.index;
                match entries.get(&index) {
                    Some(seen) if seen != entry => {
                        let mut conflict = self.conflict.lock().unwrap_or_else(|e| e.into_inner());
                        conflict.get_or_insert_with(|| {
                            format!(
                                "node {node} applied {} {} where another applied {} {}",
                                entry.log_id, entry.payload, seen.log_id, seen.payload
                            )
                        });
                    }
                    Some(_) => {}
                    None => {
                        entries.insert(index, entry.clone());
                    }
                }
            }
            MachineEvent::Installed(_) => {
                self.installs
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

struct Sim {
    seed: u64,
    witness: Arc<Witness>,
    options: SimOptions,
    router: MemoryRouter<SimDevice>,
    hosts: Mutex<BTreeMap<u64, Host>>,
    history: Mutex<Vec<Op>>,
    leaders: Mutex<BTreeMap<u64, BTreeSet<u64>>>,
    voters: Mutex<BTreeSet<u64>>,
}

/// The simulation's nodes snapshot every this many entries.
const SIM_SNAPSHOT_EVERY_ENTRIES: u64 = 25;
/// And keep this many entries behind a snapshot.
const SIM_ENTRIES_KEPT_BEHIND_SNAPSHOT: u64 = 3;

/// Engine options of the simulation's and the cluster tests' volumes: small segments, no
/// background checkpoints (a checkpoint's timing would differ from run to run).
pub fn engine_options() -> OpenOptions {
    let mut options = OpenOptions {
        create: true,
        ..OpenOptions::default()
    };
    options.engine.segment_size_bytes = 1 << 20;
    options.engine.checkpoint_log_bytes = 0;
    options.engine.checkpoint_dirty_bytes = 0;
    options
}

impl Sim {
    fn live(&self) -> Vec<Arc<Node<SimDevice>>> {
        let hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts.values().filter_map(|h| h.node.clone()).collect()
    }

    async fn start(&self, id: u64) -> Result<(), String> {
        let (log, volume) = {
            let hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
            let host = &hosts[&id];
            (Arc::clone(&host.log), Arc::clone(&host.volume))
        };
        let mut config = raft_config(
            Duration::from_millis(40),
            Duration::from_millis(120),
            Duration::from_millis(240),
        );
        // Snapshots often, a short log behind them: a node that was away catches up from a
        // snapshot as often as from the log.
        config.snapshot_policy = SnapshotPolicy::LogsSinceLast(SIM_SNAPSHOT_EVERY_ENTRIES);
        config.max_in_snapshot_log_to_keep = SIM_ENTRIES_KEPT_BEHIND_SNAPSHOT;
        config.purge_batch_size = 1;
        let witness = Arc::clone(&self.witness);
        let observer: Observer = Arc::new(move |event| witness.heard(id, event));
        // A node that panics while starting (openraft refusing what its storage holds) is a
        // violation like any other.
        let network = self.router.network_of(id);
        let node = tokio::spawn(Node::start_observed(
            id,
            (log, volume),
            engine_options(),
            config,
            network,
            Some(observer),
        ))
        .await
        .map_err(|e| format!("node {id} panicked while starting: {e}"))?
        .map_err(|e| format!("node {id} did not start: {e}"))?;
        if self.options.plant_ack_before_durable {
            node.log().plant_ack_before_durable();
        }
        let node = Arc::new(node);
        self.router
            .add(id, node.raft().clone(), node.snapshot_inbox().clone());
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts.get_mut(&id).expect("a host").node = Some(node);
        Ok(())
    }

    async fn crash(&self, id: u64, plan: &CrashPlan) {
        let (node, log, volume) = {
            let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
            let host = hosts.get_mut(&id).expect("a host");
            (
                host.node.take(),
                Arc::clone(&host.log),
                Arc::clone(&host.volume),
            )
        };
        self.router.remove(id);
        log.crash();
        volume.crash();
        if let Some(node) = node {
            node.shutdown().await;
        }
        // New devices for the next incarnation: a thread of this one that outlives its
        // shutdown (a segment preparer) keeps failing as crashed instead of writing, or
        // making a name durable, on the devices the next one recovers from.
        let log = Arc::new(log.power_cycle(plan));
        let volume = Arc::new(volume.power_cycle(plan));
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let host = hosts.get_mut(&id).expect("a host");
        host.log = log;
        host.volume = volume;
    }

    /// Samples every node's view: at most one leader per term.
    fn observe(&self) -> Result<(), String> {
        if let Some(conflict) = &*self
            .witness
            .conflict
            .lock()
            .unwrap_or_else(|e| e.into_inner())
        {
            return Err(conflict.clone());
        }
        let mut leaders = self.leaders.lock().unwrap_or_else(|e| e.into_inner());
        for node in self.live() {
            let metrics = node.metrics();
            if metrics.state.is_leader() {
                let seen = leaders.entry(metrics.current_term).or_default();
                seen.insert(node.id());
                if seen.len() > 1 {
                    return Err(format!(
                        "two leaders in term {}: {seen:?}",
                        metrics.current_term
                    ));
                }
            }
        }
        Ok(())
    }

    /// Sends `command` until a node acknowledges it or `deadline` passes, following "not
    /// the leader" answers; every try carries the same request key.
    async fn submit(
        &self,
        rng: &mut ChaCha8Rng,
        command: &Command,
        deadline: Instant,
    ) -> Option<Reply> {
        let mut target: Option<u64> = None;
        while Instant::now() < deadline {
            let live = self.live();
            if live.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            let node = match target.and_then(|id| live.iter().find(|n| n.id() == id)) {
                Some(node) => Arc::clone(node),
                None => Arc::clone(&live[rng.gen_range(0..live.len())]),
            };
            let attempt =
                tokio::time::timeout(Duration::from_millis(500), node.write(command.clone()));
            match attempt.await {
                Ok(Ok(written)) => return Some(written.reply),
                Ok(Err(WriteError::NotLeader { leader })) => target = leader,
                Ok(Err(_)) | Err(_) => target = None,
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    async fn client(&self, client: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ (client << 32));
        let mut files: Vec<Ino> = Vec::new();
        for n in 0..self.options.ops_per_client {
            let op = random_op(&mut rng, &files, n);
            let key = RequestKey {
                client_id: client,
                request_id: n,
            };
            let command = Command {
                key: Some(key),
                now: Time {
                    secs: (client * 1_000 + n) as i64,
                    nanos: 0,
                },
                op,
            };
            let invoked = Instant::now();
            let reply = self
                .submit(&mut rng, &command, invoked + Duration::from_secs(4))
                .await;
            if let Some(Reply(Ok(TxnResult::Ino(ino)))) = reply {
                if matches!(command.op, FileOp::Create { .. }) {
                    files.push(ino);
                }
            }
            self.history
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Op {
                    key,
                    invoked,
                    acked: reply.map(|reply| (Instant::now(), reply)),
                });
        }
    }

    async fn nemesis(&self, report: &Mutex<SimReport>) -> Result<(), String> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x6e65_6d65);
        let ids: Vec<u64> = (1..=self.options.nodes).collect();
        let minority = (self.options.nodes as usize - 1) / 2;
        let mut down: Vec<u64> = Vec::new();
        let count =
            |f: fn(&mut SimReport)| f(&mut report.lock().unwrap_or_else(|e| e.into_inner()));
        for _ in 0..self.options.nemesis_actions {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(100..400))).await;
            match rng.gen_range(0..7) {
                0 => {
                    let mut shuffled = ids.clone();
                    for i in (1..shuffled.len()).rev() {
                        shuffled.swap(i, rng.gen_range(0..=i));
                    }
                    let split = rng.gen_range(1..ids.len());
                    self.router.isolate(&shuffled[..split], &shuffled[split..]);
                    count(|r| r.partitions += 1);
                }
                1 => {
                    let from = ids[rng.gen_range(0..ids.len())];
                    let to = ids[rng.gen_range(0..ids.len())];
                    if from != to {
                        self.router.cut(from, to);
                        count(|r| r.partitions += 1);
                    }
                }
                2 => self.router.heal(),
                3 if down.len() < minority => {
                    let up: Vec<u64> = ids.iter().copied().filter(|i| !down.contains(i)).collect();
                    let victim = up[rng.gen_range(0..up.len())];
                    let plan = if rng.gen_bool(0.5) {
                        CrashPlan::power_loss()
                    } else {
                        CrashPlan::random_unsynced(&mut rng)
                    };
                    self.crash(victim, &plan).await;
                    down.push(victim);
                    count(|r| r.crashes += 1);
                }
                4 if !down.is_empty() => {
                    let back = down.swap_remove(rng.gen_range(0..down.len()));
                    self.start(back).await?;
                }
                5 if down.is_empty() && self.reconfigure(&mut rng).await => {
                    count(|r| r.membership_changes += 1);
                }
                6 if down.is_empty() => {
                    // The whole cluster loses power at once, and comes back.
                    for id in &ids {
                        self.crash(*id, &CrashPlan::power_loss()).await;
                    }
                    for id in &ids {
                        self.start(*id).await?;
                    }
                    let crashed = ids.len() as u64;
                    report.lock().unwrap_or_else(|e| e.into_inner()).crashes += crashed;
                }
                _ => {}
            }
            self.observe()?;
        }
        self.router.heal();
        for back in down {
            self.start(back).await?;
        }
        Ok(())
    }

    /// Removes a random voter and adds it back as a voter.
    async fn reconfigure(&self, rng: &mut ChaCha8Rng) -> bool {
        let Some(leader) = self
            .live()
            .into_iter()
            .find(|n| n.metrics().state.is_leader())
        else {
            return false;
        };
        let voters: Vec<u64> = self
            .voters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        let leaving = voters[rng.gen_range(0..voters.len())];
        if leaving == leader.id() {
            return false;
        }
        let fewer: BTreeSet<u64> = voters.iter().copied().filter(|v| *v != leaving).collect();
        let all: BTreeSet<u64> = voters.iter().copied().collect();
        let timeout = Duration::from_secs(3);
        let removed =
            tokio::time::timeout(timeout, leader.raft().change_membership(fewer, true)).await;
        let readded =
            tokio::time::timeout(timeout, leader.raft().change_membership(all, true)).await;
        matches!((removed, readded), (Ok(Ok(_)), Ok(Ok(_))))
    }
}

/// A client's next operation: on a few names in the root (so operations meet), or on a
/// file it created.
fn random_op(rng: &mut ChaCha8Rng, files: &[Ino], n: u64) -> FileOp {
    const NAMES: [&[u8]; 4] = [b"a", b"b", b"c", b"d"];
    let name = NAMES[rng.gen_range(0..NAMES.len())].to_vec();
    let attrs = |mode| NewAttrs {
        mode,
        uid: 0,
        gid: 0,
        umask: 0,
    };
    let parent = ROOT_INO;
    match rng.gen_range(0..100) {
        0..=24 => FileOp::Create {
            parent,
            name,
            attrs: attrs(0o644),
        },
        25..=34 => FileOp::Mkdir {
            parent,
            name,
            attrs: attrs(0o755),
        },
        35..=49 => FileOp::Unlink { parent, name },
        50..=54 => FileOp::Rmdir { parent, name },
        55..=69 => FileOp::Rename {
            from_parent: parent,
            from_name: name,
            to_parent: parent,
            to_name: NAMES[rng.gen_range(0..NAMES.len())].to_vec(),
            flags: Default::default(),
        },
        70..=89 if !files.is_empty() => FileOp::Write {
            ino: files[rng.gen_range(0..files.len())],
            offset: rng.gen_range(0..20_000),
            data: vec![n as u8; rng.gen_range(1..6_000)],
        },
        90..=92 => FileOp::Mknod {
            parent,
            name,
            kind: if rng.gen_bool(0.5) {
                FileKind::Fifo
            } else {
                FileKind::CharDevice { rdev: 0x0103 }
            },
            attrs: attrs(0o644),
        },
        _ if !files.is_empty() => FileOp::SetAttr {
            ino: files[rng.gen_range(0..files.len())],
            changes: SetAttrChanges {
                size: Some(rng.gen_range(0..30_000)),
                ..SetAttrChanges::default()
            },
        },
        _ => FileOp::Unlink { parent, name },
    }
}

/// Runs simulation `seed`; a violation is described in the error, with the seed.
pub async fn run(seed: u64, options: &SimOptions) -> Result<SimReport, String> {
    let sim = Arc::new(Sim {
        seed,
        witness: Arc::new(Witness::default()),
        options: options.clone(),
        router: MemoryRouter::with_faults(options.faults, seed),
        hosts: Mutex::new(
            (1..=options.nodes)
                .map(|id| {
                    let host = Host {
                        log: Arc::new(SimDevice::new(seed ^ (id << 8))),
                        volume: Arc::new(SimDevice::new(seed ^ (id << 16))),
                        node: None,
                    };
                    (id, host)
                })
                .collect(),
        ),
        history: Mutex::new(Vec::new()),
        leaders: Mutex::new(BTreeMap::new()),
        voters: Mutex::new((1..=options.nodes).collect()),
    });
    let fail = |why: String| format!("seed {seed}: {why}");
    for id in 1..=options.nodes {
        sim.start(id).await.map_err(fail)?;
    }
    let members: BTreeMap<u64, NodeInfo> = (1..=options.nodes)
        .map(|id| (id, NodeInfo::new(format!("sim:{id}"))))
        .collect();
    let first = sim.live()[0].clone();
    first
        .raft()
        .initialize(members)
        .await
        .map_err(|e| fail(format!("initialize: {e}")))?;
    // The cluster exists once its first membership is committed (before that, a power loss
    // of every node may take it).
    first
        .raft()
        .wait(Some(Duration::from_secs(10)))
        .metrics(
            |m| m.current_leader.is_some() && m.cluster_committed.is_some(),
            "a committed membership",
        )
        .await
        .map_err(|e| fail(format!("no leader after initialize: {e}")))?;

    let report = Mutex::new(SimReport::default());
    let clients = (1..=options.clients).map(|client| {
        let sim = Arc::clone(&sim);
        tokio::spawn(async move { sim.client(client).await })
    });
    let clients: Vec<_> = clients.collect();
    let observer = {
        let sim = Arc::clone(&sim);
        tokio::spawn(async move {
            loop {
                if let Err(why) = sim.observe() {
                    return why;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let nemesis = sim.nemesis(&report).await;
    for client in clients {
        client
            .await
            .map_err(|e| fail(format!("a client panicked: {e}")))?;
    }
    observer.abort();
    // The observer only ends early with a violation.
    if let Ok(Ok(why)) = tokio::time::timeout(Duration::from_millis(1), observer).await {
        return Err(fail(why));
    }
    nemesis.map_err(fail)?;
    sim.observe().map_err(fail)?;
    let mut report = report.into_inner().unwrap_or_else(|e| e.into_inner());
    let checked = check(&sim, &mut report).await.map_err(fail);
    for node in sim.live() {
        node.shutdown().await;
    }
    // The router holds every node's Raft, whose network holds the router: let go of them,
    // or a seed's nodes (and their devices) outlive it.
    for id in 1..=options.nodes {
        sim.router.remove(id);
    }
    checked.map(|()| report)
}

/// Ends the faults and waits until every node applied the whole log; returns its last
/// index.
async fn converge(sim: &Sim, nodes: &[Arc<Node<SimDevice>>]) -> Result<u64, String> {
    // The faults end: the links deliver everything from now on.
    sim.router.set_faults(LinkFaults::default());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut probed: Option<Instant> = None;
    let last = loop {
        // A write through the leader commits everything before it (again every 2 s, in
        // case leadership moved).
        if probed.is_none_or(|at| at.elapsed() > Duration::from_secs(2)) {
            let probe = Command {
                key: None,
                now: Time { secs: 1, nanos: 0 },
                op: FileOp::SetAttr {
                    ino: ROOT_INO,
                    changes: SetAttrChanges::default(),
                },
            };
            let mut rng = ChaCha8Rng::seed_from_u64(sim.seed);
            if sim
                .submit(&mut rng, &probe, Instant::now() + Duration::from_secs(2))
                .await
                .is_some()
            {
                probed = Some(Instant::now());
            }
        }
        let last = nodes
            .iter()
            .filter_map(|n| n.metrics().last_log_index)
            .max();
        let caught_up = nodes
            .iter()
            .all(|n| n.metrics().last_applied.map(|l| l.index) >= last);
        if probed.is_some() && caught_up {
            break last.unwrap_or(0);
        }
        if Instant::now() > deadline {
            let views: Vec<String> = nodes
                .iter()
                .map(|n| {
                    let m = n.metrics();
                    format!(
                        "node {}: raft log durable {} of {} ({:?}), engine stopped {:?}, \
                         {:?} term {} leader {:?} last {:?} applied {:?} purged {:?} voters {:?}",
                        n.id(),
                        n.log().log().durable_lsn(),
                        n.log().log().last_lsn(),
                        n.log().log().failure(),
                        n.engine().stopped(),
                        m.state,
                        m.current_term,
                        m.current_leader,
                        m.last_log_index,
                        m.last_applied.map(|l| l.index),
                        m.purged.map(|l| l.index),
                        m.membership_config
                            .membership()
                            .voter_ids()
                            .collect::<Vec<_>>()
                    )
                })
                .collect();
            return Err(format!(
                "the nodes did not converge within 20 s after the faults ended: {}",
                views.join("; ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    Ok(last)
}

/// The committed log up to `last`, from the witness (every entry some node applied), after
/// checking that it holds every index and that what each node's log still holds (its
/// purged prefix aside) is that log.
async fn committed_log(
    sim: &Sim,
    nodes: &[Arc<Node<SimDevice>>],
    last: u64,
) -> Result<Vec<crate::raft::Entry>, String> {
    let witness = sim
        .witness
        .entries
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    // openraft's first entry (the first membership) is index 0 or 1.
    let first = witness.keys().next().copied().unwrap_or(0).min(1);
    let mut log = Vec::new();
    for index in first..=last {
        let entry = witness
            .get(&index)
            .ok_or_else(|| format!("entry {index} of {last} was applied by no node"))?;
        log.push(entry.clone());
    }
    for node in nodes {
        let mut reader = node.log().clone();
        let entries = reader
            .try_get_log_entries(..=last)
            .await
            .map_err(|e| format!("node {}: reading its log: {e}", node.id()))?;
        for entry in entries {
            let Some(want) = witness.get(&entry.log_id.index) else {
                return Err(format!(
                    "node {}'s log holds {} {}, which no node applied",
                    node.id(),
                    entry.log_id,
                    entry.payload
                ));
            };
            if &entry != want {
                return Err(format!(
                    "node {}'s log holds {} {} at index {}; the committed entry is {} {}",
                    node.id(),
                    entry.log_id,
                    entry.payload,
                    entry.log_id.index,
                    want.log_id,
                    want.payload
                ));
            }
        }
    }
    Ok(log)
}

/// Waits until every node applied the whole log, then checks the history and the volumes.
async fn check(sim: &Sim, report: &mut SimReport) -> Result<(), String> {
    let nodes = sim.live();
    let last = converge(sim, &nodes).await?;
    sim.observe()?;
    let reference_log = committed_log(sim, &nodes, last).await?;
    // The reference: the log's commands applied in order to a fresh engine.
    let (reference, _) = smlog_recovery::open_device(Arc::new(SimDevice::new(0)), engine_options())
        .map_err(|e| e.to_string())?;
    let mut results: BTreeMap<RequestKey, Vec<(u64, Reply)>> = BTreeMap::new();
    for entry in &reference_log {
        if let EntryPayload::Normal(command) = &entry.payload {
            let id = EntryId {
                term: entry.log_id.leader_id.term,
                index: entry.log_id.index,
            };
            let reply = apply_command(&reference, command, id).map_err(|e| e.to_string())?;
            if let Some(key) = command.key {
                results.entry(key).or_default().push((id.index, reply));
            }
            report.entries_checked += 1;
        }
    }
    check_history(sim, &results, report)?;
    let want = tree_of(&reference).map_err(|e| e.to_string())?;
    for node in &nodes {
        same_volume(node.id(), &node.engine(), &reference, &want)?;
    }
    report.terms_with_leader = sim.leaders.lock().unwrap_or_else(|e| e.into_inner()).len() as u64;
    report.snapshots_installed = sim
        .witness
        .installs
        .load(std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// Every acknowledged operation is in the log with the reply it got, in real-time order.
fn check_history(
    sim: &Sim,
    results: &BTreeMap<RequestKey, Vec<(u64, Reply)>>,
    report: &mut SimReport,
) -> Result<(), String> {
    let history = sim
        .history
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    report.ops = history.len() as u64;
    let mut placed: Vec<(Instant, Instant, u64)> = Vec::new();
    for op in &history {
        let Some((acked_at, reply)) = &op.acked else {
            report.unknown += 1;
            continue;
        };
        report.acknowledged += 1;
        let entries = results.get(&op.key).ok_or_else(|| {
            format!(
                "request {:?} was acknowledged ({reply:?}) but is not in the committed log",
                op.key
            )
        })?;
        let (index, _) = entries.iter().find(|(_, r)| r == reply).ok_or_else(|| {
            format!(
                "request {:?} was acknowledged with {reply:?}, the log gives {entries:?}",
                op.key
            )
        })?;
        placed.push((op.invoked, *acked_at, *index));
    }
    // An operation acknowledged before another was invoked comes first in the log.
    for op in &history {
        let Some(entries) = results.get(&op.key) else {
            continue;
        };
        let first = entries[0].0;
        if let Some((_, acked_at, index)) = placed
            .iter()
            .find(|(_, acked_at, index)| *acked_at < op.invoked && *index >= first)
        {
            return Err(format!(
                "request {:?} (first in the log at {first}) was invoked after an operation \
                 acknowledged at {acked_at:?} from entry {index}",
                op.key
            ));
        }
    }
    Ok(())
}

fn same_volume(
    id: u64,
    engine: &Engine<SimDevice>,
    reference: &Engine<SimDevice>,
    want: &smlog_recovery::harness::fs::Tree,
) -> Result<(), String> {
    let tree = tree_of(engine).map_err(|e| format!("node {id}: {e}"))?;
    if &tree != want {
        return Err(format!("node {id}'s tree is not the reference's"));
    }
    for path in want.keys() {
        let ino = |engine: &Engine<SimDevice>| engine.lookup(ROOT_INO, path).map(|s| s.ino).ok();
        if ino(engine) != ino(reference) {
            return Err(format!(
                "node {id}: {} has another inode number",
                String::from_utf8_lossy(path)
            ));
        }
    }
    if engine.meta().next_ino != reference.meta().next_ino {
        return Err(format!("node {id} allocated another number of inodes"));
    }
    let fsck = engine.fsck();
    if !fsck.is_clean() {
        return Err(format!("node {id}: fsck: {:?}", fsck.problems));
    }
    Ok(())
}

impl SimOptions {
    /// The `smlog torture --cluster` arguments that run `seed` with these options.
    pub fn replay_command(&self, seed: u64) -> String {
        format!(
            "smlog torture --cluster --seed {seed} --nodes {} --clients {} --ops {} \
             --nemesis {} --loss {} --reply-loss {} --delay-ms {}{}",
            self.nodes,
            self.clients,
            self.ops_per_client,
            self.nemesis_actions,
            self.faults.loss_percent,
            self.faults.reply_loss_percent,
            self.faults.delay_max.as_millis(),
            if self.plant_ack_before_durable {
                " --plant-ack-before-durable"
            } else {
                ""
            }
        )
    }

    /// Smaller versions of these options, one dimension at a time, smallest step first
    /// tried last: fewer nodes, clients, operations, nemesis actions; no message loss or
    /// delay.
    fn smaller(&self) -> Vec<SimOptions> {
        let mut candidates = Vec::new();
        let mut with = |change: &dyn Fn(&mut SimOptions)| {
            let mut candidate = self.clone();
            change(&mut candidate);
            if candidate != *self {
                candidates.push(candidate);
            }
        };
        with(&|o| o.nodes = 3);
        with(&|o| o.clients = (o.clients / 2).max(1));
        with(&|o| o.clients = o.clients.saturating_sub(1).max(1));
        with(&|o| o.ops_per_client = (o.ops_per_client / 2).max(1));
        with(&|o| o.ops_per_client = (o.ops_per_client * 3 / 4).max(1));
        with(&|o| o.nemesis_actions /= 2);
        with(&|o| o.nemesis_actions = o.nemesis_actions.saturating_sub(1));
        with(&|o| {
            o.faults.loss_percent = 0;
            o.faults.reply_loss_percent = 0;
        });
        with(&|o| o.faults.delay_max = Duration::ZERO);
        candidates
    }
}

/// What [`shrink`] found.
#[derive(Clone, Debug)]
pub struct Shrunk {
    /// The smallest options seen failing with the seed.
    pub options: SimOptions,
    /// How they failed (the last failure seen with them).
    pub failure: String,
    /// Simulations run while shrinking.
    pub runs: u64,
}

/// Shrinks a failure of `seed` under `options` (which failed with `failure`): tries smaller
/// options, one dimension at a time (fewer nodes, clients, operations per client, nemesis
/// actions; no loss; no delay), and keeps each that fails again, until none does or
/// `budget` is spent.
///
/// A seed fixes every choice the simulation makes (operations, the nemesis's schedule,
/// each message's fate), but nodes run on the machine's threads and timers, so a run of the
/// same seed and options may interleave differently and not fail again: each candidate is
/// run up to `tries` times, and what it reports are options it saw fail.
pub async fn shrink(
    seed: u64,
    options: &SimOptions,
    failure: String,
    tries: u32,
    budget: Duration,
) -> Shrunk {
    let started = Instant::now();
    let mut best = Shrunk {
        options: options.clone(),
        failure,
        runs: 0,
    };
    'smaller: loop {
        for candidate in best.options.smaller() {
            for _ in 0..tries {
                if started.elapsed() >= budget {
                    break 'smaller;
                }
                best.runs += 1;
                if let Err(why) = run(seed, &candidate).await {
                    best.options = candidate;
                    best.failure = why;
                    continue 'smaller;
                }
            }
        }
        break;
    }
    best
}
