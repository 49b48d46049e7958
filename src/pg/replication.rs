//! The streaming-replication sub-protocol carried in CopyData: XLogData and
//! primary keepalives from the server, standby status updates from us.

use bytes::{Buf, Bytes};
use shards::Lsn;

/// Microseconds between the Unix epoch and Postgres' (2000-01-01).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// `w`: a piece of WAL, here one pgoutput message.
    XLogData {
        wal_start: Lsn,
        wal_end: Lsn,
        send_time_micros: i64,
        data: Bytes,
    },
    /// `k`: the server's position; `reply_requested` asks for a status update
    /// now (it will drop us after wal_sender_timeout otherwise).
    Keepalive {
        wal_end: Lsn,
        send_time_micros: i64,
        reply_requested: bool,
    },
}

pub fn parse(mut data: Bytes) -> Result<ReplicationMessage, String> {
    if data.is_empty() {
        return Err("empty CopyData in the replication stream".into());
    }
    let tag = data.get_u8();
    match tag {
        b'w' => {
            if data.len() < 24 {
                return Err(format!("XLogData header too short ({} bytes)", data.len()));
            }
            let wal_start = Lsn(data.get_u64());
            let wal_end = Lsn(data.get_u64());
            let send_time_micros = data.get_i64();
            Ok(ReplicationMessage::XLogData {
                wal_start,
                wal_end,
                send_time_micros,
                data,
            })
        }
        b'k' => {
            if data.len() < 17 {
                return Err(format!("keepalive too short ({} bytes)", data.len()));
            }
            Ok(ReplicationMessage::Keepalive {
                wal_end: Lsn(data.get_u64()),
                send_time_micros: data.get_i64(),
                reply_requested: data.get_u8() == 1,
            })
        }
        other => Err(format!(
            "unknown replication message tag {:?}",
            other as char
        )),
    }
}

/// A standby status update (`r`). `flush` is what Postgres may discard up to:
/// only ever the persisted-offset fence.
pub fn standby_status(write: Lsn, flush: Lsn, apply: Lsn, reply_requested: bool) -> [u8; 34] {
    let mut out = [0u8; 34];
    out[0] = b'r';
    out[1..9].copy_from_slice(&write.0.to_be_bytes());
    out[9..17].copy_from_slice(&flush.0.to_be_bytes());
    out[17..25].copy_from_slice(&apply.0.to_be_bytes());
    out[25..33].copy_from_slice(&pg_now_micros().to_be_bytes());
    out[33] = reply_requested as u8;
    out
}

/// Now, in microseconds since the Postgres epoch.
pub fn pg_now_micros() -> i64 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    unix - PG_EPOCH_OFFSET_MICROS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_xlogdata_and_keepalive() {
        let mut w = vec![b'w'];
        w.extend_from_slice(&10u64.to_be_bytes());
        w.extend_from_slice(&20u64.to_be_bytes());
        w.extend_from_slice(&30i64.to_be_bytes());
        w.extend_from_slice(b"Bpayload");
        assert_eq!(
            parse(Bytes::from(w)).unwrap(),
            ReplicationMessage::XLogData {
                wal_start: Lsn(10),
                wal_end: Lsn(20),
                send_time_micros: 30,
                data: Bytes::from_static(b"Bpayload"),
            }
        );
        let mut k = vec![b'k'];
        k.extend_from_slice(&99u64.to_be_bytes());
        k.extend_from_slice(&5i64.to_be_bytes());
        k.push(1);
        assert_eq!(
            parse(Bytes::from(k)).unwrap(),
            ReplicationMessage::Keepalive {
                wal_end: Lsn(99),
                send_time_micros: 5,
                reply_requested: true
            }
        );
        assert!(parse(Bytes::from_static(b"w123")).is_err());
        assert!(parse(Bytes::from_static(b"k")).is_err());
        assert!(parse(Bytes::from_static(b"z")).is_err());
        assert!(parse(Bytes::new()).is_err());
    }

    #[test]
    fn status_update_layout() {
        let msg = standby_status(Lsn(3), Lsn(2), Lsn(1), false);
        assert_eq!(msg[0], b'r');
        assert_eq!(u64::from_be_bytes(msg[1..9].try_into().unwrap()), 3);
        assert_eq!(u64::from_be_bytes(msg[9..17].try_into().unwrap()), 2);
        assert_eq!(u64::from_be_bytes(msg[17..25].try_into().unwrap()), 1);
        assert!(i64::from_be_bytes(msg[25..33].try_into().unwrap()) > 0);
        assert_eq!(msg[33], 0);
    }
}
