use super::*;
use proptest::prelude::*;

fn enc(f: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    f.encode(&mut out);
    out
}

fn stream(s: &str) -> StreamName {
    StreamName::new(s).unwrap()
}

fn node(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

fn segment() -> ObjectHeader {
    ObjectHeader {
        stream: stream("news"),
        name: ObjectName::new("seg12.ts").unwrap(),
        version: 1,
        seq: 12,
        content_type: "video/mp2t".into(),
        duration_ms: 6000,
        born_unix_ms: 1_700_000_000_000,
        len: 1_500_000,
    }
}

/// One of each frame: the seeds of the fuzz corpus.
fn samples() -> Vec<Frame> {
    vec![
        Frame::Hello { node: node("edge-eu-1"), protocol: PROTOCOL_VERSION },
        Frame::Announce { stream: stream("news"), origin: node("origin-us"), epoch: 3, backup: false },
        Frame::Withdraw { stream: stream("news"), origin: node("origin-us"), epoch: 3 },
        Frame::Subscribe { stream: stream("news") },
        Frame::Unsubscribe { stream: stream("news") },
        Frame::Unavailable { stream: stream("news") },
        Frame::Object(segment()),
        Frame::Routes(Routes {
            version: 7,
            routes: vec![Route { dest: node("origin-us"), via: node("relay-a"), backup: Some(node("relay-b")) }],
        }),
        Frame::Takedown { stream: stream("news"), version: 9, active: true, reason: "court order 12".into() },
        Frame::Report(Report {
            node: node("relay-a"),
            links: vec![LinkReport { peer: node("edge-eu-1"), rtt_us: 12_000, jitter_us: 400, loss_ppm: 0, up: true }],
            streams: vec![StreamReport {
                stream: stream("news"),
                origin: node("origin-us"),
                upstream: Some(node("origin-us")),
                epoch: 3,
                phase: StreamPhase::Live,
                viewers: 0,
            }],
            takedowns: Vec::new(),
            draining: true,
        }),
    ]
}

/// A frame of type `ty` around `payload`, bypassing `encode`'s checks.
fn raw(ty: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![ty];
    varint::put(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    out
}

#[test]
fn subscribe_has_a_stable_encoding() {
    assert_eq!(enc(&Frame::Subscribe { stream: stream("news") }), b"\x04\x05\x04news");
    let hello = enc(&Frame::Hello { node: node("a"), protocol: 1 });
    assert_eq!(hello, b"\x01\x03\x01a\x01");
}

#[test]
fn samples_round_trip() {
    for f in samples() {
        let bytes = enc(&f);
        assert_eq!(Frame::decode(&bytes), Ok((f, bytes.len())));
    }
}

#[test]
fn unknown_type_is_rejected_at_once() {
    assert_eq!(Frame::decode(&[0x00]), Err(DecodeError::UnknownType(0)));
    assert_eq!(Frame::decode(&[0xff, 0x00]), Err(DecodeError::UnknownType(0xff)));
    assert_eq!(Frame::decode(&[]), Err(DecodeError::Incomplete));
}

#[test]
fn too_large_is_rejected_before_the_payload_arrives() {
    // Type, then a 4-byte varint declaring a 65,536-byte payload, and nothing else.
    assert_eq!(Frame::decode(&[OBJECT, 0x80, 0x01, 0x00, 0x00]), Err(DecodeError::TooLarge(65_536)));
    // The largest payload that fits is still only incomplete.
    let fits = (MAX_FRAME - 1 - 4) as u64;
    let mut head = vec![OBJECT];
    varint::put(fits, &mut head);
    assert_eq!(Frame::decode(&head), Err(DecodeError::Incomplete));
    head.truncate(1);
    varint::put(fits + 1, &mut head);
    assert_eq!(Frame::decode(&head), Err(DecodeError::TooLarge(fits + 1)));
}

#[test]
fn payload_must_hold_exactly_its_fields() {
    let mut long = enc(&Frame::Subscribe { stream: stream("news") })[2..].to_vec();
    long.push(0);
    assert!(matches!(Frame::decode(&raw(SUBSCRIBE, &long)), Err(DecodeError::Malformed(_))));
    // A string longer than the payload around it.
    assert!(matches!(Frame::decode(&raw(SUBSCRIBE, b"\x05news")), Err(DecodeError::Malformed(_))));
    // Announce without its epoch.
    assert!(matches!(Frame::decode(&raw(ANNOUNCE, b"\x01a\x01b")), Err(DecodeError::Malformed(_))));
    assert!(matches!(Frame::decode(&raw(UNSUBSCRIBE, b"")), Err(DecodeError::Malformed(_))));
}

#[test]
fn fields_are_validated() {
    let bad_name = raw(SUBSCRIBE, b"\x02..");
    assert!(matches!(Frame::decode(&bad_name), Err(DecodeError::BadName(_))));
    assert_eq!(Frame::decode(&raw(SUBSCRIBE, b"\x02\xc3\x28")), Err(DecodeError::BadString));
    // protocol = 2^32 does not fit u32.
    let mut hello = b"\x01a".to_vec();
    varint::put(1 << 32, &mut hello);
    assert!(matches!(Frame::decode(&raw(HELLO, &hello)), Err(DecodeError::Malformed(_))));

    for ct in ["video/mp2t\n", &"x".repeat(128)] {
        let f = Frame::Object(ObjectHeader { content_type: ct.into(), ..segment() });
        assert_eq!(Frame::decode(&enc(&f)), Err(DecodeError::BadContentType));
    }
    assert!(is_valid_content_type("video/mp4; codecs=\"avc1.64001f\""));

    for reason in ["line\nbreak", &"x".repeat(MAX_REASON + 1)] {
        let f = Frame::Takedown { stream: stream("news"), version: 1, active: true, reason: reason.into() };
        assert_eq!(Frame::decode(&enc(&f)), Err(DecodeError::BadReason));
    }
    // An announcement's backup flag is 0 or 1.
    assert!(matches!(Frame::decode(&raw(ANNOUNCE, b"\x01a\x01b\x01\x02")), Err(DecodeError::Malformed(_))));
}

#[test]
fn decode_from_waits_for_the_whole_frame() {
    let mut wire = Vec::new();
    for f in samples() {
        f.encode(&mut wire);
    }
    let mut buf = bytes::BytesMut::new();
    let mut got = Vec::new();
    for &b in &wire {
        buf.extend_from_slice(&[b]);
        while let Some(f) = decode_from(&mut buf).unwrap() {
            got.push(f);
        }
    }
    assert_eq!(got, samples());
    assert!(buf.is_empty());

    buf.extend_from_slice(&[0x0b]);
    assert_eq!(decode_from(&mut buf), Err(DecodeError::UnknownType(0x0b)));
}

const SEEDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/wire_decode");

/// Rewrites the fuzz target's seeds: `cargo test --lib write_seed_corpus -- --ignored`.
#[test]
#[ignore = "writes fuzz/seeds/wire_decode"]
fn write_seed_corpus() {
    std::fs::create_dir_all(SEEDS).unwrap();
    let named = [
        "hello",
        "announce",
        "withdraw",
        "subscribe",
        "unsubscribe",
        "unavailable",
        "object",
        "routes",
        "takedown",
        "report",
    ];
    for (name, f) in named.iter().zip(samples()) {
        std::fs::write(format!("{SEEDS}/{name}"), enc(&f)).unwrap();
    }
    std::fs::write(format!("{SEEDS}/too-large"), [OBJECT, 0x80, 0x01, 0x00, 0x00]).unwrap();
}

#[test]
fn fuzz_seeds_decode() {
    let mut seeds = 0;
    for entry in std::fs::read_dir(SEEDS).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        if let Ok((f, used)) = Frame::decode(&bytes) {
            assert_eq!(enc(&f), bytes[..used]);
            seeds += 1;
        }
    }
    assert!(seeds >= samples().len(), "only {seeds} seeds decode");
}

fn node_id() -> impl Strategy<Value = NodeId> {
    "[A-Za-z0-9_][A-Za-z0-9_-]{0,62}".prop_map(|s| NodeId::new(s).unwrap())
}

fn stream_name() -> impl Strategy<Value = StreamName> {
    "[A-Za-z0-9_][A-Za-z0-9_-]{0,63}".prop_map(|s| StreamName::new(s).unwrap())
}

fn object_name() -> impl Strategy<Value = ObjectName> {
    "[A-Za-z0-9_][A-Za-z0-9._-]{0,127}".prop_map(|s| ObjectName::new(s).unwrap())
}

/// Integers of every varint length, not just the 8-byte ones a uniform draw would give.
fn int() -> impl Strategy<Value = u64> {
    prop_oneof![0..64u64, 0..1u64 << 14, 0..1u64 << 30, 0..=VARINT_MAX]
}

fn frame() -> impl Strategy<Value = Frame> {
    let header = ((stream_name(), object_name(), int(), int()), ("[ -~]{0,127}", any::<u32>(), int(), int())).prop_map(
        |((stream, name, version, seq), (content_type, duration_ms, born_unix_ms, len))| ObjectHeader {
            stream,
            name,
            version,
            seq,
            content_type,
            duration_ms,
            born_unix_ms,
            len,
        },
    );
    prop_oneof![
        (node_id(), any::<u32>()).prop_map(|(node, protocol)| Frame::Hello { node, protocol }),
        (stream_name(), node_id(), int(), any::<bool>()).prop_map(|(stream, origin, epoch, backup)| Frame::Announce {
            stream,
            origin,
            epoch,
            backup
        }),
        (stream_name(), node_id(), int()).prop_map(|(stream, origin, epoch)| Frame::Withdraw { stream, origin, epoch }),
        stream_name().prop_map(|stream| Frame::Subscribe { stream }),
        stream_name().prop_map(|stream| Frame::Unsubscribe { stream }),
        stream_name().prop_map(|stream| Frame::Unavailable { stream }),
        header.prop_map(Frame::Object),
        report().prop_map(Frame::Report),
        routes().prop_map(Frame::Routes),
        (stream_name(), int(), any::<bool>(), "[^\\p{Cc}]{0,60}")
            .prop_map(|(stream, version, active, reason)| Frame::Takedown { stream, version, active, reason }),
    ]
}

fn report() -> impl Strategy<Value = Report> {
    let link = (node_id(), int(), int(), any::<u32>(), any::<bool>())
        .prop_map(|(peer, rtt_us, jitter_us, loss_ppm, up)| LinkReport { peer, rtt_us, jitter_us, loss_ppm, up });
    let phase = prop_oneof![Just(StreamPhase::Live), Just(StreamPhase::Ended), Just(StreamPhase::TakenDown)];
    let stream = (stream_name(), node_id(), proptest::option::of(node_id()), int(), phase, any::<u32>()).prop_map(
        |(stream, origin, upstream, epoch, phase, viewers)| StreamReport {
            stream,
            origin,
            upstream,
            epoch,
            phase,
            viewers,
        },
    );
    (node_id(), proptest::collection::vec(link, 0..6), proptest::collection::vec(stream, 0..6)).prop_flat_map(
        |(node, links, streams)| {
            let takedown = (stream_name(), int(), any::<bool>(), "[^\\p{Cc}]{0,30}")
                .prop_map(|(s, version, active, reason)| (s, Takedown { version, active, reason }));
            (proptest::collection::vec(takedown, 0..3), any::<bool>()).prop_map(move |(takedowns, draining)| Report {
                node: node.clone(),
                links: links.clone(),
                streams: streams.clone(),
                takedowns,
                draining,
            })
        },
    )
}

fn routes() -> impl Strategy<Value = Routes> {
    let route = (node_id(), node_id(), proptest::option::of(node_id())).prop_map(|(dest, via, backup)| Route {
        dest,
        via,
        backup,
    });
    (int(), proptest::collection::vec(route, 0..8)).prop_map(|(version, routes)| Routes { version, routes })
}

proptest! {
    #[test]
    fn round_trips_using_its_exact_length(f in frame(), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
        let mut bytes = enc(&f);
        let len = bytes.len();
        bytes.extend_from_slice(&tail);
        prop_assert_eq!(Frame::decode(&bytes), Ok((f, len)));
    }

    #[test]
    fn every_strict_prefix_is_incomplete(f in frame()) {
        let bytes = enc(&f);
        for end in 0..bytes.len() {
            prop_assert_eq!(Frame::decode(&bytes[..end]), Err(DecodeError::Incomplete), "prefix of {}", end);
        }
    }

    #[test]
    fn concatenated_frames_decode_in_order(frames in proptest::collection::vec(frame(), 0..8)) {
        let mut bytes = Vec::new();
        for f in &frames {
            f.encode(&mut bytes);
        }
        let mut rest = &bytes[..];
        let mut got = Vec::new();
        while !rest.is_empty() {
            let (f, used) = Frame::decode(rest).unwrap();
            got.push(f);
            rest = &rest[used..];
        }
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn probes_round_trip_and_only_nine_bytes_decode(seq in any::<u64>(), reply in any::<bool>(), junk in proptest::collection::vec(any::<u8>(), 0..20)) {
        let p = if reply { Probe::Reply { seq } } else { Probe::Request { seq } };
        prop_assert_eq!(Probe::decode(&p.encode()), Ok(p));
        if let Ok(q) = Probe::decode(&junk) {
            prop_assert_eq!(&q.encode()[..], &junk[..]);
        }
    }

    /// Arbitrary bytes never panic, and whatever decodes re-encodes to the bytes it came from.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok((f, used)) = Frame::decode(&bytes) {
            prop_assert_eq!(enc(&f), &bytes[..used]);
        }
    }

    /// Like the above, but starting from a valid frame with one byte changed, which reaches far more of
    /// the decoder than random bytes do.
    #[test]
    fn mutated_frames_never_panic(f in frame(), at in any::<prop::sample::Index>(), to in any::<u8>()) {
        let mut bytes = enc(&f);
        let i = at.index(bytes.len());
        bytes[i] = to;
        if let Ok((f, used)) = Frame::decode(&bytes) {
            prop_assert_eq!(enc(&f), &bytes[..used]);
        }
    }
}
