//! Query strings of the daemons' HTTP/JSON APIs (the node's and the DWH's): decoded (`%XX`,
//! `+`), each parameter at most once, and every parameter used — a misspelt one is an error,
//! not silently ignored. Pure: no I/O.

use std::collections::HashMap;

use thiserror::Error;

/// A query string that cannot be used; the message says why (for a 400 answer).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct BadQuery(pub String);

fn bad(message: impl Into<String>) -> BadQuery {
    BadQuery(message.into())
}

/// Decodes `%XX` and `+` in a query string component.
fn percent_decode(s: &str) -> Result<String, BadQuery> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let v = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| bad("malformed %-escape in the query string"))?;
                out.push(v);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad("the query string is not UTF-8"))
}

/// Query parameters; each may appear once and every one must be used.
#[derive(Debug)]
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn parse(query: &str) -> Result<Params, BadQuery> {
        let mut map = HashMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = percent_decode(k)?;
            if map.insert(k.clone(), percent_decode(v)?).is_some() {
                return Err(bad(format!("parameter {k} given twice")));
            }
        }
        Ok(Params(map))
    }

    /// Takes parameter `name`, parsed; `None` when absent.
    pub fn take<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, BadQuery> {
        match self.0.remove(name) {
            None => Ok(None),
            Some(v) => parse(&v)
                .map(Some)
                .map_err(|e| bad(format!("bad {name} {v:?}: {e}"))),
        }
    }

    /// Fails on any parameter that was not taken.
    pub fn finish(self) -> Result<(), BadQuery> {
        match self.0.keys().next() {
            Some(k) => Err(bad(format!("unknown parameter {k}"))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_decoded_and_bad_ones_refused() {
        let mut p = Params::parse("a=x%3Dy+z&b=%C3%A9").unwrap();
        assert_eq!(p.take("a", |v| Ok(v.to_owned())).unwrap().unwrap(), "x=y z");
        assert_eq!(p.take("b", |v| Ok(v.to_owned())).unwrap().unwrap(), "é");
        assert_eq!(p.take("c", |v| Ok(v.to_owned())).unwrap(), None);
        p.finish().unwrap();
        assert!(Params::parse("a=%zz").is_err());
        assert!(Params::parse("a=%4").is_err());
        assert_eq!(
            Params::parse("a=%FF").unwrap_err(),
            bad("the query string is not UTF-8")
        );
    }

    #[test]
    fn parameters_come_once_and_are_all_used() {
        assert_eq!(
            Params::parse("a=1&a=2").unwrap_err(),
            bad("parameter a given twice")
        );
        let mut p = Params::parse("a=1&typo=2").unwrap();
        assert_eq!(
            p.take("a", |v| v.parse::<u8>().map_err(|e| e.to_string()))
                .unwrap(),
            Some(1)
        );
        assert_eq!(p.finish().unwrap_err(), bad("unknown parameter typo"));
        let mut p = Params::parse("n=x").unwrap();
        assert!(
            p.take("n", |v| v.parse::<u8>().map_err(|e| e.to_string()))
                .is_err()
        );
    }
}
