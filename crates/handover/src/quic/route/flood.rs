//! The handshakes-in-flight table under a flood of Initials. Anyone can send Initials with
//! DCIDs of their choosing, each one an entry: what the table holds must stay bounded however
//! many arrive, and the tests pin down what a flood can do to genuine handshakes (the numbers
//! the limits in `quic.rs` give).

use std::time::{Duration, Instant};

use super::{Route, Table, HANDSHAKE_WINDOW, MAX_HANDED_ON, MAX_REMEMBERED};
use crate::quic::cid::CidKey;

/// The longest DCID an Initial can carry (QUIC v1): the most bytes one entry keeps.
const LONGEST_DCID: usize = 20;

/// A client's first Initial (QUIC v1, 1200 bytes) to a `LONGEST_DCID`-byte DCID; the DCID is
/// at `DCID_AT`, so that a flood can rewrite it in place.
fn initial() -> Vec<u8> {
    let mut p = vec![0xc3, 0, 0, 0, 1, LONGEST_DCID as u8];
    p.extend_from_slice(&[0; LONGEST_DCID]);
    p.extend_from_slice(&[8, 1, 2, 3, 4, 5, 6, 7, 8, 0]); // SCID, no token
    let rest = 1200 - p.len() - 2;
    p.extend_from_slice(&[0x40 | (rest >> 8) as u8, rest as u8]);
    p.resize(1200, 0xaa);
    p
}
const DCID_AT: usize = 6;

/// Sends `n` Initials with distinct DCIDs (numbered from `from`) through `table` at `now`.
fn flood(table: &mut Table, from: u64, n: u64, now: Instant) {
    let mut p = initial();
    for i in from..from + n {
        p[DCID_AT..DCID_AT + 8].copy_from_slice(&i.to_be_bytes());
        p[DCID_AT + 8] = 0xf1; // never the genuine one's
        assert_eq!(table.route(&p, now), Route::Deliver);
    }
}

fn genuine() -> Vec<u8> {
    let mut p = initial();
    p[DCID_AT..DCID_AT + LONGEST_DCID].fill(0x61);
    p
}

fn dcid(p: &[u8]) -> Vec<u8> {
    p[DCID_AT..DCID_AT + LONGEST_DCID].to_vec()
}

fn table(generation: u64) -> Table {
    Table::new(generation, CidKey::new(&[3; 32]))
}

/// However many Initials arrive, at most `MAX_REMEMBERED` DCIDs of at most 20 bytes are kept,
/// at most `MAX_HANDED_ON` of them handed on; and entries older than the window go at the
/// next Initial.
#[test]
fn a_flood_is_held_to_the_bound() {
    let mut t = table(1);
    let now = Instant::now();
    flood(&mut t, 0, 3 * MAX_REMEMBERED as u64, now);
    assert_eq!(t.remembered.len(), MAX_REMEMBERED);
    assert!(t
        .remembered
        .iter()
        .all(|(_, d)| d.len() <= LONGEST_DCID && d.capacity() <= LONGEST_DCID));
    let bytes: usize = t.remembered.iter().map(|(_, d)| d.capacity()).sum();
    assert!(
        bytes <= MAX_REMEMBERED * LONGEST_DCID,
        "{bytes} bytes of DCIDs"
    );
    assert_eq!(t.in_flight(now).len(), MAX_HANDED_ON);
    assert!(
        t.inherited.is_empty(),
        "a flood adds nothing to the inherited"
    );

    flood(&mut t, 1 << 40, 1, now + HANDSHAKE_WINDOW);
    assert_eq!(t.remembered.len(), 1, "the expired entries were not let go");
}

/// What a flood before an upgrade does to a genuine handshake: `MAX_HANDED_ON` (4,096) newer
/// Initials push it out of what the next generation is told, `MAX_REMEMBERED` (65,536) out
/// of the table. A retransmission of its Initial makes it the newest again.
#[test]
fn a_flood_before_an_upgrade_pushes_a_genuine_handshake_out() {
    let handed_on = |t: &Table, now| t.in_flight(now).iter().any(|(d, _)| *d == dcid(&genuine()));
    let now = Instant::now();
    let mut t = table(1);
    assert_eq!(t.route(&genuine(), now), Route::Deliver);
    flood(&mut t, 0, MAX_HANDED_ON as u64 - 1, now);
    assert!(handed_on(&t, now), "evicted by fewer than MAX_HANDED_ON");
    flood(&mut t, 1 << 32, 1, now);
    assert!(
        !handed_on(&t, now),
        "still handed on after MAX_HANDED_ON newer"
    );
    assert!(t.remembered.iter().any(|(_, d)| *d == dcid(&genuine())));
    flood(&mut t, 1 << 33, MAX_REMEMBERED as u64, now);
    assert!(!t.remembered.iter().any(|(_, d)| *d == dcid(&genuine())));

    // The client's retransmission, after the flood: handed on again.
    let mut t = table(1);
    t.route(&genuine(), now);
    flood(&mut t, 0, MAX_HANDED_ON as u64, now);
    let later = now + Duration::from_millis(300);
    t.route(&genuine(), later);
    assert_eq!(t.in_flight(later)[0], (dcid(&genuine()), 1));
}

/// Once handed on, a handshake stays with its owner for the window whatever the new
/// generation then reads: a flood there only fills its own table.
#[test]
fn a_flood_after_the_upgrade_leaves_the_inherited_handshakes_alone() {
    let now = Instant::now();
    let mut t = table(2);
    t.add_live(1);
    t.inherit(vec![(dcid(&genuine()), 1)], now);
    flood(&mut t, 0, 2 * MAX_REMEMBERED as u64, now);
    assert_eq!(t.route(&genuine(), now), Route::Forward(1));
    assert_eq!(t.inherited.len(), 1);
    assert_eq!(t.remembered.len(), MAX_REMEMBERED);
}
