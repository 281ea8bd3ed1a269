//! The load generator of `benches/compare.sh`: the same scenarios against edgelive, nchan and
//! Mosquitto on loopback, one JSON object per run on stdout. The server's processes are given
//! by pid so their CPU time and memory can be read from /proc; the generator reports its own
//! CPU time too, since it shares the machine's cores with the server.

mod adapter;
mod http1;
mod measure;
mod mqtt;
mod scenario;

use std::net::SocketAddr;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Load generator: edgelive vs Mosquitto vs nchan")]
struct Cli {
    /// Which server speaks at --addr.
    #[arg(long, value_enum)]
    target: adapter::Kind,
    #[arg(long)]
    addr: SocketAddr,
    /// A second node of the same deployment (edgelive with the Redis engine): every other
    /// subscriber connects there; publishers stay on --addr.
    #[arg(long)]
    spread_to: Option<SocketAddr>,
    /// The server's process ids (comma-separated; nginx: master and worker).
    #[arg(long, value_delimiter = ',', required = true)]
    pids: Vec<i32>,
    /// Worker threads of the generator's runtime.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Server RSS with no clients, then with each count of idle subscribers.
    Idle {
        #[arg(long, value_delimiter = ',', default_value = "100,1000")]
        counts: Vec<usize>,
    },
    /// 1 publisher → N subscribers on one channel at a fixed rate: latency and CPU.
    Fanout {
        #[arg(long, default_value_t = 100)]
        subs: usize,
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
        #[arg(long, default_value_t = 200)]
        size: usize,
    },
    /// The highest fan-out rate at which every message is delivered.
    Capacity {
        #[arg(long, default_value_t = 100)]
        subs: usize,
        #[arg(long, default_value_t = 1000.0)]
        from: f64,
        #[arg(long, default_value_t = 100_000.0)]
        max: f64,
        #[arg(long, default_value_t = 2.0)]
        secs: f64,
        #[arg(long, default_value_t = 200)]
        size: usize,
    },
    /// N subscribers on their own channels, publisher round-robin.
    Channels {
        #[arg(long, default_value_t = 1000)]
        subs: usize,
        #[arg(long, default_value_t = 10_000.0)]
        rate: f64,
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
        #[arg(long, default_value_t = 200)]
        size: usize,
    },
    /// Line-protocol points per second with one subscriber per measurement.
    Ingest {
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
        #[arg(long, default_value_t = 10)]
        measurements: usize,
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        #[arg(long, default_value_t = 2)]
        conns: usize,
    },
    /// Memory the server spends per byte of kept history.
    History {
        #[arg(long, default_value_t = 100)]
        channels: usize,
        #[arg(long, default_value_t = 1000)]
        per_channel: usize,
        #[arg(long, default_value_t = 200)]
        size: usize,
    },
}

fn main() {
    let cli = Cli::parse();
    measure::epoch();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads)
        .enable_all()
        .build()
        .expect("runtime");
    let ctx = scenario::Ctx {
        adapter: adapter::Adapter {
            kind: cli.target,
            addr: cli.addr,
            spread_to: cli.spread_to,
        },
        server: measure::Server { pids: cli.pids },
    };
    let result = rt.block_on(async {
        match cli.scenario {
            Scenario::Idle { counts } => scenario::idle(&ctx, &counts).await,
            Scenario::Fanout {
                subs,
                rate,
                secs,
                size,
            } => scenario::fanout(&ctx, subs, rate, secs, size).await,
            Scenario::Capacity {
                subs,
                from,
                max,
                secs,
                size,
            } => scenario::capacity(&ctx, subs, from, max, secs, size).await,
            Scenario::Channels {
                subs,
                rate,
                secs,
                size,
            } => scenario::channels(&ctx, subs, rate, secs, size).await,
            Scenario::Ingest {
                secs,
                measurements,
                batch,
                conns,
            } => scenario::ingest(&ctx, secs, measurements, batch, conns).await,
            Scenario::History {
                channels,
                per_channel,
                size,
            } => scenario::history(&ctx, channels, per_channel, size).await,
        }
    });
    match result {
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(1);
        }
    }
    // Connections and their tasks end with the process.
    rt.shutdown_background();
}
