//! `tollgate-echo-upstream [--port 8000] [--host 127.0.0.1]`: answers every
//! request 200 with a JSON echo of method, path, query and headers.
//! Used by the README demo.

use std::net::{IpAddr, SocketAddr};

use tollgate_testkit::MockUpstream;

fn usage() -> ! {
    eprintln!("usage: tollgate-echo-upstream [--port PORT] [--host ADDR]");
    std::process::exit(2);
}

fn parse_args() -> SocketAddr {
    let mut port: u16 = 8000;
    let mut host: IpAddr = IpAddr::from([127, 0, 0, 1]);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .unwrap_or_else(|| usage())
        };
        match key.as_str() {
            "--port" | "-p" => port = value().parse().unwrap_or_else(|_| usage()),
            "--host" => host = value().parse().unwrap_or_else(|_| usage()),
            "--help" | "-h" => usage(),
            _ => usage(),
        }
    }
    SocketAddr::new(host, port)
}

#[tokio::main]
async fn main() {
    let addr = parse_args();
    let up = MockUpstream::start_on(addr).await;
    eprintln!("tollgate-echo-upstream listening on http://{}", up.addr());
    // Serve until killed.
    std::future::pending::<()>().await;
}
