//! A small iSCSI initiator for tests, built on the protocol crate, and a helper that starts the
//! daemon on 127.0.0.1:0 with a fresh data directory.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rewind::config::Config;
use rewind::daemon::Running;
use rewind_protocol::text::{encode_pairs, parse_pairs};
use rewind_protocol::{
    decode, encode, DataOut, FrameConfig, LoginRequest, LoginResponse, NopOut, Pdu, ScsiCommand,
    TaskAttr, TextRequest,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const TARGET: &str = "iqn.2026-11.dev.rewind:vol0";
pub const INITIATOR: &str = "iqn.2026-11.dev.rewind.test:client";

pub struct Server {
    pub running: Running,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

pub async fn start_server() -> Server {
    start_server_with(|_| {}).await
}

pub async fn start_server_with(tweak: impl FnOnce(&mut Config)) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config {
        listen: vec!["127.0.0.1:0".into()],
        ..Config::default()
    };
    tweak(&mut config);
    let running = rewind::daemon::start(dir.path(), &config)
        .await
        .expect("server starts");
    let addr = running.addrs[0];
    Server { running, addr, dir }
}

impl Server {
    /// What the CLI gets for `req` through the admin socket.
    pub async fn admin(&self, req: rewind::admin::Request) -> Result<serde_json::Value, String> {
        let dir = self.dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || rewind::admin::call(&dir, &req))
            .await
            .expect("join")
            .map_err(|e| e.to_string())
    }
}

pub struct Client {
    pub stream: TcpStream,
    buf: BytesMut,
    pub cfg: FrameConfig,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub itt: u32,
    pub tsih: u16,
    pub isid: [u8; 6],
    pub cid: u16,
}

/// The outcome of a SCSI command as the initiator sees it.
#[derive(Debug, Default)]
pub struct ScsiResult {
    pub status: u8,
    pub data: Vec<u8>,
    pub sense: Vec<u8>,
    pub residual: u32,
    pub underflow: bool,
    pub overflow: bool,
}

impl ScsiResult {
    /// (sense key, ASC, ASCQ) of fixed-format sense data.
    pub fn sense_triple(&self) -> Option<(u8, u8, u8)> {
        let s = &self.sense;
        if s.len() >= 14 && (s[0] & 0x7f) == 0x70 {
            Some((s[2] & 0x0f, s[12], s[13]))
        } else if s.len() >= 4 && (s[0] & 0x7f) == 0x72 {
            Some((s[1] & 0x0f, s[2], s[3]))
        } else {
            None
        }
    }
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).ok();
        Client {
            stream,
            buf: BytesMut::new(),
            cfg: FrameConfig {
                header_digest: false,
                data_digest: false,
                max_recv_data_segment: 16 * 1024 * 1024,
            },
            cmd_sn: 1,
            exp_stat_sn: 0,
            itt: 1,
            tsih: 0,
            isid: [0x80, 0, 0, 0x12, 0x34, 0x56],
            cid: 0,
        }
    }

    pub async fn send(&mut self, pdu: &Pdu) {
        let mut out = BytesMut::new();
        encode(pdu, &self.cfg, &mut out);
        self.stream.write_all(&out).await.expect("send");
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// The next PDU, or None on EOF/timeout.
    pub async fn recv(&mut self) -> Option<Pdu> {
        self.recv_timeout(Duration::from_secs(10)).await
    }

    pub async fn recv_timeout(&mut self, t: Duration) -> Option<Pdu> {
        loop {
            match decode(&mut self.buf, &self.cfg) {
                Ok(Some(pdu)) => {
                    self.note_stat_sn(&pdu);
                    return Some(pdu);
                }
                Ok(None) => {}
                Err(e) => panic!("target sent an undecodable PDU: {e}"),
            }
            match tokio::time::timeout(t, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// True when the target closed the connection (EOF or reset) within `t`.
    pub async fn closed_within(&mut self, t: Duration) -> bool {
        let mut scratch = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + t;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut scratch)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }

    fn note_stat_sn(&mut self, pdu: &Pdu) {
        let sn = match pdu {
            Pdu::ScsiResponse(p) => Some(p.stat_sn),
            Pdu::DataIn(p) if p.status.is_some() => Some(p.stat_sn),
            Pdu::TextResponse(p) => Some(p.stat_sn),
            Pdu::LoginResponse(p) => Some(p.stat_sn),
            Pdu::LogoutResponse(p) => Some(p.stat_sn),
            Pdu::TaskMgmtResponse(p) => Some(p.stat_sn),
            Pdu::NopIn(p) if p.itt != 0xffff_ffff => Some(p.stat_sn),
            Pdu::Reject(p) => Some(p.stat_sn),
            Pdu::AsyncMessage(p) => Some(p.stat_sn),
            _ => None,
        };
        if let Some(sn) = sn {
            self.exp_stat_sn = sn.wrapping_add(1);
        }
    }

    pub fn next_itt(&mut self) -> u32 {
        self.itt = self.itt.wrapping_add(1);
        self.itt
    }

    /// A login request from this client's state (ISID, TSIH, ITT, CID, CmdSN, ExpStatSN).
    pub fn login_request(&self, csg: u8, nsg: u8, transit: bool, keys: &[(&str, &str)]) -> Pdu {
        Pdu::LoginRequest(LoginRequest {
            transit,
            cont: false,
            csg,
            nsg,
            version_max: 0,
            version_min: 0,
            isid: self.isid,
            tsih: self.tsih,
            itt: self.itt,
            cid: self.cid,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            data: Bytes::from(encode_pairs(keys)),
        })
    }

    /// The first login request of a normal session to `target`, no authentication, asking to go
    /// straight to the operational stage.
    pub fn first_login_request(&self, target: &str) -> Pdu {
        self.login_request(
            0,
            1,
            true,
            &[
                ("InitiatorName", INITIATOR),
                ("AuthMethod", "None"),
                ("SessionType", "Normal"),
                ("TargetName", target),
            ],
        )
    }

    /// Send an immediate NOP-Out ping carrying `data`; returns its ITT.
    pub async fn send_ping(&mut self, data: &'static [u8]) -> u32 {
        let itt = self.next_itt();
        let nop = Pdu::NopOut(NopOut {
            immediate: true,
            lun: 0,
            itt,
            ttt: 0xffff_ffff,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            data: Bytes::from_static(data),
        });
        self.send(&nop).await;
        itt
    }

    /// One login request/response exchange.
    pub async fn login_step(
        &mut self,
        csg: u8,
        nsg: u8,
        transit: bool,
        keys: &[(&str, &str)],
    ) -> LoginResponse {
        let req = self.login_request(csg, nsg, transit, keys);
        self.send(&req).await;
        match self.recv().await {
            Some(Pdu::LoginResponse(r)) => r,
            other => panic!("expected a login response, got {other:?}"),
        }
    }

    /// Log in to `target` (None = discovery) straight from the security stage to full feature phase.
    pub async fn login(&mut self, target: Option<&str>, extra: &[(&str, &str)]) -> LoginResponse {
        let mut keys: Vec<(&str, &str)> =
            vec![("InitiatorName", INITIATOR), ("AuthMethod", "None")];
        match target {
            Some(t) => {
                keys.push(("SessionType", "Normal"));
                keys.push(("TargetName", t));
            }
            None => keys.push(("SessionType", "Discovery")),
        }
        let r = self.login_step(0, 1, true, &keys).await;
        if r.status_class != 0 {
            return r;
        }
        let mut ops: Vec<(&str, &str)> = vec![
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("MaxRecvDataSegmentLength", "262144"),
            ("InitialR2T", "No"),
            ("ImmediateData", "Yes"),
            ("MaxBurstLength", "16776192"),
            ("FirstBurstLength", "262144"),
            ("ErrorRecoveryLevel", "0"),
        ];
        for (k, v) in extra {
            ops.retain(|(ok, _)| ok != k);
            ops.push((k, v));
        }
        let r = self.login_step(1, 3, true, &ops).await;
        if r.status_class == 0 {
            self.tsih = r.tsih;
            let answers = parse_pairs(&r.data).expect("login answer parses");
            let on = |k: &str| answers.iter().any(|(key, v)| key == k && v == "CRC32C");
            self.cfg.header_digest = on("HeaderDigest");
            self.cfg.data_digest = on("DataDigest");
        }
        r
    }

    pub async fn send_targets(&mut self) -> Vec<(String, String)> {
        let itt = self.next_itt();
        let req = Pdu::TextRequest(TextRequest {
            immediate: false,
            final_: true,
            cont: false,
            lun: 0,
            itt,
            ttt: 0xffff_ffff,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            data: Bytes::from(encode_pairs(&[("SendTargets", "All")])),
        });
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        self.send(&req).await;
        match self.recv().await {
            Some(Pdu::TextResponse(r)) => parse_pairs(&r.data).expect("text parses"),
            other => panic!("expected a text response, got {other:?}"),
        }
    }

    pub fn command(&mut self, cdb: &[u8], read_len: u32, write: &[u8]) -> ScsiCommand {
        let itt = self.next_itt();
        let mut c = [0u8; 16];
        c[..cdb.len().min(16)].copy_from_slice(&cdb[..cdb.len().min(16)]);
        let cmd = ScsiCommand {
            immediate: false,
            final_: true,
            read: read_len > 0,
            write: !write.is_empty(),
            attr: TaskAttr::SIMPLE,
            lun: 0,
            itt,
            expected_data_len: if write.is_empty() {
                read_len
            } else {
                write.len() as u32
            },
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            cdb: Bytes::copy_from_slice(&c),
            bidi_read_len: None,
            data: Bytes::new(),
        };
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        cmd
    }

    /// Run one SCSI command to completion: immediate data for the first burst, Data-Out for R2Ts.
    pub async fn scsi(&mut self, cdb: &[u8], read_len: u32, write: &[u8]) -> ScsiResult {
        let mut cmd = self.command(cdb, read_len, write);
        let immediate = write.len().min(65536);
        cmd.data = Bytes::copy_from_slice(&write[..immediate]);
        let itt = cmd.itt;
        self.send(&Pdu::ScsiCommand(cmd)).await;
        let mut result = ScsiResult::default();
        loop {
            match self.recv().await {
                Some(Pdu::DataIn(d)) if d.itt == itt => {
                    result.data.extend_from_slice(&d.data);
                    if let Some(status) = d.status {
                        result.status = status;
                        result.residual = d.residual;
                        result.underflow = d.underflow;
                        result.overflow = d.overflow;
                        return result;
                    }
                }
                Some(Pdu::R2t(r)) if r.itt == itt => {
                    let start = r.buffer_offset as usize;
                    let end = start + r.desired_len as usize;
                    let mut off = start;
                    while off < end {
                        let len = (end - off).min(65536);
                        let d = Pdu::DataOut(DataOut {
                            final_: off + len == end,
                            lun: 0,
                            itt,
                            ttt: r.ttt,
                            exp_stat_sn: self.exp_stat_sn,
                            data_sn: 0,
                            buffer_offset: off as u32,
                            data: Bytes::copy_from_slice(&write[off..off + len]),
                        });
                        self.send(&d).await;
                        off += len;
                    }
                }
                Some(Pdu::ScsiResponse(r)) if r.itt == itt => {
                    result.status = r.status;
                    result.residual = r.residual;
                    result.underflow = r.underflow;
                    result.overflow = r.overflow;
                    if r.data.len() >= 2 {
                        let n = u16::from_be_bytes([r.data[0], r.data[1]]) as usize;
                        result.sense = r.data[2..(2 + n).min(r.data.len())].to_vec();
                    }
                    return result;
                }
                Some(Pdu::NopIn(_)) => {}
                other => panic!("unexpected PDU for itt {itt}: {other:?}"),
            }
        }
    }

    pub async fn read10(&mut self, lba: u32, blocks: u16, block_size: u32) -> ScsiResult {
        let mut cdb = [0u8; 10];
        cdb[0] = 0x28;
        cdb[2..6].copy_from_slice(&lba.to_be_bytes());
        cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
        self.scsi(&cdb, u32::from(blocks) * block_size, &[]).await
    }

    pub async fn write10(&mut self, lba: u32, data: &[u8], block_size: u32) -> ScsiResult {
        let mut cdb = [0u8; 10];
        cdb[0] = 0x2a;
        cdb[2..6].copy_from_slice(&lba.to_be_bytes());
        let blocks = (data.len() as u32 / block_size) as u16;
        cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
        self.scsi(&cdb, 0, data).await
    }
}
