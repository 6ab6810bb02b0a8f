//! The TCP rendezvous that hands NCCL's unique id from rank 0 to the other ranks.
//!
//! NCCL needs every rank to call `ncclCommInitRank` with the same 128-byte id, which rank 0
//! makes; how it travels is left to the application (torchrun uses its TCP store). This is the
//! smallest such store: rank 0 listens on `MASTER_ADDR:MASTER_PORT` and answers each rank's
//! hello with the payload; the others connect, retrying until a deadline, so ranks may start
//! in any order. Only the id goes through here, never a collective.
//!
//! Wire format (all integers little-endian u32): hello = `MAGIC, rank, world_size`;
//! answer = `payload length, payload`.

use crate::Error;
use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

const MAGIC: u32 = 0x4c4e_5452; // "LNTR"
/// Pause between connection attempts of a rank waiting for rank 0.
const RETRY: Duration = Duration::from_millis(100);
/// Per-connection read/write limit: a stray client must not stall rank 0.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, Error> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::Rendezvous(format!("cannot resolve {host}:{port}: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(Error::Rendezvous(format!(
            "{host}:{port} resolves to no address"
        )));
    }
    Ok(addrs)
}

/// Rank 0: serves `payload` to ranks 1..world_size, returning once each has received it.
pub fn serve(
    host: &str,
    port: u16,
    world_size: usize,
    payload: &[u8],
    deadline: Instant,
) -> Result<(), Error> {
    // Listen on every interface at MASTER_PORT: MASTER_ADDR names this node as the others see
    // it, which need not be an address of one of its interfaces (NAT, aliases).
    let _ = resolve(host, port)?;
    let listener = TcpListener::bind(("0.0.0.0", port))
        .map_err(|e| Error::Rendezvous(format!("rank 0 cannot listen on port {port}: {e}")))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::Rendezvous(format!("port {port}: {e}")))?;
    let mut served = BTreeSet::new();
    while served.len() + 1 < world_size {
        match listener.accept() {
            Ok((mut stream, peer)) => match answer(&mut stream, world_size, payload) {
                Ok(rank) => {
                    served.insert(rank);
                }
                // Not one of ours (a port scanner, a rank of another job): ignore it.
                Err(e) => eprintln!("rendezvous: ignoring {peer}: {e}"),
            },
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    let missing: Vec<String> = (1..world_size)
                        .filter(|r| !served.contains(r))
                        .map(|r| r.to_string())
                        .collect();
                    return Err(Error::Rendezvous(format!(
                        "rank 0 on port {port}: ranks {} did not connect before the deadline",
                        missing.join(", ")
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(Error::Rendezvous(format!("accept on port {port}: {e}"))),
        }
    }
    Ok(())
}

fn answer(stream: &mut TcpStream, world_size: usize, payload: &[u8]) -> std::io::Result<usize> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut hello = [0u8; 12];
    stream.read_exact(&mut hello)?;
    let word = |i: usize| u32::from_le_bytes(hello[4 * i..4 * i + 4].try_into().unwrap()) as usize;
    let bad = |m: String| std::io::Error::new(ErrorKind::InvalidData, m);
    if word(0) != MAGIC as usize {
        return Err(bad("not a lantern rendezvous hello".into()));
    }
    let (rank, size) = (word(1), word(2));
    if size != world_size || rank == 0 || rank >= world_size {
        return Err(bad(format!(
            "rank {rank} of {size} does not fit this world of {world_size}"
        )));
    }
    stream.write_all(&(payload.len() as u32).to_le_bytes())?;
    stream.write_all(payload)?;
    stream.flush()?;
    Ok(rank)
}

/// Ranks other than 0: fetches the payload from rank 0, retrying until `deadline`.
pub fn fetch(
    host: &str,
    port: u16,
    rank: usize,
    world_size: usize,
    deadline: Instant,
) -> Result<Vec<u8>, Error> {
    let addrs = resolve(host, port)?;
    let mut last_err = String::from("no attempt");
    while Instant::now() < deadline {
        for addr in &addrs {
            match request(addr, rank, world_size) {
                Ok(p) => return Ok(p),
                Err(e) => last_err = format!("{addr}: {e}"),
            }
        }
        std::thread::sleep(RETRY);
    }
    Err(Error::Rendezvous(format!(
        "rank {rank} could not get the id from rank 0 at {host}:{port} before the deadline \
         (last error: {last_err})"
    )))
}

fn request(addr: &SocketAddr, rank: usize, world_size: usize) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut hello = Vec::with_capacity(12);
    for w in [MAGIC, rank as u32, world_size as u32] {
        hello.extend_from_slice(&w.to_le_bytes());
    }
    stream.write_all(&hello)?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let mut payload = vec![0u8; u32::from_le_bytes(len) as usize];
    stream.read_exact(&mut payload)?;
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[test]
    fn ranks_started_before_rank_0_get_the_id() {
        let port = free_port();
        let deadline = Instant::now() + Duration::from_secs(20);
        let id: Vec<u8> = (0..128u8).collect();
        // Ranks 1..3 start first and keep retrying until rank 0 listens.
        let clients: Vec<_> = (1..4)
            .map(|r| std::thread::spawn(move || fetch("127.0.0.1", port, r, 4, deadline)))
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        serve("localhost", port, 4, &id, deadline).unwrap();
        for c in clients {
            assert_eq!(c.join().unwrap().unwrap(), id);
        }
    }

    #[test]
    fn a_missing_rank_is_named_at_the_deadline() {
        let port = free_port();
        let deadline = Instant::now() + Duration::from_millis(800);
        let c = std::thread::spawn(move || fetch("127.0.0.1", port, 1, 3, deadline));
        let err = serve("127.0.0.1", port, 3, b"id", deadline)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ranks 2 did not connect"), "{err}");
        assert_eq!(c.join().unwrap().unwrap(), b"id");
    }

    #[test]
    fn no_rank_0_is_an_error_naming_the_address() {
        let port = free_port();
        let deadline = Instant::now() + Duration::from_millis(300);
        let err = fetch("127.0.0.1", port, 1, 2, deadline)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    }
}
