//! Round trips of every message and every address form; strict decoding of broken ones, with
//! errors that name what is wrong; the size bound, through a real Unix datagram socket.

use super::*;

fn encoded(msg: &Message<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode(msg, &mut out);
    out
}

fn round_trip(msg: Message<'_>) {
    let bytes = encoded(&msg);
    assert_eq!(decode(&bytes), Ok(msg));
}

fn v6_src() -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new("fe80::1:2".parse().unwrap(), 4433, 0, 7))
}

fn samples(payload: &[u8]) -> Vec<Message<'_>> {
    vec![
        Message::Keys { secret: [0xab; 32] },
        Message::InFlight {
            handshakes: vec![(vec![1; 20], 1), (vec![], 2), (vec![3; 8], u64::MAX)],
        },
        Message::Forward {
            src: "127.0.0.1:50000".parse().unwrap(),
            dst_ip: Some("127.0.0.1".parse().unwrap()),
            ecn: 2,
            payload,
        },
        Message::Forward {
            src: v6_src(),
            dst_ip: Some("::1".parse().unwrap()),
            ecn: 3,
            payload,
        },
    ]
}

#[test]
fn every_message_round_trips() {
    for msg in samples(b"a datagram") {
        round_trip(msg);
    }
    round_trip(Message::InFlight { handshakes: vec![] });
    for ecn in 0..=3 {
        for dst_ip in [
            None,
            Some("10.0.0.1".parse().unwrap()),
            Some("2001:db8::9".parse().unwrap()),
        ] {
            for src in [
                "192.0.2.1:1".parse().unwrap(),
                "[::ffff:192.0.2.1]:65535".parse().unwrap(),
                v6_src(),
            ] {
                round_trip(Message::Forward {
                    src,
                    dst_ip,
                    ecn,
                    payload: &[0x40],
                });
            }
        }
    }
}

#[test]
fn the_largest_messages_round_trip() {
    let big = vec![0x5a; MAX_PAYLOAD];
    round_trip(Message::Forward {
        src: v6_src(),
        dst_ip: Some("::1".parse().unwrap()),
        ecn: 0,
        payload: &big,
    });
    let handshakes: Vec<_> = (0..MAX_IN_FLIGHT as u64)
        .map(|g| (vec![g as u8; 20], g))
        .collect();
    let msg = Message::InFlight { handshakes };
    assert!(encoded(&msg).len() <= MAX_MESSAGE);
    round_trip(msg);
}

#[test]
fn a_forward_of_the_largest_datagram_fits_in_one_unix_datagram() {
    let big: Vec<u8> = (0..MAX_PAYLOAD).map(|i| i as u8).collect();
    let msg = Message::Forward {
        src: v6_src(),
        dst_ip: Some("::1".parse().unwrap()),
        ecn: 1,
        payload: &big,
    };
    let bytes = encoded(&msg);
    assert_eq!(bytes.len(), MAX_MESSAGE);
    let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
    assert_eq!(a.send(&bytes).unwrap(), bytes.len());
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    let n = b.recv(&mut buf).unwrap();
    assert_eq!(n, MAX_MESSAGE);
    assert_eq!(decode(&buf[..n]), Ok(msg));
}

#[test]
fn every_truncation_is_an_error() {
    for msg in samples(b"0123456789") {
        let bytes = encoded(&msg);
        for cut in 0..bytes.len() {
            let err = decode(&bytes[..cut]).unwrap_err();
            let expected_empty = cut == 0;
            assert_eq!(
                matches!(err, WireError::Empty),
                expected_empty,
                "cut {cut}: {err}"
            );
            if cut > 0 {
                assert!(matches!(err, WireError::Truncated(_)), "cut {cut}: {err}");
            }
        }
    }
}

#[test]
fn trailing_bytes_are_an_error() {
    for msg in samples(b"0123456789") {
        let mut bytes = encoded(&msg);
        bytes.push(0);
        let err = decode(&bytes).unwrap_err();
        assert!(matches!(err, WireError::Trailing { extra: 1, .. }), "{err}");
    }
    let mut bytes = encoded(&Message::Keys { secret: [0; 32] });
    bytes.extend([1, 2, 3]);
    assert_eq!(
        decode(&bytes).unwrap_err().to_string(),
        "3 bytes after the end of a Keys message"
    );
}

#[test]
fn unknown_versions_and_tags_are_errors() {
    let mut bytes = encoded(&Message::Keys { secret: [0; 32] });
    bytes[0] = 2;
    assert_eq!(
        decode(&bytes).unwrap_err().to_string(),
        "message format version 2, this build speaks version 1"
    );
    for tag in [0u8, 4, 0xff] {
        assert_eq!(decode(&[VERSION, tag]), Err(WireError::UnknownTag(tag)));
    }
    assert_eq!(decode(&[]).unwrap_err().to_string(), "empty message");
    assert_eq!(
        decode(&[VERSION]).unwrap_err().to_string(),
        "message truncated in the tag"
    );
}

#[test]
fn in_flight_bounds_are_checked() {
    // A DCID of 21 bytes.
    let mut bytes = vec![VERSION, TAG_IN_FLIGHT, 0, 1, 21];
    bytes.extend([0u8; 21 + 8]);
    assert_eq!(decode(&bytes), Err(WireError::CidTooLong(21)));
    // An absurd count, refused before anything is allocated for it.
    let too_many = (MAX_IN_FLIGHT + 1) as u16;
    let mut bytes = vec![VERSION, TAG_IN_FLIGHT];
    bytes.extend(too_many.to_be_bytes());
    assert_eq!(decode(&bytes), Err(WireError::TooMany(MAX_IN_FLIGHT + 1)));
    assert_eq!(
        decode(&[VERSION, TAG_IN_FLIGHT, 0xff, 0xff])
            .unwrap_err()
            .to_string(),
        "65535 handshakes in one message (at most 2048)"
    );
    // A count larger than the entries present.
    let mut bytes = encoded(&Message::InFlight {
        handshakes: vec![(vec![1; 8], 5)],
    });
    bytes[3] = 2;
    assert_eq!(decode(&bytes), Err(WireError::Truncated("a DCID length")));
    // A count smaller than the entries present.
    bytes[3] = 0;
    assert!(matches!(decode(&bytes), Err(WireError::Trailing { .. })));
}

#[test]
fn forward_bounds_are_checked() {
    let good = encoded(&Message::Forward {
        src: "127.0.0.1:9".parse().unwrap(),
        dst_ip: None,
        ecn: 0,
        payload: b"x",
    });
    // Layout: version, tag, family (2), ip (3..7), port (7..9), dst family (9), ecn (10),
    // length (11..13), payload (13).
    let with = |i: usize, v: u8| {
        let mut b = good.clone();
        b[i] = v;
        decode(&b).map(|_| ()).unwrap_err()
    };
    assert_eq!(
        with(2, 5),
        WireError::Family {
            field: "the source",
            family: 5
        }
    );
    assert_eq!(
        with(9, 1).to_string(),
        "unknown address family 1 in the destination"
    );
    assert_eq!(with(10, 4), WireError::Ecn(4));
    // Length 0, and a length past MAX_PAYLOAD.
    let mut b = good.clone();
    b[11..13].copy_from_slice(&0u16.to_be_bytes());
    b.truncate(13);
    assert_eq!(decode(&b), Err(WireError::PayloadSize(0)));
    let mut b = good.clone();
    b[11..13].copy_from_slice(&65_528u16.to_be_bytes());
    assert_eq!(
        decode(&b).unwrap_err().to_string(),
        "forwarded datagram of 65528 bytes (1 to 65527)"
    );
    // A length past the bytes there.
    let mut b = good.clone();
    b[11..13].copy_from_slice(&2u16.to_be_bytes());
    assert_eq!(decode(&b), Err(WireError::Truncated("the datagram")));
}

#[test]
fn random_bytes_never_panic() {
    // xorshift64: reproducible noise, with valid headers half of the time so that the field
    // checks, not only the tag check, see it.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut ok = 0;
    for _ in 0..20_000 {
        let len = (next() % 80) as usize;
        let mut b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if b.len() >= 2 && next() % 2 == 0 {
            b[0] = VERSION;
            b[1] = 1 + (next() % 3) as u8;
        }
        if let Ok(msg) = decode(&b) {
            // Whatever decodes encodes back to the same bytes: one encoding per message.
            assert_eq!(encoded(&msg), b);
            ok += 1;
        }
    }
    assert!(ok > 0, "no random message decoded");
}

#[test]
#[should_panic(expected = "2049 handshakes in one InFlight message")]
fn encoding_too_many_handshakes_is_a_bug() {
    let handshakes = vec![(vec![], 1); MAX_IN_FLIGHT + 1];
    encoded(&Message::InFlight { handshakes });
}
