//! A DNS server on loopback for tests: answers A and AAAA queries from a table the test
//! controls (and may change between queries, to stage rebinding), NXDOMAIN otherwise. TTL 0,
//! so that nothing caches an answer.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;

/// Answers per name; each query of a name takes the next answer set, the last one repeating.
type Table = HashMap<String, Vec<Vec<IpAddr>>>;

/// A running test DNS server (UDP). Stops when dropped.
#[derive(Debug)]
pub struct DnsServer {
    addr: SocketAddr,
    table: Arc<Mutex<Table>>,
    queries: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl DnsServer {
    /// Starts on `ip` (port chosen by the system).
    pub async fn start(ip: IpAddr) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        let addr = socket.local_addr()?;
        let table: Arc<Mutex<Table>> = Arc::default();
        let queries: Arc<Mutex<Vec<String>>> = Arc::default();
        let (t, q) = (table.clone(), queries.clone());
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let mut served: HashMap<String, usize> = HashMap::new();
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                if let Some(reply) = answer(&buf[..n], &t, &q, &mut served) {
                    let _ = socket.send_to(&reply, peer).await;
                }
            }
        });
        Ok(Self {
            addr,
            table,
            queries,
            task,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers `name` with `ips` from now on.
    pub fn set(&self, name: &str, ips: &[IpAddr]) {
        self.sequence(name, &[ips]);
    }

    /// Answers successive queries of `name` with each set in turn (the last one repeats).
    pub fn sequence(&self, name: &str, answers: &[&[IpAddr]]) {
        if let Ok(mut t) = self.table.lock() {
            t.insert(
                name.trim_end_matches('.').to_ascii_lowercase(),
                answers.iter().map(|a| a.to_vec()).collect(),
            );
        }
    }

    /// Every name queried so far, in order (`name/A`, `name/AAAA`).
    pub fn queries(&self) -> Vec<String> {
        self.queries.lock().map(|q| q.clone()).unwrap_or_default()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(
    query: &[u8],
    table: &Mutex<Table>,
    log: &Mutex<Vec<String>>,
    served: &mut HashMap<String, usize>,
) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: labels, then QTYPE and QCLASS.
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]);
    let question_end = i + 4;
    let name = labels.join(".");
    let kind = match qtype {
        1 => "A",
        28 => "AAAA",
        _ => "other",
    };
    if let Ok(mut l) = log.lock() {
        l.push(format!("{name}/{kind}"));
    }
    let known = table.lock().ok()?.get(&name).cloned();
    let mut reply = Vec::with_capacity(512);
    reply.extend_from_slice(&query[..2]); // id
    let rcode: u8 = if known.is_some() { 0 } else { 3 };
    reply.extend_from_slice(&[0x81, 0x80 | rcode]); // QR, RD, RA
    reply.extend_from_slice(&[0, 1]); // QDCOUNT
    let ips: Vec<IpAddr> = match &known {
        Some(sets) => {
            // A and AAAA of one lookup share a step: advance on the A query.
            let step = served.entry(name.clone()).or_insert(0);
            let set = sets.get(*step).or(sets.last()).cloned().unwrap_or_default();
            if qtype == 1 {
                *step += 1;
            }
            set.into_iter()
                .filter(|ip| matches!((qtype, ip), (1, IpAddr::V4(_)) | (28, IpAddr::V6(_))))
                .collect()
        }
        None => Vec::new(),
    };
    reply.extend_from_slice(&(ips.len() as u16).to_be_bytes()); // ANCOUNT
    reply.extend_from_slice(&[0, 0, 0, 0]); // NSCOUNT, ARCOUNT
    reply.extend_from_slice(query.get(12..question_end)?);
    for ip in ips {
        reply.extend_from_slice(&[0xc0, 0x0c]); // the name: a pointer to the question
        reply.extend_from_slice(&qtype.to_be_bytes());
        reply.extend_from_slice(&[0, 1]); // IN
        reply.extend_from_slice(&[0, 0, 0, 0]); // TTL 0
        match ip {
            IpAddr::V4(v4) => {
                reply.extend_from_slice(&[0, 4]);
                reply.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                reply.extend_from_slice(&[0, 16]);
                reply.extend_from_slice(&v6.octets());
            }
        }
    }
    Some(reply)
}
