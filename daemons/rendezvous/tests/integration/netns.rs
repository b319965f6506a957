//! NAT simulation: peers in network namespaces behind iptables NATs of several kinds, the
//! rendezvous daemon on a shared "internet" bridge. Every pair must connect (directly where
//! the NATs allow it, else through the relay); prints the matrix.
//!
//! Needs root, `ip` (iproute2) and `iptables`; skips with a message where namespaces cannot be
//! made. Uses only addresses inside the namespaces it creates (10.200.0.0/16), and deletes
//! them (and stops the processes it started) even when it fails.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const DAEMON: &str = env!("CARGO_BIN_EXE_sonm-rendezvous");
const PROBE: &str = env!("CARGO_BIN_EXE_sonm-rv-probe");
const SERVER_IP: &str = "10.200.0.1";
const SERVER: &str = "10.200.0.1:7666";
const WORKER_PORT: u16 = 4000;
/// A probe that takes longer is stuck; the test fails rather than hangs.
const PROBE_LIMIT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nat {
    /// On the bridge, no NAT.
    Public,
    /// SNAT to the router's address keeping ports, and every inbound UDP forwarded to the host.
    FullCone,
    /// SNAT keeping ports; inbound UDP reaches the host only from an IP it has sent to (any
    /// port), emulated with the `recent` match.
    AddressRestricted,
    /// MASQUERADE: ports kept (endpoint-independent mapping), replies only from where we sent
    /// (address- and port-dependent filtering).
    PortRestricted,
    /// MASQUERADE --random: a fresh port per destination.
    Symmetric,
}

/// Namespaces and processes of one run; dropping it stops and deletes everything.
struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    next_site: u8,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A host where probes run.
#[derive(Debug, Clone)]
struct Host {
    ns: String,
    ip: String,
}

/// A NAT router with its LAN, or a public host's attachment.
#[derive(Debug)]
struct Site {
    nat: Nat,
    index: u8,
    router_ns: Option<String>,
    hosts: Vec<Host>,
}

impl Lab {
    fn new() -> Result<Self, String> {
        let lab = Self {
            prefix: format!("rv{}", std::process::id()),
            namespaces: Vec::new(),
            children: Vec::new(),
            next_site: 1,
        };
        Ok(lab)
    }

    fn netns(&mut self, name: &str) -> Result<String, String> {
        let ns = format!("{}{name}", self.prefix);
        run(&["ip", "netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn inet(&self) -> String {
        format!("{}inet", self.prefix)
    }

    fn build_inet(&mut self) -> Result<(), String> {
        let inet = self.netns("inet")?;
        run(&[
            "ip", "-n", &inet, "link", "add", "name", "br0", "type", "bridge",
        ])?;
        run(&[
            "ip",
            "-n",
            &inet,
            "addr",
            "add",
            &format!("{SERVER_IP}/16"),
            "dev",
            "br0",
        ])?;
        run(&["ip", "-n", &inet, "link", "set", "br0", "up"])?;
        Ok(())
    }

    /// Plugs `ns`'s new interface `name` into the internet bridge with address `ip`.
    fn attach(&mut self, ns: &str, name: &str, ip: &str, index: u8) -> Result<(), String> {
        let inet = self.inet();
        let port = format!("p{index}");
        run(&[
            "ip", "-n", &inet, "link", "add", "name", &port, "type", "veth", "peer", "name", name,
            "netns", ns,
        ])?;
        run(&[
            "ip", "-n", &inet, "link", "set", &port, "master", "br0", "up",
        ])?;
        run(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{ip}/16"),
            "dev",
            name,
        ])?;
        run(&["ip", "-n", ns, "link", "set", name, "up"])?;
        Ok(())
    }

    fn site(&mut self, nat: Nat, hosts: u8) -> Result<Site, String> {
        let index = self.next_site;
        self.next_site += 1;
        let wan_ip = format!("10.200.1.{index}");
        if nat == Nat::Public {
            let ns = self.netns(&format!("h{index}"))?;
            self.attach(&ns, "eth0", &wan_ip, index)?;
            return Ok(Site {
                nat,
                index,
                router_ns: None,
                hosts: vec![Host { ns, ip: wan_ip }],
            });
        }
        let router = self.netns(&format!("n{index}"))?;
        self.attach(&router, "wan", &wan_ip, index)?;
        let lan_gw = format!("10.201.{index}.1");
        run(&[
            "ip", "-n", &router, "link", "add", "name", "lan", "type", "bridge",
        ])?;
        run(&[
            "ip",
            "-n",
            &router,
            "addr",
            "add",
            &format!("{lan_gw}/24"),
            "dev",
            "lan",
        ])?;
        run(&["ip", "-n", &router, "link", "set", "lan", "up"])?;
        let mut out = Vec::new();
        for j in 1..=hosts {
            let ns = self.netns(&format!("h{index}x{j}"))?;
            let ip = format!("10.201.{index}.{}", 10 + j);
            let port = format!("l{j}");
            run(&[
                "ip", "-n", &router, "link", "add", "name", &port, "type", "veth", "peer", "name",
                "eth0", "netns", &ns,
            ])?;
            run(&[
                "ip", "-n", &router, "link", "set", &port, "master", "lan", "up",
            ])?;
            run(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "eth0",
            ])?;
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            run(&["ip", "-n", &ns, "route", "add", "default", "via", &lan_gw])?;
            out.push(Host { ns, ip });
        }
        let ipt = |rule: &[&str]| -> Result<(), String> {
            let mut args = vec!["ip", "netns", "exec", &router, "iptables"];
            args.extend_from_slice(rule);
            run(&args)
        };
        run(&[
            "ip",
            "netns",
            "exec",
            &router,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])?;
        // Nothing listens on the router: dropping unsolicited UDP there also keeps conntrack
        // from recording it (a recorded inbound flow could steal the port a punch needs).
        ipt(&["-A", "INPUT", "-i", "wan", "-p", "udp", "-j", "DROP"])?;
        match nat {
            Nat::FullCone => {
                ipt(&[
                    "-t",
                    "nat",
                    "-A",
                    "POSTROUTING",
                    "-o",
                    "wan",
                    "-j",
                    "SNAT",
                    "--to-source",
                    &wan_ip,
                ])?;
                ipt(&[
                    "-t",
                    "nat",
                    "-A",
                    "PREROUTING",
                    "-i",
                    "wan",
                    "-p",
                    "udp",
                    "-j",
                    "DNAT",
                    "--to-destination",
                    &out[0].ip,
                ])?;
            }
            Nat::AddressRestricted => {
                let recent = format!("{}seen", self.prefix);
                ipt(&[
                    "-t",
                    "nat",
                    "-A",
                    "POSTROUTING",
                    "-o",
                    "wan",
                    "-j",
                    "SNAT",
                    "--to-source",
                    &wan_ip,
                ])?;
                ipt(&[
                    "-t",
                    "mangle",
                    "-A",
                    "POSTROUTING",
                    "-o",
                    "wan",
                    "-m",
                    "recent",
                    "--set",
                    "--name",
                    &recent,
                    "--rdest",
                ])?;
                ipt(&[
                    "-t",
                    "nat",
                    "-A",
                    "PREROUTING",
                    "-i",
                    "wan",
                    "-p",
                    "udp",
                    "-m",
                    "recent",
                    "--rcheck",
                    "--name",
                    &recent,
                    "--rsource",
                    "-j",
                    "DNAT",
                    "--to-destination",
                    &out[0].ip,
                ])?;
            }
            Nat::PortRestricted => {
                ipt(&[
                    "-t",
                    "nat",
                    "-A",
                    "POSTROUTING",
                    "-o",
                    "wan",
                    "-j",
                    "MASQUERADE",
                ])?;
            }
            Nat::Symmetric => {
                ipt(&[
                    "-t",
                    "nat",
                    "-A",
                    "POSTROUTING",
                    "-o",
                    "wan",
                    "-j",
                    "MASQUERADE",
                    "--random",
                ])?;
            }
            Nat::Public => unreachable!(),
        }
        Ok(Site {
            nat,
            index,
            router_ns: Some(router),
            hosts: out,
        })
    }

    fn spawn(
        &mut self,
        ns: &str,
        program: &str,
        args: &[&str],
        stdout: Stdio,
    ) -> Result<usize, String> {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .stdout(stdout)
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawning {program}: {e}"))?;
        self.children.push(child);
        Ok(self.children.len() - 1)
    }

    /// Starts a worker probe on `host`; returns its Ethereum address.
    fn worker(&mut self, host: &Host, server_address: &str) -> Result<String, String> {
        let listen = format!("0.0.0.0:{WORKER_PORT}");
        let private = format!("{}:{WORKER_PORT}", host.ip);
        let i = self.spawn(
            &host.ns,
            PROBE,
            &[
                "--server",
                SERVER,
                "--server-address",
                server_address,
                "--listen",
                &listen,
                "worker",
                "--private",
                &private,
            ],
            Stdio::piped(),
        )?;
        let stdout = self.children[i].stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(PROBE_LIMIT)
            .map_err(|_| format!("worker in {} never became ready", host.ns))?;
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("ready"), Some(address)) => Ok(address.to_string()),
            _ => Err(format!("worker in {} said {line:?}", host.ns)),
        }
    }
}

/// Runs a connect probe; returns (path, address, ms) or why it failed.
fn connect(
    host: &Host,
    server_address: &str,
    worker: &str,
) -> Result<(String, String, u64), String> {
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &host.ns,
            PROBE,
            "--server",
            SERVER,
            "--server-address",
            server_address,
            "connect",
            "--worker",
            worker,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    // Bounded wait: a stuck probe is killed (it is our own child).
    loop {
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            break;
        }
        if started.elapsed() > PROBE_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            return Err("probe timed out".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok((
        v["path"].as_str().unwrap_or("?").to_string(),
        v["via"].as_str().unwrap_or("?").to_string(),
        v["ms"].as_u64().unwrap_or(0),
    ))
}

fn available() -> Result<(), String> {
    run(&["iptables", "--version"]).map_err(|e| format!("iptables unavailable ({e})"))?;
    let probe = format!("rvprobe{}", std::process::id());
    run(&["ip", "netns", "add", &probe])
        .map_err(|e| format!("cannot create a network namespace ({e})"))?;
    let _ = run(&["ip", "netns", "del", &probe]);
    Ok(())
}

#[test]
fn every_pair_connects_through_simulated_nats() {
    if let Err(why) = available() {
        println!("SKIPPED NAT simulation: {why}; it needs root, iproute2 and iptables");
        return;
    }
    let mut lab = Lab::new().unwrap();
    let result = matrix(&mut lab);
    drop(lab);
    let rows = result.unwrap();
    println!("\nNAT traversal matrix (customer -> worker: path, time to connect)");
    let mut failures = Vec::new();
    for (name, expect, outcome) in &rows {
        match outcome {
            Ok((path, via, ms)) => {
                println!("  {name:<44} {path:<7} {ms:>5} ms  via {via}");
                if let Some(expect) = expect
                    && path != expect
                {
                    failures.push(format!("{name}: {path}, expected {expect}"));
                }
            }
            Err(e) => {
                println!("  {name:<44} FAILED  {e}");
                failures.push(format!("{name}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

type Row = (
    String,
    Option<&'static str>,
    Result<(String, String, u64), String>,
);

fn matrix(lab: &mut Lab) -> Result<Vec<Row>, String> {
    lab.build_inet()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    // A known key, so that the probes pin the server's address.
    let secret = [7u8; 32];
    let key = sonm_net::EthKey::from_bytes(&secret).map_err(|e| e.to_string())?;
    let server_address = key.address().to_string();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, alloy_primitives::hex::encode(secret)).map_err(|e| e.to_string())?;
    let config = dir.path().join("rendezvous.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{SERVER}\"\nrelay_ip = \"{SERVER_IP}\"\nkey_file = \"{}\"\nlog_level = \"warn\"\n",
            key_file.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let inet = lab.inet();
    let config_arg = config.display().to_string();
    lab.spawn(&inet, DAEMON, &["--config", &config_arg], Stdio::null())?;

    let full_a = lab.site(Nat::FullCone, 1)?;
    let full_b = lab.site(Nat::FullCone, 1)?;
    let port_a = lab.site(Nat::PortRestricted, 1)?;
    let port_b = lab.site(Nat::PortRestricted, 2)?;
    let sym_a = lab.site(Nat::Symmetric, 1)?;
    let sym_b = lab.site(Nat::Symmetric, 1)?;
    let public = lab.site(Nat::Public, 1)?;
    let addr_a = lab.site(Nat::AddressRestricted, 1)?;
    let addr_b = lab.site(Nat::AddressRestricted, 1)?;

    // The daemon starts in well under a second; retry the first worker until it is up.
    let started = Instant::now();
    let full_w = loop {
        match lab.worker(&full_b.hosts[0], &server_address) {
            Ok(w) => break w,
            Err(e) if started.elapsed() > Duration::from_secs(10) => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let port_w = lab.worker(&port_b.hosts[0], &server_address)?;
    let sym_w = lab.worker(&sym_b.hosts[0], &server_address)?;
    let addr_w = lab.worker(&addr_b.hosts[0], &server_address)?;

    // (customer site, its host, worker site, worker address, expected path where the NATs
    // decide it alone)
    let pairs: Vec<(&Site, usize, &Site, &str, Option<&'static str>)> = vec![
        (&full_a, 0, &full_b, &full_w, Some("direct")),
        (&port_a, 0, &port_b, &port_w, None),
        (&public, 0, &port_b, &port_w, None),
        (&sym_a, 0, &full_b, &full_w, Some("direct")),
        (&port_b, 1, &port_b, &port_w, Some("direct")),
        (&port_a, 0, &sym_b, &sym_w, Some("relay")),
        (&sym_a, 0, &sym_b, &sym_w, Some("relay")),
        (&public, 0, &sym_b, &sym_w, Some("relay")),
        (&addr_a, 0, &addr_b, &addr_w, None),
        // The worker's punch opens its NAT to the customer's IP, whatever port the symmetric
        // NAT picks for the handshake.
        (&sym_a, 0, &addr_b, &addr_w, None),
        (&addr_a, 0, &sym_b, &sym_w, Some("relay")),
    ];
    let name = |s: &Site| format!("{:?}#{}", s.nat, s.index);
    let outcomes: Vec<Row> = std::thread::scope(|scope| {
        let handles: Vec<_> = pairs
            .iter()
            .map(|(cs, ch, ws, w, expect)| {
                let host = cs.hosts[*ch].clone();
                let label = if std::ptr::eq(*cs, *ws) {
                    format!("{} -> same LAN", name(cs))
                } else {
                    format!("{} -> {}", name(cs), name(ws))
                };
                let server_address = server_address.clone();
                let w = w.to_string();
                let expect = *expect;
                scope.spawn(move || (label, expect, connect(&host, &server_address, &w)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let _ = (&full_a.router_ns, &public.router_ns);
    Ok(outcomes)
}
