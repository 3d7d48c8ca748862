//! What a device's `port:` names: a serial device's path, or a network transport's URL
//! (`tcp://`, `rfc2217://`, `modbus-tcp://`). Parsed in one place so `check`, the grouping of
//! devices into buses and the port task agree on what a port is; nothing here does I/O, and it
//! uses nothing of the crate (config and serial both depend on it).

use std::fmt;
use std::path::{Path, PathBuf};

/// The transports a URL can name, by scheme.
const SCHEMES: [(&str, Transport); 3] = [
    ("tcp", Transport::Tcp),
    ("rfc2217", Transport::Rfc2217),
    ("modbus-tcp", Transport::ModbusTcp),
];

/// What to write instead of a URL that cannot be used.
const FORMS: &str = "write tcp://HOST:PORT (a raw TCP serial server, also Modbus RTU over TCP), \
rfc2217://HOST:PORT (a telnet serial server with RFC 2217, which takes the line settings) or \
modbus-tcp://HOST:PORT (Modbus TCP units, usually port 502), e.g. tcp://192.168.1.50:4001; \
or a serial device's path such as /dev/ttyUSB0";

/// A network transport under a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Bytes both ways as on the line (ser2net raw, USR-TCP232, Moxa "TCP server" mode).
    Tcp,
    /// Telnet with the COM-PORT-OPTION: the line settings travel to the server.
    Rfc2217,
    /// Modbus TCP (MBAP frames), converted to and from the RTU frames the bus speaks.
    ModbusTcp,
}

impl Transport {
    /// The URL scheme that names it.
    pub fn scheme(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Rfc2217 => "rfc2217",
            Transport::ModbusTcp => "modbus-tcp",
        }
    }
}

/// Where a port's bytes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A serial device (or pseudo-terminal) by its path.
    Device(PathBuf),
    /// A TCP server: its transport, host name or address (IPv6 without brackets), and port.
    Net {
        /// How the bytes are carried.
        transport: Transport,
        /// Name or address, lower-cased.
        host: String,
        /// TCP port.
        port: u16,
    },
}

/// Why a `port:` URL cannot be used: the message and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressError {
    /// What is wrong, naming the URL.
    pub message: String,
    /// What to write instead.
    pub help: String,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.help)
    }
}

impl Address {
    /// Reads a `port:` value. A path is a device whatever it looks like unless it starts like
    /// a URL (`scheme://`, or a known scheme and a colon); a URL must be one this knows, with
    /// a host and a port number and nothing else.
    pub fn parse(port: &Path) -> Result<Address, AddressError> {
        let text = port.to_string_lossy();
        let Some((scheme, rest)) = text.split_once(':') else {
            return Ok(Address::Device(port.to_owned()));
        };
        let known = SCHEMES.iter().find(|(s, _)| s.eq_ignore_ascii_case(scheme));
        let url_like = !scheme.is_empty()
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        if !(url_like && (rest.starts_with("//") || known.is_some())) {
            return Ok(Address::Device(port.to_owned()));
        }
        let Some(&(_, transport)) = known else {
            return Err(AddressError {
                message: format!("`{text}`: `{scheme}://` is not a transport serial2mqtt knows"),
                help: FORMS.into(),
            });
        };
        let bad = |why: String| AddressError {
            message: format!("`{text}` {why}"),
            help: FORMS.into(),
        };
        if !rest.starts_with("//") {
            return Err(bad(format!("lacks the `//` after `{scheme}:`")));
        }
        let url = url::Url::parse(&text).map_err(|e| match e {
            url::ParseError::EmptyHost => bad("names no host".into()),
            e => bad(format!("is not a URL: {e}")),
        })?;
        let host = match url.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(h) => h.to_string().to_ascii_lowercase(),
            None => String::new(),
        };
        if host.is_empty() {
            return Err(bad("names no host".into()));
        }
        let Some(port) = url.port() else {
            return Err(bad("has no port number (`:PORT` after the host)".into()));
        };
        if port == 0 {
            return Err(bad("names port 0, which no server listens on".into()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("carries a user name: write only HOST:PORT".into()));
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(bad(
                "has more than HOST:PORT after the scheme (a path, ? or #)".into(),
            ));
        }
        Ok(Address::Net {
            transport,
            host,
            port,
        })
    }

    /// What identifies the port among a config's devices: devices with the same key share one
    /// line. A device's path as the system resolves it (two links to one adapter are one
    /// port); a URL in its normal form (`tcp://gw.local:4001`).
    pub fn key(&self) -> PathBuf {
        match self {
            Address::Device(p) => std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()),
            Address::Net { .. } => PathBuf::from(self.to_string()),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Device(p) => write!(f, "{}", p.display()),
            Address::Net {
                transport,
                host,
                port,
            } if host.contains(':') => write!(f, "{}://[{host}]:{port}", transport.scheme()),
            Address::Net {
                transport,
                host,
                port,
            } => write!(f, "{}://{host}:{port}", transport.scheme()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Address, AddressError> {
        Address::parse(Path::new(s))
    }

    #[test]
    fn paths_stay_paths_and_urls_are_read_with_their_normal_form() {
        for p in [
            "/dev/ttyUSB0",
            "ttyS0",
            "/dev/serial/by-id/usb-FTDI:x",
            "./a:b",
        ] {
            assert_eq!(parse(p), Ok(Address::Device(PathBuf::from(p))), "{p}");
        }
        let a = parse("TCP://GW.Local:4001").unwrap();
        assert_eq!(a.to_string(), "tcp://gw.local:4001");
        assert_eq!(
            parse("modbus-tcp://[::1]:502").unwrap().to_string(),
            "modbus-tcp://[::1]:502"
        );
        assert_eq!(
            parse("rfc2217://10.0.0.7:2217/").unwrap(),
            Address::Net {
                transport: Transport::Rfc2217,
                host: "10.0.0.7".into(),
                port: 2217
            }
        );
        assert_eq!(
            parse("tcp://gw.local:4001").unwrap().key(),
            parse("tcp://GW.local:4001").unwrap().key()
        );
    }

    #[test]
    fn a_url_that_cannot_be_used_says_why() {
        for (url, why) in [
            ("udp://h:1", "`udp://` is not a transport"),
            ("tcp:h:1", "lacks the `//`"),
            ("tcp://h", "has no port number"),
            ("tcp://:502", "names no host"),
            ("tcp://h:99999", "is not a URL"),
            ("tcp://ho st:1", "is not a URL"),
            ("tcp://h:1/x", "more than HOST:PORT"),
            ("tcp://u@h:1", "user name"),
            ("tcp://h:0", "port 0"),
        ] {
            let e = parse(url).expect_err(url);
            assert!(e.message.contains(why), "{url}: {e}");
            assert!(e.help.contains("tcp://HOST:PORT"), "{url}: {e}");
        }
    }
}
