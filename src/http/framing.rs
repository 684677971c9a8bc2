//! Where each HTTP/1.1 request begins and ends in a connection's bytes, read beside hyper, for the two
//! things hyper does not tell its caller: when a client started sending a head (the header timeout counts
//! from there, see [`super::watchdog`]), and whether the head framed its body ambiguously.
//!
//! hyper takes a request with both `Content-Length` and `Transfer-Encoding: chunked` as chunked (RFC 9112,
//! section 6.3 allows that, provided the connection closes after the reply) and removes `Content-Length`
//! before the handler sees the request, so the handler cannot refuse it. Such a request is the shape of
//! request smuggling: a proxy in front that reads the other header sees another request boundary. nginx
//! answers 400, and so do we: [`RequestFraming`] follows the connection's bytes as hyper reads them (heads
//! line by line, bodies skipped by their declared length or by their chunk sizes) and gives one
//! [`Framing`] per head, in order, which the server pairs with the requests hyper hands it. Several
//! differing `Content-Length`s are ambiguous too (hyper already answers 400 to those itself).
//!
//! It parses no more than framing needs and trusts hyper for the rest: anything it does not follow (an
//! upgrade, `CONNECT`, a transfer coding that is not chunked, HTTP/2's preface) turns it off for the rest
//! of the connection, after which it reports nothing. Pure: bytes in, verdicts out.

use std::collections::VecDeque;

/// How a request head frames its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One framing, or none (no body).
    Clear,
    /// Framing that two readers could take two ways: the request must be refused (400) and the
    /// connection closed.
    Ambiguous(&'static str),
}

/// The longest part of a head line kept: enough for a header name and a length; longer values are not
/// needed to find the framing (and hyper refuses lengths that long).
const KEPT_LINE: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a request line: blank lines are skipped, as hyper skips them.
    Between,
    /// In a head (request line or header lines).
    Head,
    /// In a body of known length: this many bytes to skip.
    Body(u64),
    /// In a chunk-size line.
    ChunkSize,
    /// In a chunk's data: this many bytes to skip, then its line end.
    ChunkData(u64),
    /// After a chunk's data, up to its line end.
    ChunkEnd,
    /// In the trailer section after the last chunk.
    Trailers,
    /// Not following any more.
    Off,
}

/// What a head has said so far about its body.
#[derive(Debug, Default, Clone)]
struct HeadFacts {
    lines: usize,
    lengths: Vec<u64>,
    bad_length: bool,
    transfer_encoding: bool,
    chunked_last: bool,
    upgrade: bool,
}

/// Follows one connection's request framing. See the module doc.
#[derive(Debug, Clone)]
pub struct RequestFraming {
    state: State,
    line: Vec<u8>,
    head: HeadFacts,
    http2: bool,
}

impl Default for RequestFraming {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestFraming {
    pub fn new() -> Self {
        Self { state: State::Between, line: Vec::with_capacity(KEPT_LINE), head: HeadFacts::default(), http2: false }
    }

    /// Whether a request head has started and not ended.
    pub fn in_head(&self) -> bool {
        self.state == State::Head
    }

    /// Whether the connection opened with HTTP/2's preface.
    pub fn http2(&self) -> bool {
        self.http2
    }

    /// Reads the connection's next bytes; each head that ends in them adds its [`Framing`] to `verdicts`.
    pub fn feed(&mut self, mut bytes: &[u8], verdicts: &mut VecDeque<Framing>) {
        while !bytes.is_empty() {
            match self.state {
                State::Off => return,
                State::Body(left) | State::ChunkData(left) => {
                    let skip = left.min(bytes.len() as u64);
                    bytes = &bytes[skip as usize..];
                    let left = left - skip;
                    self.state = match (self.state, left) {
                        (State::Body(_), 0) => State::Between,
                        (State::Body(_), _) => State::Body(left),
                        (_, 0) => State::ChunkEnd,
                        _ => State::ChunkData(left),
                    };
                }
                State::Between => {
                    let skip = bytes.iter().position(|b| !matches!(b, b'\r' | b'\n')).unwrap_or(bytes.len());
                    bytes = &bytes[skip..];
                    if !bytes.is_empty() {
                        self.state = State::Head;
                        self.head = HeadFacts::default();
                    }
                }
                State::Head | State::ChunkSize | State::ChunkEnd | State::Trailers => {
                    let end = bytes.iter().position(|b| *b == b'\n');
                    let take = end.map_or(bytes.len(), |i| i + 1);
                    let (part, rest) = bytes.split_at(take);
                    let keep = KEPT_LINE.saturating_sub(self.line.len()).min(part.len());
                    self.line.extend_from_slice(&part[..keep]);
                    bytes = rest;
                    if end.is_some() {
                        let line = std::mem::take(&mut self.line);
                        self.end_of_line(trim_line(&line), verdicts);
                        self.line = line;
                        self.line.clear();
                    }
                }
            }
        }
    }

    fn end_of_line(&mut self, line: &[u8], verdicts: &mut VecDeque<Framing>) {
        match self.state {
            State::Head if line.is_empty() => self.state = self.end_of_head(verdicts),
            State::Head => {
                self.head.lines += 1;
                if self.head.lines == 1 {
                    self.request_line(line);
                } else {
                    self.header_line(line);
                }
            }
            State::ChunkSize => {
                let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
                let size = std::str::from_utf8(&line[..digits]).ok().and_then(|h| u64::from_str_radix(h, 16).ok());
                self.state = match size {
                    Some(0) => State::Trailers,
                    Some(n) => State::ChunkData(n),
                    None => State::Off, // hyper refuses it
                };
            }
            State::ChunkEnd => self.state = State::ChunkSize,
            State::Trailers if line.is_empty() => self.state = State::Between,
            _ => {}
        }
    }

    fn request_line(&mut self, line: &[u8]) {
        if line.starts_with(b"PRI * HTTP/2") {
            self.http2 = true;
            self.state = State::Off;
        } else if line.starts_with(b"CONNECT ") {
            self.head.upgrade = true;
        }
    }

    fn header_line(&mut self, line: &[u8]) {
        let Some(colon) = line.iter().position(|b| *b == b':') else { return };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            // A list ("5, 5") counts as its values, as hyper reads it.
            for v in value.split(|b| *b == b',').map(trim) {
                match std::str::from_utf8(v)
                    .ok()
                    .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse().ok())
                {
                    Some(n) => self.head.lengths.push(n),
                    None => self.head.bad_length = true,
                }
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.head.transfer_encoding = true;
            let last = value.rsplit(|b| *b == b',').next().map(trim).unwrap_or_default();
            self.head.chunked_last = last.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            self.head.upgrade = true;
        }
    }

    fn end_of_head(&mut self, verdicts: &mut VecDeque<Framing>) -> State {
        let head = std::mem::take(&mut self.head);
        let framing = verdict(&head);
        verdicts.push_back(framing);
        match framing {
            Framing::Ambiguous(_) => State::Off, // refused, and the connection closes
            Framing::Clear if head.upgrade || head.bad_length => State::Off,
            Framing::Clear if head.transfer_encoding && head.chunked_last => State::ChunkSize,
            Framing::Clear if head.transfer_encoding => State::Off, // hyper refuses it
            Framing::Clear => match head.lengths.first() {
                Some(&n) if n > 0 => State::Body(n),
                _ => State::Between,
            },
        }
    }
}

/// The framing verdict on a whole head.
fn verdict(head: &HeadFacts) -> Framing {
    if head.transfer_encoding && (!head.lengths.is_empty() || head.bad_length) {
        Framing::Ambiguous("both Content-Length and Transfer-Encoding")
    } else if head.lengths.windows(2).any(|w| w[0] != w[1]) {
        Framing::Ambiguous("several differing Content-Lengths")
    } else {
        Framing::Clear
    }
}

fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn verdicts_of(chunks: &[&[u8]]) -> Vec<Framing> {
        let mut framing = RequestFraming::new();
        let mut out = VecDeque::new();
        for c in chunks {
            framing.feed(c, &mut out);
        }
        out.into()
    }

    const GET: &[u8] = b"GET /live/s/index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n";
    const AMBIGUOUS: &str = "both Content-Length and Transfer-Encoding";

    #[test]
    fn each_pipelined_request_gets_its_verdict() {
        let put = b"PUT /live/s/a.ts HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        let chunked = b"PUT /live/s/b.ts HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let all = [GET, put.as_slice(), chunked.as_slice(), GET].concat();
        assert_eq!(verdicts_of(&[&all]), vec![Framing::Clear; 4]);
        // The same bytes a byte at a time.
        let bytes: Vec<&[u8]> = all.chunks(1).collect();
        assert_eq!(verdicts_of(&bytes), vec![Framing::Clear; 4]);
    }

    #[test]
    fn a_body_that_looks_like_a_head_is_skipped() {
        let body = b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let put = [format!("PUT /x HTTP/1.1\r\ncontent-length: {}\r\n\r\n", body.len()).as_bytes(), body].concat();
        assert_eq!(verdicts_of(&[&put, GET]), vec![Framing::Clear, Framing::Clear]);
    }

    #[test]
    fn length_with_transfer_encoding_is_ambiguous_in_either_order() {
        for head in [
            "POST /x HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\ncontent-length: 4\r\n\r\n",
            "POST /x HTTP/1.1\r\nTRANSFER-ENCODING: gzip, chunked\r\nContent-Length:4\r\n\r\n",
            "POST /x HTTP/1.1\nContent-Length: 4\nTransfer-Encoding: chunked\n\n",
        ] {
            assert_eq!(verdicts_of(&[head.as_bytes()]), [Framing::Ambiguous(AMBIGUOUS)], "{head:?}");
        }
        let differing = b"PUT /x HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(verdicts_of(&[differing]), [Framing::Ambiguous("several differing Content-Lengths")]);
        let listed = b"PUT /x HTTP/1.1\r\nContent-Length: 4, 5\r\n\r\n";
        assert_eq!(verdicts_of(&[listed]), [Framing::Ambiguous("several differing Content-Lengths")]);
        let same = b"PUT /x HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd";
        assert_eq!(verdicts_of(&[same, GET]), [Framing::Clear, Framing::Clear]);
    }

    #[test]
    fn heads_are_seen_from_their_first_byte_to_their_blank_line() {
        let mut framing = RequestFraming::new();
        let mut out = VecDeque::new();
        framing.feed(b"\r\n", &mut out);
        assert!(!framing.in_head(), "blank lines before a request are not a head");
        framing.feed(b"GET / HTTP/1.1\r\nX-a: ", &mut out);
        assert!(framing.in_head());
        framing.feed(b"1\r\n\r", &mut out);
        assert!(framing.in_head());
        framing.feed(b"\n", &mut out);
        assert!(!framing.in_head() && out.len() == 1);
    }

    #[test]
    fn http2_and_upgrades_turn_it_off() {
        let mut framing = RequestFraming::new();
        let mut out = VecDeque::new();
        framing.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04", &mut out);
        assert!(framing.http2() && !framing.in_head() && out.is_empty());
        let upgrade = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(verdicts_of(&[upgrade, GET]), [Framing::Clear]);
    }

    proptest! {
        /// However the bytes of a sequence of clear requests are cut into reads, each gets one verdict,
        /// `Clear`, and the tracker ends between requests.
        #[test]
        fn any_cut_of_clear_requests_reads_the_same(
            bodies in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..40), any::<bool>()), 1..6),
            cuts in proptest::collection::vec(1usize..30, 1..50),
        ) {
            let mut all = Vec::new();
            for (body, chunked) in &bodies {
                if *chunked {
                    all.extend_from_slice(b"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
                    for piece in body.chunks(7) {
                        all.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                        all.extend_from_slice(piece);
                        all.extend_from_slice(b"\r\n");
                    }
                    all.extend_from_slice(b"0\r\n\r\n");
                } else {
                    all.extend_from_slice(format!("PUT /l HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
                    all.extend_from_slice(body);
                }
            }
            let mut framing = RequestFraming::new();
            let mut out = VecDeque::new();
            let mut rest = all.as_slice();
            for cut in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (now, later) = rest.split_at((*cut).min(rest.len()));
                framing.feed(now, &mut out);
                rest = later;
            }
            prop_assert_eq!(Vec::from(out), vec![Framing::Clear; bodies.len()]);
            prop_assert_eq!(framing.state, State::Between);
        }
    }
}
