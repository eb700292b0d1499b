//! Runs the fake cloud providers on loopback for tests in other languages and for benchmarks.
//! Prints `listening on 127.0.0.1:PORT` once ready.

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free one)
    #[arg(long, default_value_t = 0)]
    port: u16,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let fake = tollgate_tests::fake::FakeProvider::start_on(args.port).await;
    println!("listening on {}", fake.addr);
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    tokio::signal::ctrl_c().await.ok();
}
