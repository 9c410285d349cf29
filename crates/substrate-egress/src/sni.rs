//! The TLS server name a tunnel's first bytes ask for, read without terminating TLS.
//!
//! A CONNECT to port 443 is allowed by its host name, but the bytes that then flow through the
//! tunnel are the client's own TLS. Many names share one front (a CDN or a cloud load balancer
//! on a shared IP), and that front routes by the ClientHello's server name (SNI), not by the
//! address the proxy dialled. Without a check, a tunnel opened to an allowed name could carry TLS
//! for any other name the same front serves (domain fronting). So the proxy reads the
//! ClientHello the client sends first and refuses the tunnel unless its server name is the
//! CONNECT host.
//!
//! The parser is pure and borrows the caller's buffer: it allocates only for the name it
//! returns, or to join a ClientHello split across several TLS records. Every length is
//! bounds-checked, and the handshake message is capped at [`MAX_HELLO`] bytes so a client cannot
//! make the proxy buffer without end.

use std::borrow::Cow;

/// The most handshake data (header included) a ClientHello may take; a larger one is refused
/// rather than buffered. Real ClientHellos are a few hundred bytes to a few KiB (post-quantum
/// key shares included), so this leaves ample room.
const MAX_HELLO: usize = 64 * 1024;

/// The longest TLS record body accepted: 2^14 bytes of plaintext plus the 2048 bytes of
/// expansion TLS allows a ciphertext, the most any record on the wire may declare.
const MAX_RECORD: usize = (1 << 14) + 2048;

/// TLS record content type of a handshake record.
const HANDSHAKE_RECORD: u8 = 0x16;

/// Handshake message type of a ClientHello.
const CLIENT_HELLO: u8 = 1;

/// Extension type of `server_name` (RFC 6066).
const SERVER_NAME: u16 = 0;

/// `server_name` entry type of a DNS host name (RFC 6066).
const HOST_NAME: u8 = 0;

/// The longest DNS name (without its trailing dot), so an absurdly long server name is not
/// taken for a host name.
const MAX_HOST_NAME: usize = 253;

/// The longest label of a DNS name.
const MAX_LABEL: usize = 63;

/// What the first bytes of a tunnel say about the TLS server name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hello {
    /// More bytes are needed to decide (the record or handshake message is incomplete).
    Incomplete,
    /// A complete ClientHello; its server_name (host_name type 0), lower-cased, if present.
    ServerName(Option<String>),
    /// Not a TLS ClientHello (first byte not 0x16 handshake, handshake type not 1, malformed
    /// lengths, etc.) — with a short reason.
    NotTls(&'static str),
}

/// Reads the ClientHello at the start of `buf` (the bytes a client sent into a tunnel so far),
/// so the proxy can compare its server name to the CONNECT host before relaying anything.
///
/// The answer depends only on the bytes needed to reach it: once it is not
/// [`Hello::Incomplete`], more bytes appended to `buf` do not change it. Bytes after the
/// ClientHello are ignored.
pub(crate) fn client_hello(buf: &[u8]) -> Hello {
    match reassemble(buf) {
        Ok(message) => match server_name(&message) {
            Ok(name) => Hello::ServerName(name),
            Err(why) => Hello::NotTls(why),
        },
        Err(stop) => stop,
    }
}

/// Whether the TLS server name `sni` names the CONNECT host: host names are case-insensitive and
/// `example.com.` is `example.com`, so both are compared without case and without one trailing
/// dot. An empty name matches nothing.
pub(crate) fn sni_matches(connect_host: &str, sni: &str) -> bool {
    let host = connect_host.strip_suffix('.').unwrap_or(connect_host);
    let sni = sni.strip_suffix('.').unwrap_or(sni);
    !host.is_empty() && host.eq_ignore_ascii_case(sni)
}

/// Joins the handshake data of consecutive handshake records until the first handshake message
/// is whole, and returns exactly that message (header included). It borrows `buf` when one
/// record holds the whole message, the usual case. `Err` is [`Hello::Incomplete`] or
/// [`Hello::NotTls`].
fn reassemble(buf: &[u8]) -> Result<Cow<'_, [u8]>, Hello> {
    let mut rest = buf;
    let mut first: &[u8] = &[];
    let mut joined: Vec<u8> = Vec::new();
    let mut records = 0usize;
    loop {
        let (fragment, whole, after) = record(rest, records == 0)?;
        if records == 0 {
            first = fragment;
        } else {
            if joined.is_empty() {
                joined.extend_from_slice(first);
            }
            joined.extend_from_slice(fragment);
        }
        records += 1;
        let have: &[u8] = if joined.is_empty() { first } else { &joined };
        if let Some(need) = message_len(have)?
            && have.len() >= need
        {
            if joined.is_empty() {
                return first
                    .get(..need)
                    .map(Cow::Borrowed)
                    .ok_or(Hello::Incomplete);
            }
            joined.truncate(need);
            return Ok(Cow::Owned(joined));
        }
        if !whole {
            return Err(Hello::Incomplete);
        }
        rest = after;
    }
}

/// Splits the TLS record at the start of `buf` into (the part of its body present, whether that
/// is the whole body, the bytes after the record). Refuses as soon as a header byte is wrong, so
/// a client that speaks something else is turned away without waiting for more.
fn record(buf: &[u8], first: bool) -> Result<(&[u8], bool, &[u8]), Hello> {
    match buf.first() {
        None => return Err(Hello::Incomplete),
        Some(&HANDSHAKE_RECORD) => {}
        Some(_) if first => return Err(Hello::NotTls("not a TLS handshake record")),
        Some(_) => {
            return Err(Hello::NotTls(
                "a non-handshake record inside the ClientHello",
            ));
        }
    }
    if buf.get(1).is_some_and(|&major| major != 3) {
        return Err(Hello::NotTls("not a TLS record version"));
    }
    if buf.get(2).is_some_and(|&minor| minor > 0x0f) {
        return Err(Hello::NotTls("not a TLS record version"));
    }
    let Some(&[_, _, _, high, low]) = buf.get(..5) else {
        return Err(Hello::Incomplete);
    };
    let len = usize::from(u16::from_be_bytes([high, low]));
    if len == 0 {
        return Err(Hello::NotTls("empty handshake record"));
    }
    if len > MAX_RECORD {
        return Err(Hello::NotTls("record too long"));
    }
    let body = buf.get(5..).unwrap_or_default();
    Ok(match body.split_at_checked(len) {
        Some((fragment, after)) => (fragment, true, after),
        None => (body, false, &[]),
    })
}

/// The length (header included) of the handshake message whose first bytes are `have`, once its
/// 4-byte header is there; refuses a message that is not a ClientHello or is too large as soon
/// as that shows.
fn message_len(have: &[u8]) -> Result<Option<usize>, Hello> {
    if have.first().is_some_and(|&kind| kind != CLIENT_HELLO) {
        return Err(Hello::NotTls("not a ClientHello"));
    }
    let Some(&[_, a, b, c]) = have.get(..4) else {
        return Ok(None);
    };
    let need = 4 + usize::from(a) * 0x1_0000 + usize::from(b) * 0x100 + usize::from(c);
    if need > MAX_HELLO {
        return Err(Hello::NotTls("client hello too large"));
    }
    Ok(Some(need))
}

/// Walks a whole ClientHello (handshake header included) to its `server_name` extension. The
/// message is complete, so a length that runs past its end is malformed, not incomplete.
fn server_name(message: &[u8]) -> Result<Option<String>, &'static str> {
    let mut hello = Reader(message.get(4..).unwrap_or_default());
    let Some(&[3, _]) = hello.take(2) else {
        return Err("not a TLS client version");
    };
    hello.take(32).ok_or("truncated random")?;
    let session_id = hello.vec8().ok_or("truncated session id")?;
    if session_id.len() > 32 {
        return Err("session id too long");
    }
    let suites = hello.vec16().ok_or("truncated cipher suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err("malformed cipher suites");
    }
    let compression = hello.vec8().ok_or("truncated compression methods")?;
    if compression.is_empty() {
        return Err("no compression methods");
    }
    if hello.is_empty() {
        // A ClientHello may end here: no extensions, so no server name.
        return Ok(None);
    }
    let extensions = hello.vec16().ok_or("truncated extensions")?;
    if !hello.is_empty() {
        return Err("bytes after the extensions");
    }
    let mut extensions = Reader(extensions);
    let mut seen = false;
    let mut name = None;
    while !extensions.is_empty() {
        let kind = extensions.u16().ok_or("truncated extension")?;
        let data = extensions.vec16().ok_or("truncated extension")?;
        if kind == SERVER_NAME {
            // Two server names could mean one to this proxy and another to the front.
            if seen {
                return Err("duplicate server_name extension");
            }
            seen = true;
            name = host_name(data)?;
        }
    }
    Ok(name)
}

/// The host name in the body of a `server_name` extension, if it has one; entries of other name
/// types are skipped.
fn host_name(data: &[u8]) -> Result<Option<String>, &'static str> {
    let mut data = Reader(data);
    let list = data.vec16().ok_or("truncated server name list")?;
    if !data.is_empty() {
        return Err("bytes after the server name list");
    }
    if list.is_empty() {
        return Err("empty server name list");
    }
    let mut list = Reader(list);
    let mut host = None;
    while !list.is_empty() {
        let kind = list.u8().ok_or("truncated server name")?;
        let name = list.vec16().ok_or("truncated server name")?;
        if kind == HOST_NAME {
            // RFC 6066 allows one name per type; two leave the real target ambiguous.
            if host.is_some() {
                return Err("more than one host name");
            }
            host = Some(normalize(name)?);
        }
    }
    Ok(host)
}

/// The server name as a host name the proxy can compare: ASCII letters, digits, `-` and `_` in
/// non-empty dot-separated labels of at most 63 bytes (so nothing can hide behind look-alike or
/// control bytes), one trailing dot dropped, lower-cased.
fn normalize(name: &[u8]) -> Result<String, &'static str> {
    let name = name.strip_suffix(b".").unwrap_or(name);
    let label_byte = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_');
    let label_ok = |label: &[u8]| {
        !label.is_empty() && label.len() <= MAX_LABEL && label.iter().all(label_byte)
    };
    if name.len() > MAX_HOST_NAME || !name.split(|&b| b == b'.').all(label_ok) {
        return Err("server name is not a host name");
    }
    Ok(name
        .iter()
        .map(|b| char::from(b.to_ascii_lowercase()))
        .collect())
}

/// A cursor over TLS wire data whose reads return `None` instead of running past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// Whether every byte was read.
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The next `n` bytes.
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(n)?;
        self.0 = tail;
        Some(head)
    }

    /// The next byte.
    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    /// The next big-endian `u16`.
    fn u16(&mut self) -> Option<u16> {
        match self.take(2)? {
            &[high, low] => Some(u16::from_be_bytes([high, low])),
            _ => None,
        }
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let len = self.u8()?;
        self.take(usize::from(len))
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first bytes OpenSSL 3.0.19 (Debian 12) sent as a TLS client, captured once with a
    /// Python listener on 127.0.0.1 that wrote whatever arrived on its first connection to a
    /// file, while `openssl s_client -connect 127.0.0.1:PORT -servername api.example.com
    /// </dev/null` connected to it; dumped with `xxd -p -c 32`. One record, a 312-byte
    /// ClientHello offering TLS 1.3 and 1.2 with SNI `api.example.com`.
    const OPENSSL_HELLO: &str = concat!(
        "160301013c0100013803039e081b7715a31262a41738a7f8a76a7e4705a738fd",
        "12769cda13c6d123e20dc020165caeb79c5466e75ed61e7ca413c3c7b58ee317",
        "65ea388f2ba92d75611bed18003e130213031301c02cc030009fcca9cca8ccaa",
        "c02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d",
        "009c003d003c0035002f00ff010000b100000014001200000f6170692e657861",
        "6d706c652e636f6d000b000403000102000a00160014001d0017001e00190018",
        "01000101010201030104002300000016000000170000000d002a002804030503",
        "0603080708080809080a080b0804080508060401050106010303030103020402",
        "05020602002b0009080304030303020301002d00020101003300260024001d00",
        "203180d4a6cd1e4f0db2f98882efd95c351e8ed1d46ed1febff0809f02d08939",
        "19",
    );

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    fn openssl_hello() -> Vec<u8> {
        unhex(OPENSSL_HELLO)
    }

    fn u16_len(len: usize) -> [u8; 2] {
        u16::try_from(len).unwrap().to_be_bytes()
    }

    /// A ClientHello body (after the handshake header): TLS 1.2 version, a fixed random, two
    /// cipher suites, null compression, and `extensions` if given (`None` for none at all).
    fn hello_body(session_id: &[u8], extensions: Option<&[(u16, Vec<u8>)]>) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend([0x5a; 32]);
        body.push(u8::try_from(session_id.len()).unwrap());
        body.extend(session_id);
        body.extend([0, 4, 0x13, 0x01, 0x13, 0x02]);
        body.extend([1, 0]);
        if let Some(extensions) = extensions {
            let mut all = Vec::new();
            for (kind, data) in extensions {
                all.extend(kind.to_be_bytes());
                all.extend(u16_len(data.len()));
                all.extend(data);
            }
            body.extend(u16_len(all.len()));
            body.extend(all);
        }
        body
    }

    /// A handshake message of type `kind` around `body`.
    fn handshake(kind: u8, body: &[u8]) -> Vec<u8> {
        let len = u32::try_from(body.len()).unwrap().to_be_bytes();
        let mut message = vec![kind, len[1], len[2], len[3]];
        message.extend(body);
        message
    }

    /// One handshake record around `fragment`.
    fn record(fragment: &[u8]) -> Vec<u8> {
        let mut out = vec![HANDSHAKE_RECORD, 3, 1];
        out.extend(u16_len(fragment.len()));
        out.extend(fragment);
        out
    }

    /// `message` split into consecutive handshake records at the offsets `cuts`.
    fn records(message: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut from = 0;
        for &cut in cuts.iter().chain([message.len()].iter()) {
            out.extend(record(&message[from..cut]));
            from = cut;
        }
        out
    }

    /// `message` in records of at most `size` bytes each.
    fn records_of(message: &[u8], size: usize) -> Vec<u8> {
        message.chunks(size).flat_map(record).collect()
    }

    /// A `server_name` extension listing `names` as (name type, name).
    fn sni(names: &[(u8, &[u8])]) -> (u16, Vec<u8>) {
        let mut list = Vec::new();
        for (kind, name) in names {
            list.push(*kind);
            list.extend(u16_len(name.len()));
            list.extend(*name);
        }
        let mut data = u16_len(list.len()).to_vec();
        data.extend(list);
        (SERVER_NAME, data)
    }

    /// A one-record ClientHello with an empty session id and `extensions`.
    fn hello_with(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        record(&handshake(CLIENT_HELLO, &hello_body(&[], Some(extensions))))
    }

    /// A one-record ClientHello whose SNI names `name`, with an ALPN extension around it.
    fn hello_naming(name: &[u8]) -> Vec<u8> {
        let extensions = [
            (16, b"\x00\x03\x02h2".to_vec()),
            sni(&[(HOST_NAME, name)]),
            (43, vec![2, 3, 4]),
        ];
        record(&handshake(
            CLIENT_HELLO,
            &hello_body(&[7; 32], Some(&extensions)),
        ))
    }

    fn named(name: &str) -> Hello {
        Hello::ServerName(Some(String::from(name)))
    }

    /// Every proper prefix of `bytes` must wait for more, never decide or panic.
    fn assert_incomplete_prefixes(bytes: &[u8]) {
        for end in 0..bytes.len() {
            assert_eq!(
                client_hello(&bytes[..end]),
                Hello::Incomplete,
                "prefix of {end} of {} bytes",
                bytes.len()
            );
        }
    }

    #[test]
    fn reads_the_server_name_openssl_sent() {
        let hello = openssl_hello();
        assert_eq!(hello.len(), 321);
        assert_eq!(client_hello(&hello), named("api.example.com"));
    }

    #[test]
    fn a_truncated_openssl_hello_is_incomplete_at_every_length() {
        assert_incomplete_prefixes(&openssl_hello());
    }

    #[test]
    fn bytes_after_the_hello_do_not_change_the_answer() {
        let mut hello = openssl_hello();
        hello.extend(record(b"\x10\x00\x00\x00"));
        hello.extend(b"\x17\x03\x03garbage");
        assert_eq!(client_hello(&hello), named("api.example.com"));
    }

    #[test]
    fn reassembles_the_openssl_hello_across_records_of_any_size() {
        let message = &openssl_hello()[5..];
        for size in [1, 2, 3, 4, 5, 7, 40, 100, 311, 312] {
            let split = records_of(message, size);
            assert_eq!(client_hello(&split), named("api.example.com"), "{size}");
            assert_incomplete_prefixes(&split);
        }
    }

    #[test]
    fn a_server_name_split_across_two_records_is_joined() {
        let hello = hello_naming(b"API.Example.COM.");
        let message = &hello[5..];
        let at = message.windows(3).position(|w| w == b"Exa").unwrap();
        let split = records(message, &[at + 1]);
        assert_eq!(client_hello(&split), named("api.example.com"));
        assert_incomplete_prefixes(&split);
        // And split three ways, the handshake header itself straddling two records.
        let split = records(message, &[2, at + 1]);
        assert_eq!(client_hello(&split), named("api.example.com"));
        assert_incomplete_prefixes(&split);
    }

    #[test]
    fn lower_cases_and_drops_one_trailing_dot() {
        assert_eq!(
            client_hello(&hello_naming(b"Api.Example.COM.")),
            named("api.example.com")
        );
        assert_eq!(
            client_hello(&hello_naming(b"my_host-1.internal")),
            named("my_host-1.internal")
        );
    }

    #[test]
    fn a_hello_without_extensions_names_no_server() {
        let hello = record(&handshake(CLIENT_HELLO, &hello_body(&[], None)));
        assert_eq!(client_hello(&hello), Hello::ServerName(None));
        assert_incomplete_prefixes(&hello);
    }

    #[test]
    fn a_hello_without_sni_names_no_server() {
        let extensions = [(16, b"\x00\x03\x02h2".to_vec()), (43, vec![2, 3, 4])];
        let hello = record(&handshake(
            CLIENT_HELLO,
            &hello_body(&[1; 32], Some(&extensions)),
        ));
        assert_eq!(client_hello(&hello), Hello::ServerName(None));
        assert_incomplete_prefixes(&hello);
        let empty = record(&handshake(CLIENT_HELLO, &hello_body(&[], Some(&[]))));
        assert_eq!(client_hello(&empty), Hello::ServerName(None));
    }

    #[test]
    fn skips_server_names_of_other_types() {
        let extensions = [sni(&[(7, b"\xff opaque"), (HOST_NAME, b"a.example")])];
        let hello = hello_with(&extensions);
        assert_eq!(client_hello(&hello), named("a.example"));
        let extensions = [sni(&[(7, b"only.other.type")])];
        let hello = hello_with(&extensions);
        assert_eq!(client_hello(&hello), Hello::ServerName(None));
    }

    #[test]
    fn refuses_a_server_name_that_is_not_a_host_name() {
        let not_host = Hello::NotTls("server name is not a host name");
        for name in [
            &b""[..],
            b".",
            b"a b.example",
            b"evil.example\0.good.example",
            b"caf\xc3\xa9.example",
            b"a.example/path",
            b"a.example:443",
            b"a.example..",
            b"[::1]",
            b".a.example",
            b"a..example",
            b"*.example",
        ] {
            assert_eq!(client_hello(&hello_naming(name)), not_host, "{name:?}");
        }
        // The longest host name DNS allows (253 bytes, labels of at most 63), and one more.
        let label = "a".repeat(63);
        let longest = format!("{label}.{label}.{label}.{}", "b".repeat(61));
        assert_eq!(longest.len(), 253);
        assert_eq!(
            client_hello(&hello_naming(longest.as_bytes())),
            named(&longest)
        );
        let dotted = format!("{longest}.");
        assert_eq!(
            client_hello(&hello_naming(dotted.as_bytes())),
            named(&longest)
        );
        let longer = format!("{longest}b");
        assert_eq!(client_hello(&hello_naming(longer.as_bytes())), not_host);
        let long_label = format!("{}.example", "a".repeat(64));
        assert_eq!(client_hello(&hello_naming(long_label.as_bytes())), not_host);
    }

    #[test]
    fn refuses_two_server_names() {
        let extensions = [
            sni(&[(HOST_NAME, b"a.example")]),
            sni(&[(HOST_NAME, b"b.example")]),
        ];
        let hello = hello_with(&extensions);
        assert_eq!(
            client_hello(&hello),
            Hello::NotTls("duplicate server_name extension")
        );
        let extensions = [sni(&[(HOST_NAME, b"a.example"), (HOST_NAME, b"b.example")])];
        let hello = hello_with(&extensions);
        assert_eq!(
            client_hello(&hello),
            Hello::NotTls("more than one host name")
        );
    }

    #[test]
    fn refuses_what_is_not_tls_from_the_first_byte() {
        for bytes in [
            &b"G"[..],
            b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n",
            b"SSH-2.0-OpenSSH_9.2\r\n",
            b"\x17\x03\x03\x00\x10",
            b"\x80\x2e\x01\x00\x02",
        ] {
            assert_eq!(
                client_hello(bytes),
                Hello::NotTls("not a TLS handshake record"),
                "{bytes:?}"
            );
        }
        assert_eq!(
            client_hello(b"\x16\x02"),
            Hello::NotTls("not a TLS record version")
        );
        assert_eq!(
            client_hello(b"\x16\x03\x10"),
            Hello::NotTls("not a TLS record version")
        );
        // A ServerHello, not a ClientHello: known from the first handshake byte.
        assert_eq!(
            client_hello(b"\x16\x03\x03\x00\x40\x02"),
            Hello::NotTls("not a ClientHello")
        );
    }

    #[test]
    fn refuses_a_non_handshake_record_mid_hello() {
        let message = openssl_hello()[5..].to_vec();
        let mut bytes = record(&message[..100]);
        bytes.extend(b"\x15\x03\x03\x00\x02\x02\x28");
        assert_eq!(
            client_hello(&bytes),
            Hello::NotTls("a non-handshake record inside the ClientHello")
        );
    }

    #[test]
    fn refuses_oversize_and_empty_lengths() {
        // A handshake message declaring 64 KiB of body (plus its header) is too large at once.
        assert_eq!(
            client_hello(b"\x16\x03\x01\x00\x04\x01\x01\x00\x00"),
            Hello::NotTls("client hello too large")
        );
        assert_eq!(
            client_hello(b"\x16\x03\x01\x00\x04\x01\xff\xff\xff"),
            Hello::NotTls("client hello too large")
        );
        // Exactly 64 KiB with the header is still allowed, so it waits for the rest.
        assert_eq!(
            client_hello(b"\x16\x03\x01\x00\x04\x01\x00\xff\xfc"),
            Hello::Incomplete
        );
        assert_eq!(
            client_hello(b"\x16\x03\x01\x48\x01"),
            Hello::NotTls("record too long")
        );
        assert_eq!(client_hello(b"\x16\x03\x01\x48\x00"), Hello::Incomplete);
        assert_eq!(
            client_hello(b"\x16\x03\x01\x00\x00"),
            Hello::NotTls("empty handshake record")
        );
    }

    #[test]
    fn reads_a_large_hello_spread_over_full_records() {
        let extensions = [(21, vec![0; 40_000]), sni(&[(HOST_NAME, b"big.example")])];
        let message = handshake(CLIENT_HELLO, &hello_body(&[], Some(&extensions)));
        let bytes = records_of(&message, 1 << 14);
        assert_eq!(client_hello(&bytes), named("big.example"));
        assert_eq!(client_hello(&bytes[..bytes.len() - 1]), Hello::Incomplete);
    }

    #[test]
    fn refuses_malformed_inner_lengths() {
        let cases: [(Vec<u8>, &str); 10] = [
            (vec![2, 3], "not a TLS client version"),
            (vec![3, 3, 0], "truncated random"),
            ([&[3, 3][..], &[0; 32]].concat(), "truncated session id"),
            (
                [&[3, 3][..], &[0; 32], &[40]].concat(),
                "truncated session id",
            ),
            (
                [&[3, 3][..], &[0; 32], &[33], &[0; 33], &[0, 2, 0, 1, 1, 0]].concat(),
                "session id too long",
            ),
            (
                [&[3, 3][..], &[0; 32], &[0, 0, 3, 0, 1, 2, 1, 0]].concat(),
                "malformed cipher suites",
            ),
            (
                [&[3, 3][..], &[0; 32], &[0, 0, 2, 0x13, 1, 0]].concat(),
                "no compression methods",
            ),
            (
                [&[3, 3][..], &[0; 32], &[0, 0, 2, 0x13, 1, 1, 0, 0, 9, 0]].concat(),
                "truncated extensions",
            ),
            (
                [&[3, 3][..], &[0; 32], &[0, 0, 2, 0x13, 1, 1, 0, 0, 0, 7]].concat(),
                "bytes after the extensions",
            ),
            (
                [
                    &[3, 3][..],
                    &[0; 32],
                    &[0, 0, 2, 0x13, 1, 1, 0, 0, 3, 0, 0, 9],
                ]
                .concat(),
                "truncated extension",
            ),
        ];
        for (body, why) in cases {
            let hello = record(&handshake(CLIENT_HELLO, &body));
            assert_eq!(client_hello(&hello), Hello::NotTls(why), "{body:?}");
        }
        let server_names: [(Vec<u8>, &str); 5] = [
            (vec![], "truncated server name list"),
            (vec![0, 5, 0, 0, 1, b'a'], "truncated server name list"),
            (vec![0, 0], "empty server name list"),
            (
                vec![0, 4, 0, 0, 1, b'a', 9],
                "bytes after the server name list",
            ),
            (vec![0, 4, 0, 0, 2, b'a'], "truncated server name"),
        ];
        for (data, why) in server_names {
            let extensions = [(SERVER_NAME, data.clone())];
            let hello = hello_with(&extensions);
            assert_eq!(client_hello(&hello), Hello::NotTls(why), "{data:?}");
        }
    }

    /// A deterministic xorshift64 generator, so a failure reproduces.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
        }

        fn byte(&mut self) -> u8 {
            self.next().to_le_bytes()[0]
        }
    }

    /// What every answer must satisfy whatever the input: a name is a normalized host name,
    /// and a decision does not change when more bytes follow.
    fn check_any(bytes: &[u8], rng: &mut XorShift) {
        let answer = client_hello(bytes);
        if let Hello::ServerName(Some(name)) = &answer {
            assert!(!name.is_empty() && !name.ends_with('.'), "{name:?}");
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'-' | b'.' | b'_')),
                "{name:?}"
            );
        }
        if answer != Hello::Incomplete {
            let mut longer = bytes.to_vec();
            longer.extend((0..rng.below(64)).map(|_| rng.byte()));
            assert_eq!(client_hello(&longer), answer, "{bytes:?}");
        }
    }

    #[test]
    fn never_panics_on_pseudo_random_bytes() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let len = rng.below(600);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
            // Half of them get a plausible record header, so the walk goes deeper.
            if rng.below(2) == 0 && bytes.len() >= 6 {
                bytes[..3].copy_from_slice(&[HANDSHAKE_RECORD, 3, 1]);
                bytes[5] = CLIENT_HELLO;
            }
            check_any(&bytes, &mut rng);
        }
    }

    #[test]
    fn never_panics_on_mutated_real_hellos() {
        let mut rng = XorShift(0x0123_4567_89ab_cdef);
        let sources = [
            openssl_hello(),
            records_of(&openssl_hello()[5..], 50),
            hello_naming(b"a.example"),
        ];
        for round in 0..20_000 {
            let mut bytes = sources[round % sources.len()].clone();
            for _ in 0..=rng.below(4) {
                let at = rng.below(bytes.len());
                match rng.below(3) {
                    0 => bytes[at] = rng.byte(),
                    1 => bytes[at] ^= 1 << rng.below(8),
                    _ => bytes.truncate(at),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            check_any(&bytes, &mut rng);
        }
    }

    #[test]
    fn sni_matches_without_case_or_one_trailing_dot() {
        assert!(sni_matches("api.example.com", "api.example.com"));
        assert!(sni_matches("API.Example.com", "api.example.COM"));
        assert!(sni_matches("api.example.com.", "api.example.com"));
        assert!(sni_matches("api.example.com", "api.example.com."));
        assert!(!sni_matches("api.example.com", "evil.example.com"));
        assert!(!sni_matches("api.example.com", "api.example.com.evil"));
        assert!(!sni_matches("example.com", "api.example.com"));
        assert!(!sni_matches("api.example.com..", "api.example.com"));
        assert!(!sni_matches("", ""));
        assert!(!sni_matches(".", ""));
    }
}
