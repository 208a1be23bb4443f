//! Serves one pool with carve's load-balancer data plane (the code `carve lb` runs) over
//! arbitrary backends, for `bench/lb.sh`: `lb_serve http|tcp LISTEN MEMBER...` (members as
//! addr:port, checked with TCP connects every second). With `LB_CHURN=SECS`, the last member
//! is held back and, SECS seconds in, joins while the first drains. Runs until killed.

use std::time::Duration;

use carve::lb::Balancer;
use carve::lb::spec::{Algorithm, Check, HealthSpec, MemberSpec, PoolSpec, Protocol};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: lb_serve http|tcp LISTEN MEMBER...";
    let protocol = match args.first().map(String::as_str) {
        Some("http") => Protocol::Http,
        Some("tcp") => Protocol::Tcp,
        _ => panic!("{usage}"),
    };
    let listen = args
        .get(1)
        .expect(usage)
        .parse()
        .expect("LISTEN is addr:port");
    let members = args[2..]
        .iter()
        .enumerate()
        .map(|(i, a)| MemberSpec {
            id: format!("m{i}"),
            addr: a.parse().expect("MEMBER is addr:port"),
            weight: 1,
        })
        .collect();
    let threads: usize = std::env::var("LB_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    // Traffic runs on the balancer's own threads; this runtime only checks health.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let (lb, mut transitions) = Balancer::with_threads(threads);
        let spec = PoolSpec {
            id: "bench".into(),
            protocol,
            listen,
            algorithm: Algorithm::RoundRobin,
            health: HealthSpec {
                check: Check::Tcp,
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                rise: 1,
                fall: 2,
            },
            drain_timeout: Duration::from_secs(10),
            sticky_cookie: None,
            proxy_v2: false,
            max_connections: 20_000,
            members,
        };
        let churn: Option<u64> = std::env::var("LB_CHURN").ok().and_then(|v| v.parse().ok());
        let mut first = spec.clone();
        if churn.is_some() {
            first.members.pop();
        }
        let failed = lb.apply(std::slice::from_ref(&first)).await;
        assert!(failed.is_empty(), "{failed:?}");
        if let Some(secs) = churn {
            let lb = lb.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                let mut next = spec.clone();
                next.members.remove(0);
                lb.apply(std::slice::from_ref(&next)).await;
                eprintln!(
                    "churn: {} joins, {} drains",
                    spec.members.last().map_or("", |m| &m.id),
                    spec.members[0].id
                );
            });
        }
        while let Some(t) = transitions.recv().await {
            eprintln!("{} {} -> {}", t.member, t.from.as_str(), t.to.as_str());
        }
    });
}
