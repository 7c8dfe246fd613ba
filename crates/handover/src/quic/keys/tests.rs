//! The same secret gives the same keys in another instance (as in the next generation); a
//! different secret gives keys that reject what the first made.

use std::sync::Arc;

use rustls::client::ClientConnection;
use rustls::server::ServerConnection;
use rustls::HandshakeKind;

use super::*;

/// A secret and its copy made the way the next generation makes it, and an unrelated one.
fn lineage() -> (Secrets, Secrets, Secrets) {
    let first = Secrets::random().unwrap();
    let next = Secrets::from_bytes(first.to_bytes());
    let stranger = Secrets::random().unwrap();
    (first, next, stranger)
}

#[test]
fn labels_and_keys_are_distinct() {
    let labels = [RESET_LABEL, TOKEN_LABEL, TICKET_LABEL, CID_LABEL];
    let s = Secrets::from_bytes([1; 32]);
    let keys: Vec<[u8; 32]> = labels.iter().map(|l| s.derive(&[l])).collect();
    for i in 0..labels.len() {
        for j in i + 1..labels.len() {
            assert_ne!(labels[i], labels[j]);
            assert_ne!(keys[i], keys[j], "{:?}", std::str::from_utf8(labels[i]));
        }
        // No key is the secret itself.
        assert_ne!(keys[i], [1; 32]);
    }
}

#[test]
fn bytes_round_trip_and_random_secrets_differ() {
    let a = Secrets::random().unwrap();
    assert_eq!(Secrets::from_bytes(a.to_bytes()).to_bytes(), a.to_bytes());
    assert_ne!(Secrets::random().unwrap().to_bytes(), a.to_bytes());
    assert_eq!(format!("{a:?}"), "Secrets(..)");
}

#[test]
fn reset_tokens_are_equal_across_generations() {
    let (first, next, stranger) = lineage();
    let cid = [7u8; 16];
    let token = |s: &Secrets| {
        let key = s.reset_key();
        let mut out = vec![0u8; key.signature_len()];
        key.sign(&cid, &mut out);
        out
    };
    assert_eq!(token(&first), token(&next));
    assert_ne!(token(&first), token(&stranger));
    assert!(next.reset_key().verify(&cid, &token(&first)).is_ok());
    assert!(stranger.reset_key().verify(&cid, &token(&first)).is_err());
}

#[test]
fn a_token_sealed_by_one_generation_opens_at_the_next() {
    let (first, next, stranger) = lineage();
    // quinn derives one AEAD key per token from random bytes sent along with it.
    let random = [3u8; 32];
    let plain = b"retry token: client address and time".to_vec();
    let mut sealed = plain.clone();
    first
        .token_key()
        .aead_from_hkdf(&random)
        .seal(&mut sealed, b"")
        .unwrap();
    assert_ne!(sealed, plain);

    let mut copy = sealed.clone();
    let opened = next
        .token_key()
        .aead_from_hkdf(&random)
        .open(&mut copy, b"");
    assert_eq!(opened.unwrap(), plain.as_slice());

    let mut copy = sealed.clone();
    let key = stranger.token_key().aead_from_hkdf(&random);
    assert!(key.open(&mut copy, b"").is_err());
}

#[test]
fn cid_keys_agree_across_generations() {
    use quinn::ConnectionIdGenerator;
    let (first, next, stranger) = lineage();
    let cid = crate::quic::cid::TaggedCids::new(77, first.cid_key()).generate_cid();
    assert_eq!(next.cid_key().tag_of(&cid), Some(77));
    assert_eq!(stranger.cid_key().tag_of(&cid), None);
}

#[test]
fn a_ticket_made_by_one_generation_opens_at_the_next() {
    let (first, next, stranger) = lineage();
    let plain = b"a TLS 1.3 resumption secret".to_vec();
    let ticket = first.ticketer().encrypt(&plain).unwrap();
    assert!(!ticket.windows(plain.len()).any(|w| w == plain.as_slice()));
    assert_eq!(next.ticketer().decrypt(&ticket), Some(plain.clone()));
    assert_eq!(stranger.ticketer().decrypt(&ticket), None);
    // Two tickets of the same plaintext differ (a fresh key each).
    assert_ne!(first.ticketer().encrypt(&plain).unwrap(), ticket);
    assert!(first.ticketer().enabled());
    assert_eq!(first.ticketer().lifetime(), 6 * 3600);
}

#[test]
fn tickets_open_for_their_period_and_the_next_only() {
    let s = Secrets::from_bytes([9; 32]);
    let t = Ticketer {
        key: s.derive(&[TICKET_LABEL]),
        rng: SystemRandom::new(),
    };
    let ticket = t.seal(b"state", 1000).unwrap();
    assert_eq!(t.open(&ticket, 1000).as_deref(), Some(&b"state"[..]));
    assert_eq!(t.open(&ticket, 1001).as_deref(), Some(&b"state"[..]));
    assert_eq!(t.open(&ticket, 1002), None);
    assert_eq!(t.open(&ticket, 999), None);
    // Period 0 has no predecessor (no underflow).
    let early = t.seal(b"state", 0).unwrap();
    assert_eq!(t.open(&early, 0).as_deref(), Some(&b"state"[..]));
}

#[test]
fn the_period_follows_the_clock() {
    let at = |secs| Ticketer::period(UNIX_EPOCH + std::time::Duration::from_secs(secs));
    assert_eq!(at(0), 0);
    assert_eq!(at(6 * 3600 - 1), 0);
    assert_eq!(at(6 * 3600), 1);
    // Now is after 2020 and before 2200.
    let now = Ticketer::period(SystemTime::now());
    assert!(now > 50 * 365 * 4 && now < 230 * 365 * 4, "period {now}");
}

#[test]
fn tampered_or_short_tickets_are_rejected() {
    let s = Secrets::from_bytes([4; 32]);
    let ticketer = s.ticketer();
    let ticket = ticketer.encrypt(b"session").unwrap();
    for i in 0..ticket.len() {
        let mut bad = ticket.clone();
        bad[i] ^= 0x01;
        assert_eq!(ticketer.decrypt(&bad), None, "byte {i} flipped");
    }
    for len in 0..ticket.len() {
        assert_eq!(ticketer.decrypt(&ticket[..len]), None, "cut at {len}");
    }
    let mut longer = ticket.clone();
    longer.push(0);
    assert_eq!(ticketer.decrypt(&longer), None);
}

/// Runs a TLS handshake between the two in memory, and the tickets after it.
fn handshake(client: &mut ClientConnection, server: &mut ServerConnection) {
    for _ in 0..32 {
        let mut to_server = Vec::new();
        client.write_tls(&mut to_server).unwrap();
        server.read_tls(&mut to_server.as_slice()).unwrap();
        server.process_new_packets().unwrap();
        let mut to_client = Vec::new();
        server.write_tls(&mut to_client).unwrap();
        client.read_tls(&mut to_client.as_slice()).unwrap();
        client.process_new_packets().unwrap();
        if to_server.is_empty() && to_client.is_empty() && !client.is_handshaking() {
            return;
        }
    }
    panic!("the handshake did not finish");
}

#[test]
fn a_session_ticket_resumes_at_the_next_generation() {
    let dir = tempfile::tempdir().unwrap();
    let pki = handover_testkit::tls::Pki::new(dir.path());
    let server_with = |s: &Secrets| {
        let mut config = (*crate::tls::server_config(&pki.cert, &pki.key, &[]).unwrap()).clone();
        config.ticketer = s.ticketer();
        Arc::new(config)
    };
    let (first, next, stranger) = lineage();
    let kind_at = |client: &Arc<rustls::ClientConfig>, s: &Secrets| {
        let mut c =
            ClientConnection::new(Arc::clone(client), handover_testkit::tls::localhost()).unwrap();
        let mut srv = ServerConnection::new(server_with(s)).unwrap();
        handshake(&mut c, &mut srv);
        c.handshake_kind()
    };
    // One client (one ticket store) per case: a full handshake with the first generation
    // stores its tickets, then the second connection resumes with one of them, or not.
    let client = pki.client(&[]);
    assert_eq!(kind_at(&client, &first), Some(HandshakeKind::Full));
    assert_eq!(kind_at(&client, &next), Some(HandshakeKind::Resumed));

    let client = pki.client(&[]);
    assert_eq!(kind_at(&client, &first), Some(HandshakeKind::Full));
    assert_eq!(kind_at(&client, &stranger), Some(HandshakeKind::Full));
}
