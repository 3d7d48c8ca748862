//! Who may do what: a request is allowed when one grant of the unit's read (or write) list
//! names the client's address and covers every address the request touches. A unit with no
//! `read:` lets every client read it all; nothing is writable unless a `write:` grant lists it.

use std::net::IpAddr;

use super::request::Op;
use crate::config::model::Access;

/// Whether `op` from `peer` is allowed by `grants` (the unit's read or write list).
pub fn allows(grants: &[Access], peer: IpAddr, op: &Op) -> bool {
    let peer = canonical(peer);
    let (first, last) = (op.start, op.start.saturating_add(op.count - 1));
    grants.iter().any(|g| {
        let client = g.clients.is_empty() || g.clients.iter().any(|n| n.contains(&peer));
        let covered = match &g.tables {
            None => true,
            Some(tables) => tables[op.table as usize - 1]
                .iter()
                .any(|r| *r.start() <= first && last <= *r.end()),
        };
        client && covered
    })
}

/// An IPv4 client seen through an IPv6 listener (`::ffff:a.b.c.d`) is matched as IPv4.
fn canonical(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::Table;

    #[test]
    fn a_grant_must_name_the_client_and_cover_every_address() {
        let net = |s: &str| s.parse::<ipnet::IpNet>().unwrap();
        let mut holding = [vec![], vec![], vec![], vec![]];
        holding[2] = vec![16..=17];
        let grants = [Access {
            clients: vec![net("192.168.1.20/32"), net("10.0.0.0/24")],
            tables: Some(holding),
        }];
        let op = |start, count| Op {
            write: true,
            table: Table::Holding,
            start,
            count,
        };
        let evcc: IpAddr = "192.168.1.20".parse().unwrap();
        assert!(allows(&grants, evcc, &op(16, 2)));
        assert!(allows(&grants, "10.0.0.9".parse().unwrap(), &op(17, 1)));
        assert!(allows(
            &grants,
            "::ffff:192.168.1.20".parse().unwrap(),
            &op(16, 1)
        ));
        assert!(!allows(&grants, evcc, &op(16, 3)), "past the range");
        assert!(!allows(&grants, evcc, &op(15, 1)), "before it");
        assert!(!allows(
            &grants,
            "192.168.1.21".parse().unwrap(),
            &op(16, 1)
        ));
        let coil = Op {
            table: Table::Coils,
            ..op(16, 1)
        };
        assert!(!allows(&grants, evcc, &coil), "another table");
        assert!(!allows(&[], evcc, &op(16, 1)), "no grant, no access");
        let anyone = [Access {
            clients: vec![],
            tables: None,
        }];
        assert!(allows(&anyone, "203.0.113.7".parse().unwrap(), &coil));
    }
}
