//! Consistency tokens: read-your-writes across services without a read
//! calling anyone.
//!
//! Every answer a service gives carries the `themodel-consistency-token`
//! header, `<stream>:<seq>` (for example `marketing:42`): its event stream's
//! head once the call was done, so at least the seq of every event the call
//! committed. kpi follows the streams on its own; a caller that must see its
//! writes in a KPI passes the tokens it got back on the kpi read (the same
//! header, repeated or comma-separated), and the read waits until kpi has
//! applied that far.
//!
//! A call whose hand-overs were delivered before it answered also carries
//! the receivers' tokens (`marketing:42,inside-sales:17`), so the caller can
//! wait for everything its call caused.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};

use crate::db::Db;

/// The header a service answers with and kpi reads accept.
pub const HEADER: &str = "themodel-consistency-token";

tokio::task_local! {
    /// Tokens of other services the call being answered caused writes in.
    static CAUSED: RefCell<Vec<String>>;
}

/// Adds a receiver's token (as it answered a hand-over) to the answer of
/// the call being served; does nothing outside one.
pub fn caused(token: String) {
    let _ = CAUSED.try_with(|c| c.borrow_mut().push(token));
}

/// A stream position: `<stream>:<seq>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub stream: String,
    pub seq: i64,
}

impl Token {
    /// Every token in a request's headers; `Err` names the first value that
    /// is not `<stream>:<seq>`.
    pub fn all_in(metadata: &tonic::metadata::MetadataMap) -> Result<Vec<Token>, String> {
        let mut tokens = Vec::new();
        for value in metadata.get_all(HEADER) {
            let text = value.to_str().map_err(|_| "a value that is not ASCII".to_owned())?;
            for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                tokens.push(part.parse()?);
            }
        }
        Ok(tokens)
    }
}

impl std::str::FromStr for Token {
    type Err = String;

    fn from_str(s: &str) -> Result<Token, String> {
        let bad = || format!("{s:?} is not <stream>:<seq> (for example marketing:42)");
        let (stream, seq) = s.rsplit_once(':').ok_or_else(bad)?;
        let seq: i64 = seq.parse().map_err(|_| bad())?;
        if stream.is_empty() || seq < 0 {
            return Err(bad());
        }
        Ok(Token { stream: stream.to_owned(), seq })
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.stream, self.seq)
    }
}

/// Stamps every answer with the service's token.
#[derive(Debug, Clone)]
pub struct TokenLayer {
    stream: &'static str,
    db: Db,
}

impl TokenLayer {
    pub fn new(stream: &'static str, db: Db) -> Self {
        TokenLayer { stream, db }
    }
}

impl<S> Layer<S> for TokenLayer {
    type Service = Stamp<S>;

    fn layer(&self, inner: S) -> Stamp<S> {
        Stamp { inner, stream: self.stream, db: self.db.clone() }
    }
}

/// See [`TokenLayer`].
#[derive(Debug, Clone)]
pub struct Stamp<S> {
    inner: S,
    stream: &'static str,
    db: Db,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Stamp<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<ResBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let fut = self.inner.call(req);
        let (stream, db) = (self.stream, self.db.clone());
        Box::pin(CAUSED.scope(RefCell::default(), async move {
            let mut response = fut.await?;
            // Read after the call is done: the writer moves the head before
            // it answers, so this covers the call's own events.
            let own = Token { stream: stream.to_owned(), seq: db.stream_head() };
            let caused = CAUSED.with(|c| c.take());
            if let Ok(value) = HeaderValue::from_str(&joined(own, &caused)) {
                response.headers_mut().insert(HEADER, value);
            }
            Ok(response)
        }))
    }
}

/// The furthest position of each stream among some tokens: what a call
/// caused, or what a client has seen. Shown as a header value
/// (`inside-sales:4,marketing:12`, streams in name order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Positions(BTreeMap<String, i64>);

impl Positions {
    /// Adds the tokens of a header value (`a:1,b:2`); values that do not
    /// parse are left out.
    pub fn add(&mut self, header: &str) {
        for token in header.split(',').filter_map(|t| t.trim().parse::<Token>().ok()) {
            let seq = self.0.entry(token.stream).or_insert(token.seq);
            *seq = (*seq).max(token.seq);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for Positions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (stream, seq)) in self.0.iter().enumerate() {
            write!(f, "{}{stream}:{seq}", if i == 0 { "" } else { "," })?;
        }
        Ok(())
    }
}

/// `own` first, then the furthest position of each other stream in `caused`.
fn joined(own: Token, caused: &[String]) -> String {
    let mut others = Positions::default();
    for header in caused {
        others.add(header);
    }
    others.0.remove(&own.stream);
    if others.is_empty() { own.to_string() } else { format!("{own},{others}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_from_repeated_and_listed_values() {
        let mut m = tonic::metadata::MetadataMap::new();
        m.append(HEADER, "marketing:42, inside-sales:7".parse().unwrap());
        m.append(HEADER, "kpi:0".parse().unwrap());
        let tokens = Token::all_in(&m).unwrap();
        let text: Vec<String> = tokens.iter().map(Token::to_string).collect();
        assert_eq!(text, ["marketing:42", "inside-sales:7", "kpi:0"]);
        for bad in ["marketing", "marketing:", ":4", "marketing:-1", "marketing:x"] {
            let mut m = tonic::metadata::MetadataMap::new();
            m.insert(HEADER, bad.parse().unwrap());
            assert!(Token::all_in(&m).is_err(), "{bad}");
        }
        assert_eq!(Token::all_in(&tonic::metadata::MetadataMap::new()), Ok(vec![]));
    }

    #[test]
    fn an_answer_carries_the_furthest_token_of_each_stream_it_caused_writes_in() {
        let own = Token { stream: "field-sales".into(), seq: 9 };
        let caused = ["customer-success:4".to_owned(), "customer-success:6,field-sales:2".into(), "junk".into()];
        assert_eq!(joined(own.clone(), &caused), "field-sales:9,customer-success:6");
        assert_eq!(joined(own, &[]), "field-sales:9");
        let mut seen = Positions::default();
        seen.add("marketing:3, inside-sales:1");
        seen.add("marketing:2,junk");
        assert_eq!(seen.to_string(), "inside-sales:1,marketing:3");
    }
}
