//! The corpus: crafted HTTP/1 requests, what the proxy must answer, and what the worker must
//! have received. The rules are those of the smuggling-hardening issue (framing headers are
//! never hop-by-hop; Transfer-Encoding is a single `chunked` or 501/400; strict chunked
//! bodies, re-framed; strict heads; Host rules; HTTP/1.0; upgrades); the desync families are
//! the published ones (CL.TE, TE.CL, TE.TE obfuscations, chunk-size and extension tricks,
//! `Connection`-named framing headers, pipelining behind ambiguous bodies).

/// What the worker must have seen of one header.
pub enum Hv {
    /// Exactly one value, this one.
    Is(&'static str),
    /// None.
    Absent,
    /// Exactly one value: the proxy's own address (`127.0.0.1:<port>`).
    ProxyAddr,
    /// Present or not, but no value has this comma-separated token (case-insensitive).
    NoToken(&'static str),
}

/// A request the worker must have recorded (and whose answer the client must have got).
pub struct Fwd {
    pub method: &'static str,
    pub target: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, Hv)>,
}

impl Fwd {
    /// With header `name` as `hv`.
    fn h(mut self, name: &'static str, hv: Hv) -> Fwd {
        self.headers.push((name, hv));
        self
    }

    fn body(mut self, b: impl AsRef<[u8]>) -> Fwd {
        self.body = b.as_ref().to_vec();
        self
    }
}

fn fwd(method: &'static str, target: &'static str) -> Fwd {
    Fwd {
        method,
        target,
        body: Vec::new(),
        headers: Vec::new(),
    }
}

/// What the proxy must do with a case.
pub enum Want {
    /// Answer with one of these statuses, close the connection, forward nothing.
    Refused(&'static [u16]),
    /// Forward these requests (in order) and pass their answers back.
    Served(Vec<Fwd>),
    /// As `Served`, then close the client connection.
    ServedThenClosed(Vec<Fwd>),
    /// As `Served`, then either serve the extra request as a request of its own (its answer
    /// to this client) or close the connection without forwarding it.
    ServedThenMaybe(Vec<Fwd>, Fwd),
}

/// One crafted request.
pub struct Case {
    pub name: &'static str,
    pub raw: Vec<u8>,
    pub want: Want,
    /// Bytes the worker must never have read on any connection (client chunk extensions,
    /// chunk sizes, trailer fields the proxy must drop): proof that bodies are re-framed.
    pub never_raw: Vec<&'static [u8]>,
}

use Hv::*;
use Want::*;

const BAD: &[u16] = &[400];
const UNKNOWN_CODING: &[u16] = &[501];
/// Where the rules give either answer (an unknown coding that is also a syntax
/// fault, or a bad coding together with Content-Length): refused is what matters.
const BAD_OR_UNKNOWN: &[u16] = &[400, 501];

/// A request line the worker must never see as a request of its own.
pub const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
/// Its length, as a Content-Length says it.
const SMUGGLED_LEN: &str = "35";

fn case(name: &'static str, raw: impl AsRef<[u8]>, want: Want) -> Case {
    Case {
        name,
        raw: raw.as_ref().to_vec(),
        want,
        never_raw: Vec::new(),
    }
}

/// A case whose body is re-framed: `never` must not reach the worker.
fn reframed(name: &'static str, raw: impl AsRef<[u8]>, want: Want, never: &'static [u8]) -> Case {
    Case {
        never_raw: vec![never],
        ..case(name, raw, want)
    }
}

/// `POST <target>` with `Transfer-Encoding: chunked` and the chunked body `body`.
fn chunked(target: &str, body: &str) -> String {
    format!("POST {target} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{body}")
}

/// `POST <target>` with head lines `lines` (each ending in CRLF) and then `body`.
fn post(target: &str, lines: &str, body: &str) -> String {
    format!("POST {target} HTTP/1.1\r\nHost: t\r\n{lines}\r\n{body}")
}

/// Served as one POST with body `hello`.
fn hello(target: &'static str) -> Want {
    Served(vec![fwd("POST", target).body("hello")])
}

/// The smuggled request, its length, and a chunked body carrying it.
fn smuggled() -> (&'static str, usize, String) {
    let s = SMUGGLED;
    assert_eq!(s.len().to_string(), SMUGGLED_LEN);
    (s, s.len(), format!("{:x}\r\n{s}\r\n0\r\n\r\n", s.len()))
}

/// Every group of the corpus, by name.
pub fn groups() -> Vec<(&'static str, Vec<Case>)> {
    vec![
        ("baseline", baseline()),
        ("cl_te", cl_te()),
        ("te_te", te_te()),
        ("chunked_bodies", chunked_bodies()),
        ("connection", connection()),
        ("host", host()),
        ("heads", heads()),
        ("expect", expect()),
        ("upgrades", upgrades()),
    ]
}

/// What must keep working: plain requests, both body framings, pipelining.
pub fn baseline() -> Vec<Case> {
    vec![
        case(
            "plain GET",
            "GET /plain HTTP/1.1\r\nHost: t\r\n\r\n",
            Served(vec![fwd("GET", "/plain").h("host", Is("t"))]),
        ),
        case(
            "Content-Length body",
            post("/cl", "Content-Length: 5\r\n", "hello"),
            Served(vec![fwd("POST", "/cl")
                .body("hello")
                .h("content-length", Is("5"))
                .h("transfer-encoding", Absent)]),
        ),
        case(
            "chunked body",
            chunked("/chunked", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            Served(vec![fwd("POST", "/chunked")
                .body("hello world")
                .h("transfer-encoding", Is("chunked"))
                .h("content-length", Absent)]),
        ),
        case(
            "two pipelined GETs",
            "GET /p1 HTTP/1.1\r\nHost: t\r\n\r\nGET /p2 HTTP/1.1\r\nHost: t\r\n\r\n",
            Served(vec![fwd("GET", "/p1"), fwd("GET", "/p2")]),
        ),
        case(
            "Content-Length: 0",
            post("/cl0", "Content-Length: 0\r\n", ""),
            Served(vec![fwd("POST", "/cl0")]),
        ),
        case(
            "X-Forwarded-For from the client is replaced",
            "GET /xff HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
            Served(vec![
                fwd("GET", "/xff").h("x-forwarded-for", Is("127.0.0.1"))
            ]),
        ),
    ]
}

/// CL.TE and TE.CL: both framings at once, and Content-Length tricks.
pub fn cl_te() -> Vec<Case> {
    let (s, _, chunked_s) = smuggled();
    vec![
        case(
            "CL.TE: Content-Length then Transfer-Encoding, smuggled request in the body",
            post(
                "/cl-te",
                "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
                &format!("0\r\n\r\n{s}"),
            ),
            Refused(BAD),
        ),
        case(
            "TE.CL: Transfer-Encoding then Content-Length",
            post(
                "/te-cl",
                "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
                &chunked_s,
            ),
            Refused(BAD),
        ),
        case(
            "TE.CL, lowercase names",
            post(
                "/te-cl-lower",
                "transfer-encoding: chunked\r\ncontent-length: 3\r\n",
                &chunked_s,
            ),
            Refused(BAD),
        ),
        case(
            "Content-Length with Transfer-Encoding: xchunked",
            post(
                "/cl-xchunked",
                "Content-Length: 5\r\nTransfer-Encoding: xchunked\r\n",
                "hello",
            ),
            Refused(BAD_OR_UNKNOWN),
        ),
        case(
            "Content-Length with Transfer-Encoding: identity",
            post(
                "/cl-identity",
                "Content-Length: 5\r\nTransfer-Encoding: identity\r\n",
                "hello",
            ),
            Refused(BAD_OR_UNKNOWN),
        ),
        case(
            "two different Content-Lengths",
            post(
                "/cl-cl",
                "Content-Length: 5\r\nContent-Length: 6\r\n",
                "hello!",
            ),
            Refused(BAD),
        ),
        case(
            "a Content-Length list",
            post("/cl-list", "Content-Length: 5, 6\r\n", "hello!"),
            Refused(BAD),
        ),
        case(
            "Content-Length: +5",
            post("/cl-plus", "Content-Length: +5\r\n", "hello"),
            Refused(BAD),
        ),
        case(
            "Content-Length: -1",
            post("/cl-minus", "Content-Length: -1\r\n", "hello"),
            Refused(BAD),
        ),
        case(
            "Content-Length: 0x5",
            post("/cl-hex", "Content-Length: 0x5\r\n", "hello"),
            Refused(BAD),
        ),
        case(
            "Content-Length overflowing 64 bits",
            post(
                "/cl-overflow",
                "Content-Length: 18446744073709551621\r\n",
                "hello",
            ),
            Refused(BAD),
        ),
        case(
            "Content-Length: 5 5",
            post("/cl-space", "Content-Length: 5 5\r\n", "hello"),
            Refused(BAD),
        ),
        case(
            "whitespace before the colon of Content-Length",
            post("/cl-colon", "Content-Length : 5\r\n", "hello"),
            Refused(BAD),
        ),
        case(
            "Content-Length with tabs around the value",
            post("/cl-tabs", "Content-Length:\t5\t\r\n", "hello"),
            Served(vec![fwd("POST", "/cl-tabs")
                .body("hello")
                .h("content-length", Is("5"))]),
        ),
        // The smuggled request behind a Content-Length the proxy must not honour.
        case(
            "CL.TE with xchunked and a smuggled request",
            post(
                "/cl-xchunked-smuggle",
                "Content-Length: 6\r\nTransfer-Encoding: xchunked\r\n",
                &format!("0\r\n\r\n{s}"),
            ),
            Refused(BAD_OR_UNKNOWN),
        ),
    ]
}

/// TE.TE: obfuscated Transfer-Encoding; HTTP/1.0 with chunked.
pub fn te_te() -> Vec<Case> {
    let (_, _, chunked_s) = smuggled();
    vec![
        case(
            "whitespace before the colon of Transfer-Encoding (with Content-Length)",
            post(
                "/te-colon",
                "Content-Length: 4\r\nTransfer-Encoding : chunked\r\n",
                &chunked_s,
            ),
            Refused(BAD),
        ),
        case(
            "Transfer-Encoding: xchunked",
            post("/xchunked", "Transfer-Encoding: xchunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            Refused(UNKNOWN_CODING),
        ),
        case(
            "Transfer-Encoding with tabs around chunked",
            post("/te-tabs", "Transfer-Encoding:\tchunked\t\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            hello("/te-tabs"),
        ),
        case(
            "Transfer-Encoding: \"chunked\" (quoted)",
            post("/te-quoted", "Transfer-Encoding: \"chunked\"\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            Refused(BAD_OR_UNKNOWN),
        ),
        case(
            "Transfer-Encoding: chunked twice (two fields)",
            post(
                "/te-twice",
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            Refused(BAD),
        ),
        case(
            "Transfer-Encoding: chunked, then a field saying identity",
            post(
                "/te-chunked-identity",
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            Refused(BAD_OR_UNKNOWN),
        ),
        case(
            "Transfer-Encoding: identity",
            post("/te-identity", "Transfer-Encoding: identity\r\n", "hello"),
            Refused(UNKNOWN_CODING),
        ),
        case(
            "Transfer-Encoding: gzip, chunked",
            post("/te-gzip-chunked", "Transfer-Encoding: gzip, chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            Refused(UNKNOWN_CODING),
        ),
        case(
            "Transfer-Encoding: chunked, gzip",
            post("/te-chunked-gzip", "Transfer-Encoding: chunked, gzip\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            Refused(BAD_OR_UNKNOWN),
        ),
        case(
            "Transfer-Encoding: chunked, chunked",
            post("/te-chunked-chunked", "Transfer-Encoding: chunked, chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            Refused(BAD),
        ),
        case(
            "empty Transfer-Encoding with Content-Length",
            post("/te-empty", "Content-Length: 5\r\nTransfer-Encoding: \r\n", "hello"),
            Refused(BAD),
        ),
        case(
            "Transfer-Encoding value on an obs-fold line",
            post("/te-fold", "Transfer-Encoding:\r\n chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            Refused(BAD),
        ),
        case(
            "Transfer-Encoding folded into another field, with Content-Length",
            post(
                "/te-fold-other",
                "Content-Length: 5\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n",
                "hello",
            ),
            Refused(BAD),
        ),
        case(
            "Transfer-Encoding line ended by a bare LF",
            post("/te-lf", "Transfer-Encoding: chunked\n", "5\r\nhello\r\n0\r\n\r\n"),
            Refused(BAD),
        ),
        case(
            "Transfer-Encoding: CHUNKED (uppercase)",
            post("/te-upper", "Transfer-Encoding: CHUNKED\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            hello("/te-upper"),
        ),
        case(
            "Transfer-Encoding with a vertical tab before chunked",
            post("/te-vt", "Transfer-Encoding: \x0bchunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            Refused(BAD_OR_UNKNOWN),
        ),
        case(
            "NUL after chunked in Transfer-Encoding",
            post("/te-nul", "Transfer-Encoding: chunked\0\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            Refused(BAD),
        ),
        case(
            "Transfer_Encoding (underscore) is refused: CGI/WSGI workers read it as Transfer-Encoding",
            post(
                "/te-underscore",
                "Transfer_Encoding: chunked\r\nContent-Length: 5\r\n",
                "hello",
            ),
            Refused(BAD),
        ),
        case(
            "HTTP/1.0 with Transfer-Encoding: chunked is served, then closed",
            "POST /te-http10 HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            ServedThenClosed(vec![fwd("POST", "/te-http10").body("hello")]),
        ),
        case(
            "HTTP/1.0 keep-alive with Transfer-Encoding: chunked is served, then closed",
            "POST /te-http10-ka HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            ServedThenClosed(vec![fwd("POST", "/te-http10-ka").body("hello")]),
        ),
    ]
}

/// Chunk sizes, extensions, line ends, trailers: strict parsing, and re-framing.
pub fn chunked_bodies() -> Vec<Case> {
    vec![
        reframed(
            "a chunk extension (token=token)",
            chunked("/ext", "5;ext-marker-a=1\r\nhello\r\n0\r\n\r\n"),
            hello("/ext"),
            b"ext-marker-a",
        ),
        reframed(
            "a chunk extension with a quoted value",
            chunked("/ext-quoted", "5;ext-marker-b=\"a b;c\"\r\nhello\r\n0\r\n\r\n"),
            hello("/ext-quoted"),
            b"ext-marker-b",
        ),
        reframed(
            "a chunk extension with whitespace around ; and = (BWS)",
            chunked("/ext-bws", "5 ; ext-marker-c = v\r\nhello\r\n0\r\n\r\n"),
            hello("/ext-bws"),
            b"ext-marker-c",
        ),
        reframed(
            "a chunk extension on the last chunk",
            chunked("/ext-last", "5\r\nhello\r\n0;ext-marker-d\r\n\r\n"),
            hello("/ext-last"),
            b"ext-marker-d",
        ),
        case(
            "a chunk extension without a name",
            chunked("/ext-noname", "5;=v\r\nhello\r\n0\r\n\r\n"),
            Refused(BAD),
        ),
        case(
            "a chunk extension name with a non-token byte",
            chunked("/ext-badchar", "5;a@b\r\nhello\r\n0\r\n\r\n"),
            Refused(BAD),
        ),
        case(
            "a bare LF inside a chunk extension",
            chunked("/ext-lf", "5;a\nhello\r\n0\r\n\r\n"),
            Refused(BAD),
        ),
        case(
            "a 100 KB chunk extension",
            chunked("/ext-long", &format!("5;a={}\r\nhello\r\n0\r\n\r\n", "x".repeat(100_000))),
            Refused(BAD),
        ),
        reframed(
            "a chunk size with leading zeros",
            chunked("/size-zeros", "0005\r\nhello\r\n0\r\n\r\n"),
            hello("/size-zeros"),
            b"0005\r\n",
        ),
        case(
            "an uppercase hex chunk size",
            chunked("/size-upper", "A\r\n0123456789\r\n0\r\n\r\n"),
            Served(vec![fwd("POST", "/size-upper").body("0123456789")]),
        ),
        case(
            "chunk size +5",
            chunked("/size-plus", "+5\r\nhello\r\n0\r\n\r\n"),
            Refused(BAD),
        ),
        case(
            "chunk size -5",
            chunked("/size-minus", "-5\r\nhello\r\n0\r\n\r\n"),
            Refused(BAD),
        ),
        case(
            "chunk size 0x5",
            chunked("/size-0x", "0x5\r\nhello\r\n0\r\n\r\n"),
            Refused(BAD),
        ),
        case(
            "whitespace before a chunk size",
            chunked("/size-lead-space", " 5\r\nhello\r\n0\r\n\r\n"),
            Refused(BAD),
        ),
        case(
            "whitespace after a chunk size, no extension",
            chunked("/size-trail-space", "5 \r\nhello\r\n0\r\n\r\n"),
            Refused(BAD),
        ),
        case(
            "a chunk size overflowing 64 bits",
            chunked("/size-overflow", "10000000000000005\r\nhello\r\n0\r\n\r\n"),
            Refused(BAD),
        ),
        case(
            "a non-hex chunk size",
            chunked("/size-g", "g\r\nhello\r\n0\r\n\r\n"),
            Refused(BAD),
        ),
        case(
            "NUL after a chunk size",
            chunked("/size-nul", "5\0\r\nhello\r\n0\r\n\r\n"),
            Refused(BAD),
        ),
        case(
            "a chunk size line ended by a bare LF",
            chunked("/size-lf", "5\nhello\r\n0\r\n\r\n"),
            Refused(BAD),
        ),
        case(
            "chunk data ended by a bare LF",
            chunked("/data-lf", "5\r\nhello\n0\r\n\r\n"),
            Refused(BAD),
        ),
        case(
            "chunk data longer than its size",
            chunked("/data-long", "3\r\nhello\r\n0\r\n\r\n"),
            Refused(BAD),
        ),
        case(
            "the last chunk ended by a bare LF",
            chunked("/last-lf", "5\r\nhello\r\n0\n\r\n"),
            Refused(BAD),
        ),
        case(
            "the chunked body's last line a bare LF",
            chunked("/end-lf", "5\r\nhello\r\n0\r\n\n"),
            Refused(BAD),
        ),
        case(
            "a trailer field",
            chunked("/trailer", "5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n"),
            hello("/trailer"),
        ),
        reframed(
            "framing fields in trailers are dropped",
            chunked(
                "/trailer-framing",
                "5\r\nhello\r\n0\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\nHost: evil-marker\r\nTrailer: x\r\n\r\n",
            ),
            hello("/trailer-framing"),
            b"evil-marker",
        ),
        case(
            "an obs-fold in the trailers",
            chunked("/trailer-fold", "5\r\nhello\r\n0\r\nX-T: 1\r\n 2\r\n\r\n"),
            Refused(BAD),
        ),
        case(
            "a trailer line without a colon",
            chunked("/trailer-nocolon", "5\r\nhello\r\n0\r\nnonsense\r\n\r\n"),
            Refused(BAD),
        ),
        case(
            "a trailer line ended by a bare LF",
            chunked("/trailer-lf", "5\r\nhello\r\n0\r\nX-T: 1\n\r\n"),
            Refused(BAD),
        ),
        case(
            "whitespace before a trailer field's colon",
            chunked("/trailer-colon", "5\r\nhello\r\n0\r\nX-T : 1\r\n\r\n"),
            Refused(BAD),
        ),
        case(
            "a chunked body, then a pipelined GET of the client's own",
            format!(
                "{}GET /pipelined HTTP/1.1\r\nHost: t\r\n\r\n",
                chunked("/chunked-then-get", "5\r\nhello\r\n0\r\n\r\n")
            ),
            Served(vec![
                fwd("POST", "/chunked-then-get").body("hello"),
                fwd("GET", "/pipelined"),
            ]),
        ),
    ]
}

/// Framing headers named in `Connection` are not hop-by-hop; other named fields are.
pub fn connection() -> Vec<Case> {
    let (s, sl, chunked_s) = smuggled();
    vec![
        case(
            "Connection: Content-Length cannot unframe the body",
            post(
                "/a",
                &format!("Connection: Content-Length\r\nContent-Length: {sl}\r\n"),
                s,
            ),
            Served(vec![fwd("POST", "/a")
                .body(s)
                .h("content-length", Is(SMUGGLED_LEN))]),
        ),
        case(
            "Connection: Transfer-Encoding cannot unframe the body",
            post(
                "/conn-te",
                "Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n",
                &chunked_s,
            ),
            Served(vec![fwd("POST", "/conn-te")
                .body(s)
                .h("transfer-encoding", Is("chunked"))]),
        ),
        case(
            "Connection: Host cannot remove Host",
            "GET /conn-host HTTP/1.1\r\nHost: t\r\nConnection: Host\r\n\r\n",
            Served(vec![fwd("GET", "/conn-host").h("host", Is("t"))]),
        ),
        case(
            "Connection: X-Forwarded-For cannot remove the proxy's X-Forwarded-For",
            "GET /conn-xff HTTP/1.1\r\nHost: t\r\nConnection: X-Forwarded-For\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
            Served(vec![fwd("GET", "/conn-xff").h("x-forwarded-for", Is("127.0.0.1"))]),
        ),
        case(
            "Connection: close, Content-Length",
            post(
                "/conn-close-cl",
                &format!("Connection: close, Content-Length\r\nContent-Length: {sl}\r\n"),
                s,
            ),
            ServedThenClosed(vec![fwd("POST", "/conn-close-cl").body(s)]),
        ),
        case(
            "other fields named by Connection are still dropped",
            "GET /conn-other HTTP/1.1\r\nHost: t\r\nConnection: X-Secret\r\nX-Secret: 1\r\nX-Kept: 1\r\n\r\n",
            Served(vec![fwd("GET", "/conn-other")
                .h("x-secret", Absent)
                .h("x-kept", Is("1"))]),
        ),
    ]
}

/// Host: required once in HTTP/1.1; absolute-form replaces it; HTTP/1.0 gets the proxy's.
pub fn host() -> Vec<Case> {
    vec![
        case(
            "HTTP/1.1 without Host",
            "GET /no-host HTTP/1.1\r\n\r\n",
            Refused(BAD),
        ),
        case(
            "two Host fields",
            "GET /two-hosts HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            Refused(BAD),
        ),
        case(
            "whitespace before the colon of Host",
            "GET /host-colon HTTP/1.1\r\nHost : t\r\n\r\n",
            Refused(BAD),
        ),
        case(
            "an absolute-form target replaces Host",
            "GET http://example.com/abs?q=1 HTTP/1.1\r\nHost: other\r\n\r\n",
            Served(vec![fwd("GET", "/abs?q=1").h("host", Is("example.com"))]),
        ),
        case(
            "an absolute-form target without Host (HTTP/1.1)",
            "GET http://example.com/abs-nohost HTTP/1.1\r\n\r\n",
            Refused(BAD),
        ),
        case(
            "an absolute-form target with two Host fields",
            "GET http://example.com/abs-two HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            Refused(BAD),
        ),
        case(
            "HTTP/1.0 without Host gets the proxy's address as Host",
            "GET /http10-nohost HTTP/1.0\r\n\r\n",
            ServedThenClosed(vec![fwd("GET", "/http10-nohost").h("host", ProxyAddr)]),
        ),
        case(
            "HTTP/1.0 keep-alive with a Content-Length body",
            "POST /http10-ka HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello",
            hello("/http10-ka"),
        ),
    ]
}

/// Heads: obs-fold, CR, NUL, bad names, bare LF; CONNECT; an oversized head.
pub fn heads() -> Vec<Case> {
    vec![
        case(
            "an obs-fold line",
            "GET /fold HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n 2\r\n\r\n",
            Refused(BAD),
        ),
        case(
            "a CR inside a field value",
            "GET /cr HTTP/1.1\r\nHost: t\r\nX-A: 1\r2\r\n\r\n",
            Refused(BAD),
        ),
        case(
            "a NUL inside a field value",
            "GET /nul HTTP/1.1\r\nHost: t\r\nX-A: 1\x002\r\n\r\n",
            Refused(BAD),
        ),
        case(
            "a space inside a field name",
            "GET /name-space HTTP/1.1\r\nHost: t\r\nX A: 1\r\n\r\n",
            Refused(BAD),
        ),
        case(
            "a non-token byte in a field name",
            "GET /name-paren HTTP/1.1\r\nHost: t\r\nX(A): 1\r\n\r\n",
            Refused(BAD),
        ),
        case(
            "a head of bare LF line ends",
            "GET /lf HTTP/1.1\nHost: t\n\n",
            Refused(BAD),
        ),
        case(
            "one field line ended by a bare LF",
            "GET /lf-one HTTP/1.1\r\nHost: t\nX-A: 1\r\n\r\n",
            Refused(BAD),
        ),
        case(
            "the request line ended by a bare LF",
            "GET /lf-line HTTP/1.1\nHost: t\r\n\r\n",
            Refused(BAD),
        ),
        case(
            "CONNECT",
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            Refused(&[405]),
        ),
        case(
            "a head over 64 KiB",
            format!(
                "GET /huge HTTP/1.1\r\nHost: t\r\nX-Huge: {}\r\n\r\n",
                "h".repeat(70 * 1024)
            ),
            Refused(&[431]),
        ),
    ]
}

/// `Expect: 100-continue` with the body sent at once, not waiting for the 100.
pub fn expect() -> Vec<Case> {
    vec![
        case(
            "Expect: 100-continue with a Content-Length body",
            post(
                "/expect-cl",
                "Expect: 100-continue\r\nContent-Length: 5\r\n",
                "hello",
            ),
            hello("/expect-cl"),
        ),
        case(
            "Expect: 100-continue with a chunked body",
            post(
                "/expect-chunked",
                "Expect: 100-continue\r\nTransfer-Encoding: chunked\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            hello("/expect-chunked"),
        ),
    ]
}

/// Upgrades: `h2c` is not passed on; a refused upgrade leaves a normal connection or a close.
pub fn upgrades() -> Vec<Case> {
    vec![
        case(
            "Upgrade: h2c is served as a plain request",
            "GET /h2c HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
            Served(vec![fwd("GET", "/h2c")
                .h("upgrade", Absent)
                .h("http2-settings", Absent)
                .h("connection", NoToken("upgrade"))]),
        ),
        case(
            "bytes after an Upgrade request the worker answers with 200",
            "GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nGET /after-upgrade HTTP/1.1\r\nHost: t\r\n\r\n",
            ServedThenMaybe(vec![fwd("GET", "/ws")], fwd("GET", "/after-upgrade")),
        ),
    ]
}
