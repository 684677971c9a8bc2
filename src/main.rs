//! The `lightpath` command: parses the command line and runs one of the library's entry points.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use lightpath::id::NodeId;
use lightpath::telemetry::{init_logging, LogFormat};

/// A node's allocator. Under viewer churn glibc's malloc kept freed memory in pieces between blocks still in
/// use, so the RSS of a node whose live heap had levelled off went on growing (BENCHMARKS, "Soak"); jemalloc
/// with background threads returns freed pages to the system, as they stay unused, without waiting for the
/// next allocation.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main`: pages freed and left unused go back to the system within about a
/// second (the default, ten seconds, held a drained backlog that long). `_RJEM_MALLOC_CONF` in the
/// environment overrides them.
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: Option<&'static std::ffi::c_char> =
    Some(unsafe { &*c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr() });

#[derive(Parser)]
#[command(name = "lightpath", version, about = "Live-video CDN relay overlay over a QUIC mesh")]
struct Cli {
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole demo mesh in this process, with a built-in live stream.
    Demo {
        /// The topology to run.
        #[arg(long, default_value = "topology/demo.toml")]
        topology: PathBuf,
        /// Where the demo's director listens (its URL is printed first).
        #[arg(long, default_value = "127.0.0.1:48090")]
        director: std::net::SocketAddr,
    },
    /// Run one mesh node.
    Node {
        /// The node's config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run one control-plane replica.
    Control {
        /// The replica's config file (naming a [[controls]] entry of the topology; a node's sections are ignored).
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a simulation scenario (simulations/*.toml) and print its summary.
    Sim {
        /// The scenario file.
        scenario: PathBuf,
        /// The RNG seed, instead of the scenario's.
        #[arg(long)]
        seed: Option<u64>,
        /// Also write DIR/summary.json.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Threads to run on (default: one per processor); the outcome is the same on any number.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
        threads: Option<u16>,
    },
    /// The mesh certificate authority.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Validate a file and explain every error.
    #[command(subcommand)]
    Check(CheckCommand),
    /// Topology files.
    #[command(subcommand)]
    Topology(TopologyCommand),
}

#[derive(Subcommand)]
enum TopologyCommand {
    /// Turn a GraphML file (Internet Topology Zoo style: nodes with Latitude and Longitude) into a topology
    /// file whose link latencies are great-circle distances in fibre (200 km per ms) times an inflation.
    Import {
        /// The GraphML file.
        file: PathBuf,
        /// Where to write the topology (default: standard output).
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Fibre path length over the great circle, from 1 to 10.
        #[arg(long, default_value_t = lightpath::topology::graphml::DEFAULT_INFLATION)]
        inflation: f64,
        /// A node with the origin role, by GraphML id or label (repeat for more; default: the node with the
        /// most links).
        #[arg(long)]
        origin: Vec<String>,
        /// Leave nodes without coordinates out, with their edges, instead of refusing the file.
        #[arg(long)]
        skip_unplaced: bool,
        /// Import only the largest connected part of a graph in several parts.
        #[arg(long)]
        keep_largest: bool,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create a new CA (ca.pem, ca.key) in DIR.
    Init {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue a certificate for a node: writes NODE.pem and NODE.key.
    Issue {
        /// The CA's folder.
        #[arg(long)]
        dir: PathBuf,
        /// The node id the certificate names.
        #[arg(long)]
        node: NodeId,
        /// Where to write the files (default: the CA's folder).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Validity in days.
        #[arg(long, default_value_t = 397)]
        days: i64,
    },
}

#[derive(Subcommand)]
enum CheckCommand {
    /// A topology file.
    Topology { file: PathBuf },
    /// A node's or a control replica's config file (and the topology it names).
    Config { file: PathBuf },
}

fn main() -> ExitCode {
    lightpath::telemetry::heap_is_jemalloc();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Check(what) => {
            let checked = match &what {
                CheckCommand::Topology { file } => lightpath::topology::check_topology(file),
                CheckCommand::Config { file } => lightpath::config::check_config(file),
            };
            match checked {
                Ok(summary) => {
                    println!("{summary}");
                    Ok(())
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    anyhow::bail!("{} error(s) in {}", errors.errors.len(), errors.file)
                }
            }
        }
        Command::Topology(TopologyCommand::Import { file, out, inflation, origin, skip_unplaced, keep_largest }) => {
            let xml = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let options =
                lightpath::topology::graphml::ImportOptions { inflation, origins: origin, skip_unplaced, keep_largest };
            let source = file.file_name().map_or_else(|| file.display().to_string(), |n| n.to_string_lossy().into_owned());
            let imported = lightpath::topology::graphml::import(&xml, &source, &options)
                .with_context(|| format!("importing {}", file.display()))?;
            for warning in &imported.warnings {
                eprintln!("warning: {}: {warning}", file.display());
            }
            match &out {
                Some(path) => {
                    std::fs::write(path, &imported.text).with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("wrote {} ({})", path.display(), imported.topology.summary());
                }
                None => print!("{}", imported.text),
            }
            Ok(())
        }
        Command::Ca(CaCommand::Init { dir }) => {
            lightpath::ca::init_dir(&dir)?;
            println!("created the mesh CA in {}", dir.display());
            Ok(())
        }
        Command::Ca(CaCommand::Issue { dir, node, out, days }) => {
            let (cert, key) = lightpath::ca::issue_into(&dir, &node, out.as_ref().unwrap_or(&dir), days)?;
            println!("issued {} and {}", cert.display(), key.display());
            Ok(())
        }
        Command::Node { config } => runtime()?.block_on(async {
            let (cfg, topology) = lightpath::config::NodeConfig::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            lightpath::config::check_certificates(&config, &cfg.tls, &cfg.node).map_err(|e| anyhow::anyhow!("{e}"))?;
            let listeners = lightpath::listen::Listeners::bind(cfg.mesh_bind(&topology), cfg.http_bind(&topology)).await?;
            let params = lightpath::node::NodeParams::from_config(cfg, topology)?;
            lightpath::node::run(params, listeners, ctrl_c()).await
        }),
        Command::Control { config } => runtime()?.block_on(async {
            let (cfg, topology) =
                lightpath::config::ControlConfig::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            lightpath::config::check_certificates(&config, &cfg.tls, &cfg.node).map_err(|e| anyhow::anyhow!("{e}"))?;
            if !cfg.ignored.is_empty() {
                tracing::warn!(config = %config.display(), sections = ?cfg.ignored, "node sections ignored by a control replica");
            }
            let listeners = lightpath::listen::Listeners::bind(cfg.mesh_bind(&topology), cfg.http_bind(&topology)).await?;
            let identity = lightpath::ca::Identity::load(&cfg.tls.ca, &cfg.tls.cert, &cfg.tls.key)?;
            {
                let director = match cfg.director.enabled() {
                    true => Some(lightpath::director::DirectorOptions::bind(cfg.director, cfg.http.clone()).await?),
                    false => None,
                };
                let options = lightpath::control::ReplicaOptions {
                    admin: cfg.admin,
                    http: cfg.http,
                    quic: cfg.quic,
                    director,
                    dashboard: cfg.dashboard,
                };
                lightpath::control::run(cfg.node, std::sync::Arc::new(topology), identity, listeners, options, ctrl_c()).await
            }
        }),
        Command::Sim { scenario, seed, out, threads } => {
            let mut bar = ProgressBar::new();
            let threads = threads.map_or_else(lightpath::sim::default_threads, usize::from);
            let mut progress = |now, end| bar.show(now, end);
            let summary = lightpath::sim::run_file(&scenario, seed, threads, out.as_deref(), Some(&mut progress));
            bar.finish();
            let summary = summary?;
            print!("{}", summary.table());
            Ok(())
        }
        Command::Demo { topology, director } => {
            runtime()?.block_on(lightpath::demo::run(topology, director, ctrl_c()))
        }
    }
}

/// A progress bar on stderr for simulations, shown once a run has lasted two seconds of wall time and only
/// when stderr is a terminal.
struct ProgressBar {
    started: std::time::Instant,
    shown: bool,
    tty: bool,
}

impl ProgressBar {
    fn new() -> Self {
        use std::io::IsTerminal;
        Self { started: std::time::Instant::now(), shown: false, tty: std::io::stderr().is_terminal() }
    }

    fn show(&mut self, now_us: u64, end_us: u64) {
        let elapsed = self.started.elapsed();
        if !self.tty || elapsed < std::time::Duration::from_secs(2) {
            return;
        }
        const WIDTH: u64 = 40;
        let done = (now_us.min(end_us) * WIDTH / end_us.max(1)) as usize;
        let fraction = now_us as f64 / end_us.max(1) as f64;
        let left = elapsed.as_secs_f64() * (1.0 - fraction) / fraction.max(1e-9);
        eprint!(
            "\r[{}{}] {:>5.1}% simulated {:.0} of {:.0} s, {:.0} s left ",
            "#".repeat(done),
            ".".repeat(WIDTH as usize - done),
            100.0 * fraction,
            now_us as f64 / 1e6,
            end_us as f64 / 1e6,
            left
        );
        self.shown = true;
    }

    fn finish(&self) {
        if self.shown {
            eprintln!();
        }
    }
}

/// The runtime of the long-running commands (node, control replica, demo), which first make freed memory go
/// back to the system (see [`return_freed_memory`]).
fn runtime() -> Result<tokio::runtime::Runtime> {
    return_freed_memory();
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")
}

/// Bodies of live objects (segments of hundreds of KiB to MiB) come and go all the time. glibc serves a block
/// that large from its own mapping and unmaps it when freed, but only up to a threshold that it raises to the
/// size of every such block freed, after which the same sizes come from heaps it keeps: a node that relayed a
/// burst then held its peak (an origin stayed at 1.7 GiB after a 2 GiB backlog had drained). A threshold set
/// once (128 KiB, glibc's own starting value) stops that, so memory follows the live window; small
/// allocations are unaffected. Measured in BENCHMARKS.md ("Memory under a backlog").
#[allow(unsafe_code)]
fn return_freed_memory() {
    const MMAP_THRESHOLD: libc::c_int = 128 * 1024;
    // SAFETY: mallopt only sets a malloc parameter; called before the runtime's threads start. It returns 0
    // when the parameter is refused, and then allocation simply goes on as before.
    let set = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
    if set == 0 {
        tracing::debug!("malloc refused an mmap threshold; freed memory may stay with the process");
    }
}

async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("stopping");
}
