//! Real `flotilla master` processes on loopback, for multi-process tests and benchmarks: a
//! fresh cluster CA and certificates, one configuration file and data directory per master,
//! and processes that can be killed (SIGKILL) and restarted under the same identity. Masters
//! prepared later with [`LocalCluster::add_master`] start with `join = true`, to be added to
//! the running cluster with `flotilla members add` ([`LocalCluster::cli`]).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};
use flotilla_transport::Role;

use crate::client::ClusterClient;
use crate::pki;

/// The operator identity the cluster's clients use.
pub const OPERATOR: &str = "operator";

/// A cluster of master processes.
pub struct LocalCluster {
    binary: PathBuf,
    dir: PathBuf,
    masters: Vec<(String, SocketAddr)>,
    /// Whether each master starts with `join = true` (prepared after the cluster was created).
    joining: Vec<bool>,
    children: Vec<Option<Child>>,
    /// Each running master's HTTP API address (from its `api:` line).
    apis: Vec<Option<SocketAddr>>,
    /// Extra `[raft]` lines for every configuration.
    raft: String,
    /// Agents: id, transport address, and the `[agent]` lines of its configuration.
    agents: Vec<(String, SocketAddr, String)>,
    agent_children: Vec<Option<Child>>,
}

impl LocalCluster {
    /// Prepares (does not start) `count` masters under `dir`, which must not exist yet or be
    /// empty. `binary` is the `flotilla` executable.
    pub fn prepare(binary: &Path, dir: &Path, count: usize, raft: &str) -> anyhow::Result<LocalCluster> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let pki_dir = dir.join("pki");
        pki::init_ca(&pki_dir, "local", true)?;
        pki::issue(&pki_dir, OPERATOR, Role::Operator, &pki_dir, true)?;
        let mut masters = Vec::new();
        for i in 1..=count {
            let id = format!("m{i}");
            pki::issue(&pki_dir, &id, Role::Master, &pki_dir, true)?;
            masters.push((id, free_udp_port()?));
        }
        let children = masters.iter().map(|_| None).collect();
        let apis = vec![None; masters.len()];
        let joining = vec![false; masters.len()];
        Ok(LocalCluster {
            binary: binary.to_owned(),
            dir: dir.to_owned(),
            masters,
            joining,
            children,
            apis,
            raft: raft.to_owned(),
            agents: Vec::new(),
            agent_children: Vec::new(),
        })
    }

    /// Prepares (does not start) one more agent, `a<n>`, whose configuration's `[agent]`
    /// section holds `agent` (its cgroups live under its own root). Returns its index.
    pub fn add_agent(&mut self, agent: &str) -> anyhow::Result<usize> {
        let id = format!("a{}", self.agents.len() + 1);
        pki::issue(&self.pki_dir(), &id, Role::Agent, &self.pki_dir(), true)?;
        let section = format!("cgroup_root = \"flotilla-test-{}-{id}\"\n{agent}", std::process::id());
        self.agents.push((id, free_udp_port()?, section));
        self.agent_children.push(None);
        Ok(self.agents.len() - 1)
    }

    fn agent_config(&self, index: usize) -> String {
        let (id, address, section) = &self.agents[index];
        let mut text = format!(
            "[node]\nid = \"{id}\"\ndata_dir = \"{}\"\nlisten = \"{address}\"\npki_dir = \"{}\"\n",
            self.dir.join(id).display(),
            self.pki_dir().display()
        );
        for (master, address) in &self.masters {
            text.push_str(&format!("\n[[masters]]\nid = \"{master}\"\naddress = \"{address}\"\n"));
        }
        text.push_str(&format!("\n[agent]\n{section}\n"));
        // Agents of one host would all want the DNS port and the VIP addresses: a test of
        // discovery turns them on for the agent it needs.
        text.push_str("\n[dns]\nenabled = false\n\n[l4lb]\nenabled = false\n");
        text
    }

    /// Starts agent `index` and waits (at most `bound`) until it reports ready.
    pub fn start_agent(&mut self, index: usize, bound: Duration) -> anyhow::Result<()> {
        let id = self.agents[index].0.clone();
        let config = self.dir.join(format!("{id}.toml"));
        std::fs::write(&config, self.agent_config(index)).with_context(|| format!("writing {}", config.display()))?;
        self.agent_children[index] = Some(self.spawn_ready("agent", &config, bound)?.0);
        Ok(())
    }

    /// SIGKILL an agent (its tasks keep running), then reap it.
    pub fn kill_agent(&mut self, index: usize) {
        if let Some(mut child) = self.agent_children[index].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `flotilla <role> --config <config>` and waits until it prints
    /// `flotilla <role>: ready`; returns the process and the lines it printed before.
    fn spawn_ready(&self, role: &str, config: &Path, bound: Duration) -> anyhow::Result<(Child, Vec<String>)> {
        let mut child = Command::new(&self.binary)
            .arg(role)
            .arg("--config")
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let stdout = child.stdout.take().context("the child's stdout")?;
        let (ready_tx, ready) = mpsc::channel();
        let prefix = format!("flotilla {role}: ready");
        std::thread::spawn(move || {
            let mut before = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with(&prefix) {
                    let _ = ready_tx.send(std::mem::take(&mut before));
                } else {
                    before.push(line);
                }
            }
        });
        match ready.recv_timeout(bound) {
            Ok(lines) => Ok((child, lines)),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{role} {} did not report ready within {bound:?}", config.display());
            }
        }
    }

    /// Prepares (does not start) one more master, `m<n>`: its certificate, a free port, and a
    /// configuration with `join = true` that lists every master. Returns its index; start it
    /// with [`LocalCluster::start`], then add it with `flotilla members add`.
    pub fn add_master(&mut self) -> anyhow::Result<usize> {
        let id = format!("m{}", self.masters.len() + 1);
        pki::issue(&self.pki_dir(), &id, Role::Master, &self.pki_dir(), true)?;
        self.masters.push((id, free_udp_port()?));
        self.joining.push(true);
        self.children.push(None);
        self.apis.push(None);
        Ok(self.masters.len() - 1)
    }

    /// A `flotilla <command>` process as the operator, connected to every master (for
    /// `registry` and `members`); add the subcommand's arguments and run it.
    pub fn cli(&self, command: &str) -> Command {
        let mut cli = Command::new(&self.binary);
        cli.arg(command).arg("--pki-dir").arg(self.pki_dir()).arg("--as").arg(OPERATOR);
        for (id, address) in &self.masters {
            cli.arg("--master").arg(format!("{id}={address}"));
        }
        cli
    }

    pub fn masters(&self) -> &[(String, SocketAddr)] {
        &self.masters
    }

    pub fn pki_dir(&self) -> PathBuf {
        self.dir.join("pki")
    }

    fn config(&self, index: usize) -> String {
        let (id, address) = &self.masters[index];
        let mut text = format!(
            "[node]\nid = \"{id}\"\ndata_dir = \"{}\"\nlisten = \"{address}\"\npki_dir = \"{}\"\n",
            self.dir.join(id).display(),
            self.pki_dir().display()
        );
        if self.joining[index] {
            text.push_str("join = true\n");
        }
        // Every master on a free port; pings every second so tests see unreachable agents soon.
        text.push_str("\n[api]\nlisten = \"127.0.0.1:0\"\n\n[cluster]\nagent_ping_interval_secs = 1\nmax_agent_ping_timeouts = 3\n");
        for (peer, address) in &self.masters {
            text.push_str(&format!("\n[[masters]]\nid = \"{peer}\"\naddress = \"{address}\"\n"));
        }
        if !self.raft.is_empty() {
            text.push_str(&format!("\n[raft]\n{}\n", self.raft));
        }
        text
    }

    /// Starts master `index` and waits (at most `bound`) until it reports ready.
    pub fn start(&mut self, index: usize, bound: Duration) -> anyhow::Result<()> {
        let id = self.masters[index].0.clone();
        let config = self.dir.join(format!("{id}.toml"));
        std::fs::write(&config, self.config(index)).with_context(|| format!("writing {}", config.display()))?;
        let (child, lines) = self.spawn_ready("master", &config, bound)?;
        self.children[index] = Some(child);
        self.apis[index] = lines.iter().find_map(|line| {
            let address = line.strip_prefix("api: http://")?;
            address.split_whitespace().next()?.parse().ok()
        });
        Ok(())
    }

    pub fn start_all(&mut self, bound: Duration) -> anyhow::Result<()> {
        (0..self.masters.len()).try_for_each(|index| self.start(index, bound))
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.children[index].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Master `index`'s HTTP API address, once it has started.
    pub fn api(&self, index: usize) -> Option<SocketAddr> {
        self.apis[index]
    }

    pub fn is_running(&self, index: usize) -> bool {
        self.children[index].is_some()
    }

    /// The index of master `id`.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.masters.iter().position(|(master, _)| master == id)
    }

    /// A client connected to every master, as the operator.
    pub async fn client(&self) -> anyhow::Result<ClusterClient> {
        ClusterClient::connect(&self.pki_dir(), OPERATOR, &self.masters).await
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for index in 0..self.agent_children.len() {
            self.kill_agent(index);
        }
        for index in 0..self.children.len() {
            self.kill(index);
        }
    }
}

/// A UDP port free at the time of asking (the socket is closed before the master binds it).
fn free_udp_port() -> anyhow::Result<SocketAddr> {
    let socket = UdpSocket::bind("127.0.0.1:0").context("finding a free UDP port")?;
    Ok(socket.local_addr()?)
}

/// One HTTP/1.0 request (the server closes when done): the status and the body. For tests
/// of the HTTP API, which need no client library.
pub fn http_request(address: SocketAddr, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map_or(String::new(), |(_, body)| body.to_owned());
    Ok((status, body))
}
