//! Scrubbing: the real value of a secret never travels back into the sandbox. An
//! upstream that echoes what it received (a debugging endpoint, an error message
//! quoting a header, a WebSocket echo) would otherwise hand the sandbox the value
//! the broker swapped in. Every occurrence of a value's exact bytes in what the
//! broker carries back from such a host (response headers, the reason phrase,
//! trailers, bodies, an upgraded connection's bytes) is overwritten with as many
//! `*`: the same length, so `Content-Length` and framing (chunked, HTTP/2 frames,
//! WebSocket frames) stay valid, and nothing is buffered beyond the few bytes that
//! may begin a value at the end of one chunk.

use crate::secrets::Secret;
use aho_corasick::{AhoCorasick, MatchKind};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// What a value's bytes are overwritten with.
pub const MASK: u8 = b'*';

/// Finds and masks every secret's value.
#[derive(Debug, Clone)]
pub struct Scrubber {
    finder: AhoCorasick,
    values: Vec<Vec<u8>>,
}

impl Scrubber {
    /// A scrubber for the values of `secrets`; `None` when none has a value.
    pub fn new(secrets: &[Secret]) -> Option<Scrubber> {
        let values: Vec<Vec<u8>> = secrets
            .iter()
            .filter(|s| !s.value.is_empty())
            .map(|s| s.value.as_bytes().to_vec())
            .collect();
        if values.is_empty() {
            return None;
        }
        let finder = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&values)
            .ok()?;
        Some(Scrubber { finder, values })
    }

    /// Masks every value in `buf`; returns where the last mask ended (0 if none).
    pub fn mask(&self, buf: &mut [u8]) -> usize {
        let mut end = 0;
        let spans: Vec<(usize, usize)> = self
            .finder
            .find_iter(&*buf)
            .map(|m| (m.start(), m.end()))
            .collect();
        for (start, stop) in spans {
            if let Some(span) = buf.get_mut(start..stop) {
                span.fill(MASK);
            }
            end = stop;
        }
        end
    }

    /// Does `buf` contain a value?
    pub fn contains(&self, buf: &[u8]) -> bool {
        self.finder.is_match(buf)
    }

    /// How many bytes at the end of `buf`, from `from` on, may be the beginning of
    /// a value (the longest such suffix, shorter than the value).
    fn pending(&self, buf: &[u8], from: usize) -> usize {
        let mut longest = 0;
        for value in &self.values {
            let (Some(&first), true) = (value.first(), value.len() > 1) else {
                continue;
            };
            let start = from.max(buf.len().saturating_sub(value.len() - 1));
            let tail = buf.get(start..).unwrap_or_default();
            if let Some(at) = tail
                .iter()
                .enumerate()
                .filter(|&(_, &b)| b == first)
                .map(|(i, _)| i)
                .find(|&i| value.starts_with(tail.get(i..).unwrap_or_default()))
            {
                longest = longest.max(tail.len() - at);
            }
        }
        longest
    }

    /// `value` with every secret's value masked, if it held one.
    pub fn header_value(&self, value: &HeaderValue) -> Option<HeaderValue> {
        if !self.contains(value.as_bytes()) {
            return None;
        }
        let mut bytes = value.as_bytes().to_vec();
        self.mask(&mut bytes);
        // Masking only replaces bytes with `*`, which is valid in a header value.
        HeaderValue::from_bytes(&bytes).ok()
    }

    /// Masks every value in the names and values of `headers`. Returns how many
    /// fields were changed.
    pub fn headers(&self, headers: &mut HeaderMap) -> usize {
        let hit = headers
            .iter()
            .any(|(n, v)| self.contains(n.as_str().as_bytes()) || self.contains(v.as_bytes()));
        if !hit {
            return 0;
        }
        let mut changed = 0;
        let old = std::mem::take(headers);
        let mut name = None;
        for (next, value) in old {
            if let Some(next) = next {
                name = Some(self.header_name(next));
            }
            let Some((name, renamed)) = &name else {
                continue;
            };
            let masked = self.header_value(&value);
            if *renamed || masked.is_some() {
                changed += 1;
            }
            headers.append(name.clone(), masked.unwrap_or(value));
        }
        changed
    }

    fn header_name(&self, name: HeaderName) -> (HeaderName, bool) {
        if !self.contains(name.as_str().as_bytes()) {
            return (name, false);
        }
        let mut bytes = name.as_str().as_bytes().to_vec();
        self.mask(&mut bytes);
        // `*` is a token character: still a valid name.
        match HeaderName::from_bytes(&bytes) {
            Ok(masked) => (masked, true),
            Err(_) => (HeaderName::from_static("x-cordon-masked"), true),
        }
    }
}

/// One stream's scrubbing (a body, an upgraded connection's bytes from the
/// upstream): masks values, holding back at most (longest value - 1) bytes at the
/// end of a chunk when they may begin a value that the next chunk completes.
#[derive(Debug)]
pub struct StreamScrub {
    scrubber: Arc<Scrubber>,
    carry: Vec<u8>,
    masked: usize,
}

impl StreamScrub {
    pub fn new(scrubber: Arc<Scrubber>) -> Self {
        StreamScrub {
            scrubber,
            carry: Vec::new(),
            masked: 0,
        }
    }

    /// The next chunk: what may go on now (possibly empty).
    pub fn push(&mut self, chunk: Bytes) -> Bytes {
        if self.carry.is_empty() {
            // The common case: no value in the chunk, nothing pending: no copy.
            if !self.scrubber.contains(&chunk) {
                let pending = self.scrubber.pending(&chunk, 0);
                if pending == 0 {
                    return chunk;
                }
                let keep = chunk.len() - pending;
                self.carry
                    .extend_from_slice(chunk.get(keep..).unwrap_or_default());
                return chunk.slice(..keep);
            }
        }
        let mut buf = BytesMut::with_capacity(self.carry.len() + chunk.len());
        buf.extend_from_slice(&self.carry);
        buf.extend_from_slice(&chunk);
        self.carry.clear();
        let end = self.scrubber.mask(&mut buf);
        if end > 0 {
            self.masked += 1;
        }
        let pending = self.scrubber.pending(&buf, end);
        let keep = buf.len() - pending;
        self.carry
            .extend_from_slice(buf.get(keep..).unwrap_or_default());
        buf.truncate(keep);
        buf.freeze()
    }

    /// The end of the stream: what was held back (never a whole value).
    pub fn finish(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.carry))
    }

    /// Whether some value was masked so far.
    pub fn masked_any(&self) -> bool {
        self.masked > 0
    }
}

/// A response body with every value masked as it streams (trailers too).
pub struct ScrubBody<B> {
    inner: B,
    scrub: StreamScrub,
    /// Trailers waiting for the held-back bytes to go first.
    trailers: Option<HeaderMap>,
    done: bool,
}

impl<B> ScrubBody<B> {
    pub fn new(inner: B, scrubber: Arc<Scrubber>) -> Self {
        ScrubBody {
            inner,
            scrub: StreamScrub::new(scrubber),
            trailers: None,
            done: false,
        }
    }
}

impl<B> Body for ScrubBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(None) => {
                    this.done = true;
                    let tail = this.scrub.finish();
                    if tail.is_empty() {
                        continue;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(tail))));
                }
            };
            match frame.into_data() {
                Ok(data) => {
                    let out = this.scrub.push(data);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Err(frame) => {
                    if let Ok(mut trailers) = frame.into_trailers() {
                        this.scrub.scrubber.headers(&mut trailers);
                        this.trailers = Some(trailers);
                    }
                    this.done = true;
                    let tail = this.scrub.finish();
                    if !tail.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(tail))));
                    }
                }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        // Masking keeps every length.
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str, value: &str) -> Secret {
        Secret::new(name.into(), value.into(), Vec::new())
    }

    fn scrubber(values: &[&str]) -> Arc<Scrubber> {
        let secrets: Vec<Secret> = values.iter().map(|v| secret("S", v)).collect();
        Arc::new(Scrubber::new(&secrets).unwrap())
    }

    /// Streams `chunks` through a scrubber; returns what comes out, joined.
    fn stream(s: &Arc<Scrubber>, chunks: &[&[u8]]) -> Vec<u8> {
        let mut st = StreamScrub::new(s.clone());
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(&st.push(Bytes::copy_from_slice(c)));
        }
        out.extend_from_slice(&st.finish());
        out
    }

    #[test]
    fn none_without_values() {
        assert!(Scrubber::new(&[]).is_none());
        assert!(Scrubber::new(&[secret("E", "")]).is_none());
    }

    #[test]
    fn masks_same_length() {
        let s = scrubber(&["tok-123456"]);
        let mut buf = b"a tok-123456 b tok-123456".to_vec();
        s.mask(&mut buf);
        assert_eq!(buf, b"a ********** b **********");
        assert!(!s.contains(b"tok-12345"));
    }

    #[test]
    fn every_cut_of_a_stream() {
        let s = scrubber(&["ghp_secretvalue42", "other"]);
        let body = b"{\"echo\":\"Bearer ghp_secretvalue42\",\"x\":\"ghp_\",\"o\":\"other\"}gh";
        let want = b"{\"echo\":\"Bearer *****************\",\"x\":\"ghp_\",\"o\":\"*****\"}gh";
        for cut in 0..=body.len() {
            for cut2 in cut..=body.len() {
                let out = stream(&s, &[&body[..cut], &body[cut..cut2], &body[cut2..]]);
                assert_eq!(out, want, "cuts {cut} {cut2}");
            }
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(stream(&s, &bytes), want);
    }

    #[test]
    fn holds_back_only_a_possible_beginning() {
        let s = scrubber(&["abcdef"]);
        let mut st = StreamScrub::new(s.clone());
        assert_eq!(&st.push(Bytes::from_static(b"xxabc"))[..], b"xx");
        assert_eq!(&st.push(Bytes::from_static(b"dxy"))[..], b"abcdxy");
        assert_eq!(&st.push(Bytes::from_static(b"zzab"))[..], b"zz");
        assert_eq!(&st.push(Bytes::from_static(b"cdef!"))[..], b"******!");
        assert_eq!(&st.push(Bytes::from_static(b"a"))[..], b"");
        assert_eq!(&st.finish()[..], b"a");
        // A chunk that cannot begin a value goes on whole and uncopied.
        let chunk = Bytes::from(vec![b'z'; 100_000]);
        let out = st.push(chunk.clone());
        assert_eq!(out.as_ptr(), chunk.as_ptr());
    }

    #[test]
    fn overlapping_and_nested_values() {
        // One value inside another: in one chunk the longer is masked whole; cut
        // where the shorter completes first, each is still broken.
        let s = scrubber(&["key", "monkey-key"]);
        assert_eq!(stream(&s, &[b"a monkey-key b key"]), b"a ********** b ***");
        assert_eq!(
            stream(&s, &[b"a monkey-k", b"ey b key"]),
            b"a mon***-*** b ***"
        );
        // A repeated prefix: "aab" in "aaab".
        let s = scrubber(&["aab"]);
        assert_eq!(stream(&s, &[b"aa", b"a", b"b"]), b"a***");
    }

    #[test]
    fn headers_names_and_values() {
        let s = scrubber(&["s3cr3tvalue"]);
        let mut h = HeaderMap::new();
        h.insert("x-echo", "Bearer s3cr3tvalue".parse().unwrap());
        h.append("x-echo", "plain".parse().unwrap());
        h.insert("x-s3cr3tvalue", "1".parse().unwrap());
        h.insert("content-type", "text/plain".parse().unwrap());
        assert_eq!(s.headers(&mut h), 2);
        let echo: Vec<_> = h.get_all("x-echo").iter().collect();
        assert_eq!(echo, ["Bearer ***********", "plain"]);
        assert_eq!(h["x-***********"], "1");
        assert_eq!(h["content-type"], "text/plain");
        let mut clean = HeaderMap::new();
        clean.insert("a", "b".parse().unwrap());
        assert_eq!(s.headers(&mut clean), 0);
    }
}
