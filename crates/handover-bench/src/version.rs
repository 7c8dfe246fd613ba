//! Which build answered a request: v1 or v2, recognised by the greeting the body starts with,
//! plus the `pid=<PID>` the body may carry.

use serde::Serialize;

/// One of the two builds that upgrades alternate between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    /// The build the server starts with.
    V1,
    /// The build the first upgrade switches to.
    V2,
}

impl Version {
    /// The build an upgrade from `self` switches to.
    pub fn other(self) -> Self {
        match self {
            Version::V1 => Version::V2,
            Version::V2 => Version::V1,
        }
    }

    /// `"v1→v2"` style label of an upgrade from `self` to `to`.
    pub fn label_to(self, to: Version) -> String {
        format!("{}→{}", self.name(), to.name())
    }

    fn name(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }

    /// 0 for v1, 1 for v2 (for per-version counters).
    pub fn index(self) -> usize {
        match self {
            Version::V1 => 0,
            Version::V2 => 1,
        }
    }
}

/// The body prefixes that identify each build.
#[derive(Debug, Clone)]
pub struct Greetings {
    v1: Vec<u8>,
    v2: Vec<u8>,
}

impl Greetings {
    /// Greetings of the v1 and v2 builds.
    pub fn new(v1: &str, v2: &str) -> Self {
        Greetings {
            v1: v1.as_bytes().to_vec(),
            v2: v2.as_bytes().to_vec(),
        }
    }

    /// The build whose greeting `body` starts with, if any (the longer greeting is tried
    /// first, so one greeting may be a prefix of the other).
    pub fn classify(&self, body: &[u8]) -> Option<Version> {
        let (long, short) = if self.v1.len() >= self.v2.len() {
            ((&self.v1, Version::V1), (&self.v2, Version::V2))
        } else {
            ((&self.v2, Version::V2), (&self.v1, Version::V1))
        };
        [long, short]
            .into_iter()
            .find(|(g, _)| body.starts_with(g))
            .map(|(_, v)| v)
    }
}

/// The number after the first `pid=` in `body`.
pub fn parse_pid(body: &[u8]) -> Option<u32> {
    let at = body.windows(4).position(|w| w == b"pid=")? + 4;
    let digits = body[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&body[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_and_parses_pid() {
        let g = Greetings::new("v1 Welcome Server", "v2 Welcome New Server");
        assert_eq!(g.classify(b"v1 Welcome Server pid=42"), Some(Version::V1));
        assert_eq!(
            g.classify(b"v2 Welcome New Server pid=7"),
            Some(Version::V2)
        );
        assert_eq!(g.classify(b"v3 nope"), None);
        assert_eq!(parse_pid(b"v1 Welcome Server pid=42"), Some(42));
        assert_eq!(parse_pid(b"no pid"), None);
    }
}
