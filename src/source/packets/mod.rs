//! Source stage for packets: frames from a saved capture (pcap or pcapng,
//! read by the `pcap-file` crate) or from an interface (`afpacket.rs`).
//! Each frame is handed out with its link type and time; nothing here
//! looks inside it.

pub mod afpacket;
pub mod bpf;

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::net::Link;

/// A captured frame.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// Epoch milliseconds.
    pub time_ms: i64,
    pub link: Link,
    pub data: &'a [u8],
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a pcap or pcapng capture (it starts with {magic})")]
    NotCapture { path: PathBuf, magic: String },
    #[error("{path}: {reason}")]
    Header { path: PathBuf, reason: String },
    #[error(
        "{path}: packet {number}: {reason} (the {number_before} packets before it are counted)"
    )]
    Packet {
        path: PathBuf,
        number: u64,
        number_before: u64,
        reason: String,
    },
    #[error(
        "{path}: link type {linktype} is not read here (Ethernet, raw IP, Linux cooked and BSD loopback are)"
    )]
    LinkType { path: PathBuf, linktype: u32 },
    #[error(
        "capturing packets needs CAP_NET_RAW: run as root, or give the binary the capability (setcap cap_net_raw+ep $(command -v webfence)), or read a saved capture with -r"
    )]
    Permission,
    #[error("no such interface: {0} (ip link lists them)")]
    NoInterface(String),
    #[error("cannot capture on {iface}: {source}")]
    Socket {
        iface: String,
        source: std::io::Error,
    },
}

/// What a read of a capture file met.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSummary {
    pub frames: u64,
    /// Frames of a link type not read here (pcapng interfaces can differ).
    pub skipped_links: u64,
}

/// Reads every frame of a pcap or pcapng file, oldest first. A damaged
/// record stops the read with an error that names it; the frames before
/// it have been handed out.
pub fn read_file(path: &Path, on: &mut dyn FnMut(&Frame<'_>)) -> Result<FileSummary, CaptureError> {
    let file = std::fs::File::open(path).map_err(|source| CaptureError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 4];
    reader
        .read_exact(&mut magic)
        .map_err(|_| CaptureError::NotCapture {
            path: path.to_path_buf(),
            magic: "fewer than 4 bytes".into(),
        })?;
    let chained = std::io::Cursor::new(magic).chain(reader);
    match magic {
        [0xd4, 0xc3, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0xc3, 0xd4]
        | [0x4d, 0x3c, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0x3c, 0x4d] => read_pcap(path, chained, on),
        [0x0a, 0x0d, 0x0d, 0x0a] => read_pcapng(path, chained, on),
        _ => Err(CaptureError::NotCapture {
            path: path.to_path_buf(),
            magic: format!(
                "{:02x} {:02x} {:02x} {:02x}",
                magic[0], magic[1], magic[2], magic[3]
            ),
        }),
    }
}

fn read_pcap(
    path: &Path,
    input: impl Read,
    on: &mut dyn FnMut(&Frame<'_>),
) -> Result<FileSummary, CaptureError> {
    let mut reader = pcap_file::pcap::PcapReader::new(input).map_err(|e| CaptureError::Header {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let linktype: u32 = reader.header().datalink.into();
    let link = Link::from_linktype(linktype).ok_or(CaptureError::LinkType {
        path: path.to_path_buf(),
        linktype,
    })?;
    let mut summary = FileSummary::default();
    while let Some(packet) = reader.next_packet() {
        let packet = packet.map_err(|e| CaptureError::Packet {
            path: path.to_path_buf(),
            number: summary.frames + 1,
            number_before: summary.frames,
            reason: e.to_string(),
        })?;
        summary.frames += 1;
        on(&Frame {
            time_ms: i64::try_from(packet.timestamp.as_millis()).unwrap_or(i64::MAX),
            link,
            data: &packet.data,
        });
    }
    Ok(summary)
}

fn read_pcapng(
    path: &Path,
    input: impl Read,
    on: &mut dyn FnMut(&Frame<'_>),
) -> Result<FileSummary, CaptureError> {
    use pcap_file::pcapng::Block;
    let mut reader =
        pcap_file::pcapng::PcapNgReader::new(input).map_err(|e| CaptureError::Header {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let mut summary = FileSummary::default();
    let mut links: Vec<Option<Link>> = Vec::new();
    let mut blocks = 0u64;
    while let Some(block) = reader.next_block() {
        blocks += 1;
        let block = block.map_err(|e| CaptureError::Packet {
            path: path.to_path_buf(),
            number: summary.frames + 1,
            number_before: summary.frames,
            reason: format!("block {blocks}: {e}"),
        })?;
        let (interface, time_ms, data) = match &block {
            Block::InterfaceDescription(idb) => {
                links.push(Link::from_linktype(idb.linktype.into()));
                continue;
            }
            Block::SectionHeader(_) => {
                // A new section starts its own interface numbering.
                links.clear();
                continue;
            }
            Block::EnhancedPacket(epb) => (
                epb.interface_id as usize,
                i64::try_from(epb.timestamp.as_millis()).unwrap_or(i64::MAX),
                &epb.data,
            ),
            Block::SimplePacket(spb) => (0, 0, &spb.data),
            _ => continue,
        };
        summary.frames += 1;
        match links.get(interface).copied().flatten() {
            Some(link) => on(&Frame {
                time_ms,
                link,
                data,
            }),
            None => summary.skipped_links += 1,
        }
    }
    Ok(summary)
}
