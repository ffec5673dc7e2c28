//! The defence against server-side request forgery: webhooks go to the public internet only.
//!
//! A webhook URL is chosen by an API user, and the server dials it from inside the operator's
//! network. Without a guard, a URL could make the server poke at its own loopback services, the
//! cloud metadata endpoint (169.254.169.254) or private hosts. The guard works at two moments:
//!
//! - at registration, [`check_url`] refuses what is wrong on its face: another scheme, user info,
//!   a literal address in a refused range;
//! - at every delivery, [`connect`] resolves the host itself and checks every address it got
//!   before dialling it, so the address connected to is the address checked. A second lookup
//!   (one to check, one to dial) would let a name that resolves differently each time — DNS
//!   rebinding — slip through; so would trusting the registration-time check.
//!
//! An operator who does run endpoints on a private network lists those networks in
//! [`AllowedNetworks`]; a listed address is permitted whatever range it is in.
//!
//! The ranges are written out here rather than taken from `std`'s `is_global` and friends, which
//! are not stable in the Rust this crate supports (1.85).

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use tokio::net::TcpStream;

/// The longest webhook URL accepted, in bytes.
pub const URL_BYTES_MAX: usize = 2048;

/// The port of an `http` URL that names none.
const HTTP_PORT: u16 = 80;

/// IPv4 ranges no webhook goes to: (network, prefix length, name).
///
/// Order matters only where ranges nest: the broadcast address comes before the reserved
/// 240.0.0.0/4 that holds it, so it is named for what it is.
const REFUSED_V4: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(255, 255, 255, 255), 32, "broadcast"),
    (
        Ipv4Addr::new(0, 0, 0, 0),
        8,
        "unspecified (\"this network\")",
    ),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private"),
    (
        Ipv4Addr::new(100, 64, 0, 0),
        10,
        "shared (carrier-grade NAT)",
    ),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (Ipv4Addr::new(169, 254, 0, 0), 16, "link-local"),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private"),
    (Ipv4Addr::new(192, 0, 0, 0), 24, "IETF protocol assignment"),
    (Ipv4Addr::new(192, 0, 2, 0), 24, "documentation"),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking"),
    (Ipv4Addr::new(198, 51, 100, 0), 24, "documentation"),
    (Ipv4Addr::new(203, 0, 113, 0), 24, "documentation"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved"),
];

/// IPv6 ranges no webhook goes to, once the forms that embed an IPv4 address have been judged
/// by that address (see [`embedded_v4`]).
const REFUSED_V6: &[(Ipv6Addr, u8, &str)] = &[
    (Ipv6Addr::UNSPECIFIED, 128, "unspecified"),
    (Ipv6Addr::LOCALHOST, 128, "loopback"),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        "documentation",
    ),
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        "unique local",
    ),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, "link-local"),
    (
        Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
        48,
        "NAT64 (local use)",
    ),
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10, "site-local"),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, "multicast"),
];

/// The NAT64 well-known prefix 64:ff9b::/96 (RFC 6052): a gateway turns these into IPv4
/// connections to the last 32 bits, which may well be a private address.
const NAT64_PREFIX: Ipv6Addr = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0);

fn in_v4(ip: Ipv4Addr, network: Ipv4Addr, prefix_len: u8) -> bool {
    debug_assert!(prefix_len <= 32);
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0);
    u32::from(ip) & mask == u32::from(network)
}

fn in_v6(ip: Ipv6Addr, network: Ipv6Addr, prefix_len: u8) -> bool {
    debug_assert!(prefix_len <= 128);
    let mask = u128::MAX
        .checked_shl(128 - u32::from(prefix_len))
        .unwrap_or(0);
    u128::from(ip) & mask == u128::from(network)
}

/// The IPv4 address an IPv6 address stands for, when it is one of the forms that reach an IPv4
/// host: IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d, deprecated but still routed
/// by some stacks) and NAT64 (64:ff9b::a.b.c.d).
///
/// `::` and `::1` are left alone: they are IPv6's own unspecified and loopback addresses, not
/// 0.0.0.0 and 0.0.0.1.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if ip == Ipv6Addr::UNSPECIFIED || ip == Ipv6Addr::LOCALHOST {
        return None;
    }
    let last_32 = Ipv4Addr::from(u128::from(ip) as u32);
    let mapped = in_v6(ip, Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96);
    let compatible = in_v6(ip, Ipv6Addr::UNSPECIFIED, 96);
    let nat64 = in_v6(ip, NAT64_PREFIX, 96);
    (mapped || compatible || nat64).then_some(last_32)
}

/// The name of the refused range `ip` is in, or `None` for an address webhooks may go to.
///
/// Refused: unspecified, loopback, private (RFC 1918), shared (RFC 6598), link-local, unique
/// local, site-local, multicast, broadcast, reserved, benchmarking and documentation ranges. An
/// IPv6 address that embeds an IPv4 one (mapped, compatible, NAT64) is judged by the IPv4 one.
pub fn refused_range(ip: IpAddr) -> Option<&'static str> {
    let v4 = match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => v4,
            None => {
                return REFUSED_V6
                    .iter()
                    .find(|(network, len, _)| in_v6(v6, *network, *len))
                    .map(|(_, _, name)| *name)
            }
        },
    };
    REFUSED_V4
        .iter()
        .find(|(network, len, _)| in_v4(v4, *network, *len))
        .map(|(_, _, name)| *name)
}

/// Networks the operator allows webhooks to reach even inside refused ranges, e.g. an internal
/// subnet where the endpoints run. Empty by default: nothing refused is allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedNetworks(Vec<IpNet>);

/// Why a text is not a list of networks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NetworksError {
    /// One entry is neither an address nor a network.
    #[error("{0:?} is neither an IP address nor a network such as 10.0.0.0/8 or fd00::/8")]
    Entry(String),
}

impl AllowedNetworks {
    /// Reads a comma-separated list of networks (`10.1.0.0/16`) and single addresses
    /// (`192.168.1.20`, `fd00::1`); spaces around entries are ignored and an empty text is the
    /// empty list.
    pub fn parse(list: &str) -> Result<AllowedNetworks, NetworksError> {
        let mut networks = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let network = match (entry.parse::<IpNet>(), entry.parse::<IpAddr>()) {
                // A network written with host bits set (10.1.2.3/8) means the network.
                (Ok(network), _) => network.trunc(),
                (Err(_), Ok(ip)) => IpNet::from(ip),
                (Err(_), Err(_)) => return Err(NetworksError::Entry(entry.to_string())),
            };
            networks.push(network);
        }
        Ok(AllowedNetworks(networks))
    }

    /// Whether `ip` is in one of the networks. An IPv6 address that embeds an IPv4 address
    /// matches the IPv4 networks too, as [`refused_range`] judges it by that address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let v4 = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.0
            .iter()
            .any(|network| network.contains(&ip) || v4.is_some_and(|v4| network.contains(&v4)))
    }
}

impl FromStr for AllowedNetworks {
    type Err = NetworksError;

    fn from_str(list: &str) -> Result<AllowedNetworks, NetworksError> {
        AllowedNetworks::parse(list)
    }
}

/// An address webhooks are not delivered to, and the range that is why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{ip} is in the {range} range, to which webhooks are not delivered")]
pub struct RefusedAddress {
    /// The address.
    pub ip: IpAddr,
    /// The name of its range, as [`refused_range`] gives it.
    pub range: &'static str,
}

/// Whether a webhook may go to `ip`: yes if the operator allowed its network, otherwise yes
/// unless it is in a refused range.
pub fn permitted(ip: IpAddr, allow: &AllowedNetworks) -> Result<(), RefusedAddress> {
    if allow.contains(ip) {
        return Ok(());
    }
    match refused_range(ip) {
        Some(range) => Err(RefusedAddress { ip, range }),
        None => Ok(()),
    }
}

/// Where a checked webhook URL points: what to resolve and dial, and what to put in the request
/// line and the `Host` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    host: String,
    port: u16,
    path_and_query: String,
    host_header: String,
}

impl Target {
    /// The host to resolve: a name, or an address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port to dial: the URL's, or 80.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The request target, e.g. `/hooks/petitions?team=7`; `/` when the URL has no path.
    pub fn path_and_query(&self) -> &str {
        &self.path_and_query
    }

    /// The `Host` header: the URL's authority (host, and port if the URL names one).
    pub fn host_header(&self) -> &str {
        &self.host_header
    }
}

/// Why a webhook URL is refused. The messages are shown to API users as they are.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// The URL is longer than [`URL_BYTES_MAX`].
    #[error("the URL is longer than {URL_BYTES_MAX} bytes")]
    TooLong,
    /// The text is not a URL.
    #[error("the URL is not valid: {0}")]
    Malformed(hyper::http::uri::InvalidUri),
    /// The URL has no scheme (`example.com/hook`).
    #[error("the URL must start with http://")]
    NoScheme,
    /// The URL is `https`.
    #[error("https URLs are not supported: this server has no TLS client, so give an http:// URL")]
    Https,
    /// The scheme is neither `http` nor `https`.
    #[error("the URL's scheme is {0:?}, and only http is supported")]
    Scheme(String),
    /// The URL holds `user:password@`.
    #[error("the URL must not contain a user name or password")]
    UserInfo,
    /// The URL has no host (`http:///hook`, `http://:8080/`).
    #[error("the URL has no host")]
    NoHost,
    /// The URL's port is 0, out of range, or not a number.
    #[error("the URL's port must be a number from 1 to 65535")]
    Port,
    /// The host is a number in a form other than a dotted quad (`127.1`, `2130706433`,
    /// `0x7f000001`, `0177.0.0.1`), which resolvers read as an address.
    #[error(
        "the host {0} is a number but not a dotted-quad IPv4 address: write the address in \
         full (a.b.c.d) or give a name"
    )]
    NumericHost(String),
    /// The host is an address webhooks are not delivered to.
    #[error(transparent)]
    Refused(#[from] RefusedAddress),
}

/// Checks a webhook URL at registration and says where it points.
///
/// Only what the URL itself shows is judged: a literal address in a refused range is refused
/// here, but a name is not resolved, since what it resolves to now says nothing about later.
/// [`connect`] judges the addresses a name resolves to at every delivery.
pub fn check_url(url: &str, allow: &AllowedNetworks) -> Result<Target, UrlError> {
    if url.len() > URL_BYTES_MAX {
        return Err(UrlError::TooLong);
    }
    let uri: hyper::Uri = url.parse().map_err(UrlError::Malformed)?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(UrlError::Https),
        Some(other) => return Err(UrlError::Scheme(other.to_string())),
        None => return Err(UrlError::NoScheme),
    }
    let authority = uri.authority().ok_or(UrlError::NoHost)?;
    if authority.as_str().contains('@') {
        return Err(UrlError::UserInfo);
    }
    let bracketed = authority.host();
    let host = bracketed
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(bracketed);
    if host.is_empty() {
        return Err(UrlError::NoHost);
    }
    // Read the port from the text after the host rather than with `port_u16`, which answers
    // `None` both for no port and for one out of range (`:99999`), and the second must not
    // quietly become port 80. Without user info the authority starts with the host.
    let after_host = authority
        .as_str()
        .strip_prefix(bracketed)
        .ok_or(UrlError::Port)?;
    let port = match after_host.strip_prefix(':') {
        None | Some("") => HTTP_PORT,
        Some(digits) => match digits.parse::<u16>() {
            Ok(port) if port != 0 && digits.bytes().all(|b| b.is_ascii_digit()) => port,
            _ => return Err(UrlError::Port),
        },
    };
    match host.parse::<IpAddr>() {
        Ok(ip) => permitted(ip, allow)?,
        // No top-level domain is numeric, so a host whose last label is a number is meant as
        // an address; resolvers take the shortened, decimal, octal and hex forms as one, and
        // the literal-address check must not be walked around by a form it cannot parse.
        Err(_) if numeric_host(host) => return Err(UrlError::NumericHost(host.to_string())),
        Err(_) => {}
    }
    // `path()` is "/" for an empty path; the fragment, never sent, is already dropped.
    let path_and_query = match uri.query() {
        Some(query) => format!("{}?{query}", uri.path()),
        None => uri.path().to_string(),
    };
    Ok(Target {
        host: host.to_string(),
        port,
        path_and_query,
        host_header: authority.as_str().to_string(),
    })
}

/// Whether `host` (not bracketed) ends in a label that is a decimal or hex number.
fn numeric_host(host: &str) -> bool {
    let Some(last) = host.trim_end_matches('.').rsplit('.').next() else {
        return false;
    };
    let hex = last
        .strip_prefix("0x")
        .or_else(|| last.strip_prefix("0X"))
        .is_some_and(|digits| digits.bytes().all(|b| b.is_ascii_hexdigit()));
    hex || (!last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()))
}

/// Why [`connect`] has no connection.
///
/// Each message is whole on its own, the underlying error included, because it is stored as a
/// webhook's last error and shown as it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The name could not be resolved.
    #[error("could not resolve {host}: {error}")]
    Resolve {
        /// The name.
        host: String,
        /// What the resolver said.
        error: io::Error,
    },
    /// The name resolved to no address at all.
    #[error("{host} resolves to no address")]
    NoAddress {
        /// The name.
        host: String,
    },
    /// Every address the name resolved to is refused.
    #[error("every address of {host} is refused: {refused}")]
    Refused {
        /// The name.
        host: String,
        /// The first refused address, and its range.
        refused: RefusedAddress,
    },
    /// Every permitted address refused or failed the connection.
    #[error("could not connect to {addr}: {error}")]
    Connect {
        /// The last address tried.
        addr: SocketAddr,
        /// Why it failed.
        error: io::Error,
    },
    /// Resolving and connecting took longer than the timeout.
    #[error("no connection within {}", Millis(*.0))]
    Timeout(Duration),
}

/// A duration in whole milliseconds, for messages people read.
pub(crate) struct Millis(pub(crate) Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ms", self.0.as_millis())
    }
}

/// Resolves the target, checks every address with [`permitted`], and connects to the first
/// permitted address that answers, trying them in the resolver's order.
///
/// The stream returned is connected to the `SocketAddr` returned, which is one that was checked:
/// nothing resolves the name a second time. Everything, resolving included, is bounded by
/// `timeout`.
pub async fn connect(
    target: &Target,
    allow: &AllowedNetworks,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), ConnectError> {
    let attempt = async {
        let host = target.host();
        let addrs = tokio::net::lookup_host((host, target.port()))
            .await
            .map_err(|error| ConnectError::Resolve {
                host: host.to_string(),
                error,
            })?;
        let mut refused = None;
        let mut failed = None;
        for addr in addrs {
            if let Err(error) = permitted(addr.ip(), allow) {
                refused.get_or_insert(error);
                continue;
            }
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok((stream, addr)),
                Err(error) => failed = Some(ConnectError::Connect { addr, error }),
            }
        }
        // A connection failure says more than a refusal when both happened: the name did have
        // an address the webhook may go to.
        Err(match (failed, refused) {
            (Some(failed), _) => failed,
            (None, Some(refused)) => ConnectError::Refused {
                host: host.to_string(),
                refused,
            },
            (None, None) => ConnectError::NoAddress {
                host: host.to_string(),
            },
        })
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(Err(ConnectError::Timeout(timeout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    fn allow(list: &str) -> AllowedNetworks {
        AllowedNetworks::parse(list).expect("test allow list")
    }

    #[test]
    fn refused_ranges() {
        let check = |text: &str, expected: Option<&str>| {
            assert_eq!(refused_range(ip(text)), expected, "{text}");
        };
        check("0.0.0.0", Some("unspecified (\"this network\")"));
        check("0.1.2.3", Some("unspecified (\"this network\")"));
        check("::", Some("unspecified"));
        check("127.0.0.1", Some("loopback"));
        check("127.255.255.254", Some("loopback"));
        check("::1", Some("loopback"));
        check("10.0.0.1", Some("private"));
        check("10.255.255.255", Some("private"));
        check("172.16.0.1", Some("private"));
        check("172.31.255.255", Some("private"));
        check("192.168.1.1", Some("private"));
        check("169.254.169.254", Some("link-local"));
        check("fe80::1", Some("link-local"));
        check("febf:ffff::1", Some("link-local"));
        check("fc00::1", Some("unique local"));
        check("fd12:3456::1", Some("unique local"));
        check("fec0::1", Some("site-local"));
        check("100.64.0.1", Some("shared (carrier-grade NAT)"));
        check("100.127.255.255", Some("shared (carrier-grade NAT)"));
        check("224.0.0.1", Some("multicast"));
        check("239.255.255.250", Some("multicast"));
        check("ff02::1", Some("multicast"));
        check("255.255.255.255", Some("broadcast"));
        check("240.0.0.1", Some("reserved"));
        check("192.0.0.8", Some("IETF protocol assignment"));
        check("192.0.2.1", Some("documentation"));
        check("198.51.100.7", Some("documentation"));
        check("203.0.113.9", Some("documentation"));
        check("2001:db8::1", Some("documentation"));
        check("198.18.0.1", Some("benchmarking"));
        // Just outside the refused ranges.
        check("9.255.255.255", None);
        check("11.0.0.0", None);
        check("100.63.255.255", None);
        check("100.128.0.0", None);
        check("126.255.255.255", None);
        check("128.0.0.0", None);
        check("169.253.255.255", None);
        check("172.15.255.255", None);
        check("172.32.0.0", None);
        check("192.167.255.255", None);
        check("192.169.0.0", None);
        check("223.255.255.255", None);
        check("fbff:ffff::1", None);
        // Public addresses.
        check("8.8.8.8", None);
        check("1.1.1.1", None);
        check("93.184.216.34", None);
        check("2606:4700:4700::1111", None);
        check("2a00:1450:4001:80b::200e", None);
    }

    #[test]
    fn embedded_ipv4_is_judged_as_ipv4() {
        let check = |text: &str, expected: Option<&str>| {
            assert_eq!(refused_range(ip(text)), expected, "{text}");
        };
        // IPv4-mapped.
        check("::ffff:127.0.0.1", Some("loopback"));
        check("::ffff:10.1.2.3", Some("private"));
        check("::ffff:169.254.169.254", Some("link-local"));
        check("::ffff:7f00:1", Some("loopback"));
        check("::ffff:0.0.0.0", Some("unspecified (\"this network\")"));
        check("::ffff:8.8.8.8", None);
        // IPv4-compatible.
        check("::127.0.0.1", Some("loopback"));
        check("::192.168.0.1", Some("private"));
        check("::0.0.0.2", Some("unspecified (\"this network\")"));
        check("::8.8.8.8", None);
        // NAT64.
        check("64:ff9b::10.0.0.1", Some("private"));
        check("64:ff9b::127.0.0.1", Some("loopback"));
        check("64:ff9b::8.8.8.8", None);
    }

    #[test]
    fn allowed_networks_parse() {
        assert_eq!(allow(""), AllowedNetworks::default());
        assert_eq!(allow(" , "), AllowedNetworks::default());
        let list = allow("10.1.0.0/16, 192.168.1.20,fd00::/8 ,::1,");
        assert!(list.contains(ip("10.1.255.1")));
        assert!(!list.contains(ip("10.2.0.1")));
        assert!(list.contains(ip("192.168.1.20")));
        assert!(!list.contains(ip("192.168.1.21")));
        assert!(list.contains(ip("fd00::5")));
        assert!(!list.contains(ip("fe00::5")));
        assert!(list.contains(ip("::1")));
        assert!(!list.contains(ip("::2")));
        assert!(!list.contains(ip("8.8.8.8")));
        // A network written with host bits set is the network: 10.2.3.4/8 is 10.0.0.0/8.
        let list = allow("10.2.3.4/8");
        assert!(list.contains(ip("10.200.0.1")));
        assert!(!list.contains(ip("11.0.0.1")));
        for bad in [
            "10.0.0.0/33",
            "localhost",
            "10.0.0",
            "fd00::/129",
            "1.2.3.4,nope",
        ] {
            assert!(
                matches!(AllowedNetworks::parse(bad), Err(NetworksError::Entry(_))),
                "{bad}"
            );
        }
        assert_eq!(
            "nope".parse::<AllowedNetworks>().map_err(|e| e.to_string()),
            Err(
                "\"nope\" is neither an IP address nor a network such as 10.0.0.0/8 or fd00::/8"
                    .to_string()
            )
        );
    }

    #[test]
    fn allow_list_overrides_refused_ranges() {
        let none = AllowedNetworks::default();
        let list = allow("127.0.0.0/8,10.1.0.0/16,fd00::/8");
        assert_eq!(
            permitted(ip("127.0.0.1"), &none),
            Err(RefusedAddress {
                ip: ip("127.0.0.1"),
                range: "loopback"
            })
        );
        assert_eq!(permitted(ip("127.0.0.1"), &list), Ok(()));
        assert_eq!(permitted(ip("::ffff:127.0.0.1"), &list), Ok(()));
        assert_eq!(permitted(ip("10.1.2.3"), &list), Ok(()));
        assert!(permitted(ip("10.2.0.1"), &list).is_err());
        assert_eq!(permitted(ip("fd00::1"), &list), Ok(()));
        assert!(permitted(ip("fc00::1"), &list).is_err());
        assert!(
            permitted(ip("::1"), &list).is_err(),
            "127/8 does not allow ::1"
        );
        assert_eq!(permitted(ip("8.8.8.8"), &none), Ok(()));
        assert_eq!(
            RefusedAddress {
                ip: ip("10.0.0.1"),
                range: "private"
            }
            .to_string(),
            "10.0.0.1 is in the private range, to which webhooks are not delivered"
        );
    }

    #[test]
    fn check_url_accepts() {
        let check = |url: &str, host: &str, port: u16, path: &str, host_header: &str| {
            let target = check_url(url, &AllowedNetworks::default()).expect(url);
            assert_eq!(target.host(), host, "{url}");
            assert_eq!(target.port(), port, "{url}");
            assert_eq!(target.path_and_query(), path, "{url}");
            assert_eq!(target.host_header(), host_header, "{url}");
        };
        check(
            "http://example.com/hooks",
            "example.com",
            80,
            "/hooks",
            "example.com",
        );
        check("http://example.com", "example.com", 80, "/", "example.com");
        check(
            "http://example.com:8080/a/b?x=1&y=2#frag",
            "example.com",
            8080,
            "/a/b?x=1&y=2",
            "example.com:8080",
        );
        check(
            "http://example.com?x=1",
            "example.com",
            80,
            "/?x=1",
            "example.com",
        );
        check("http://8.8.8.8:81/", "8.8.8.8", 81, "/", "8.8.8.8:81");
        check(
            "http://[2606:4700:4700::1111]/h",
            "2606:4700:4700::1111",
            80,
            "/h",
            "[2606:4700:4700::1111]",
        );
        // Names are judged when they are resolved, not here.
        check(
            "http://localhost:9000/",
            "localhost",
            9000,
            "/",
            "localhost:9000",
        );
        check(
            "http://example.com:/",
            "example.com",
            80,
            "/",
            "example.com:",
        );
        check(
            "http://[::ffff:8.8.8.8]:65535/",
            "::ffff:8.8.8.8",
            65535,
            "/",
            "[::ffff:8.8.8.8]:65535",
        );
    }

    #[test]
    fn check_url_refuses() {
        let none = AllowedNetworks::default();
        let check = |url: &str, expected: fn(&UrlError) -> bool| {
            let error = check_url(url, &none).expect_err(url);
            assert!(expected(&error), "{url}: {error:?}");
        };
        check("https://example.com/", |e| matches!(e, UrlError::Https));
        check(
            "ftp://example.com/",
            |e| matches!(e, UrlError::Scheme(s) if s == "ftp"),
        );
        check("example.com/hook", |e| matches!(e, UrlError::Malformed(_)));
        check("/hook", |e| matches!(e, UrlError::NoScheme));
        check("example.com:80", |e| matches!(e, UrlError::NoScheme));
        check("http://user:pw@example.com/", |e| {
            matches!(e, UrlError::UserInfo)
        });
        check("http://user@example.com/", |e| {
            matches!(e, UrlError::UserInfo)
        });
        check("http://:8080/", |e| matches!(e, UrlError::NoHost));
        check("http://example.com:0/", |e| matches!(e, UrlError::Port));
        check("http://example.com:65536/", |e| matches!(e, UrlError::Port));
        check("http://example.com:99999/", |e| matches!(e, UrlError::Port));
        check("http://example.com:+80/", |e| matches!(e, UrlError::Port));
        check("http://exa mple.com/", |e| {
            matches!(e, UrlError::Malformed(_))
        });
        check("", |e| matches!(e, UrlError::Malformed(_)));
        check(
            &format!("http://example.com/{}", "a".repeat(URL_BYTES_MAX)),
            |e| matches!(e, UrlError::TooLong),
        );
        check(
            "http://127.0.0.1/",
            |e| matches!(e, UrlError::Refused(r) if r.range == "loopback"),
        );
        check(
            "http://169.254.169.254/latest/meta-data/",
            |e| matches!(e, UrlError::Refused(r) if r.range == "link-local"),
        );
        for numeric in [
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://10.1.2.3.4/",
        ] {
            check(numeric, |e| matches!(e, UrlError::NumericHost(_)));
        }
        check(
            "http://[64:ff9b:1::a00:1]/",
            |e| matches!(e, UrlError::Refused(r) if r.range == "NAT64 (local use)"),
        );
        check(
            "http://[::1]:8080/",
            |e| matches!(e, UrlError::Refused(r) if r.range == "loopback"),
        );
        check(
            "http://[::ffff:10.0.0.1]/",
            |e| matches!(e, UrlError::Refused(r) if r.range == "private"),
        );
        // Exactly at the limit is fine.
        let prefix = "http://example.com/";
        let url = format!("{prefix}{}", "a".repeat(URL_BYTES_MAX - prefix.len()));
        assert!(check_url(&url, &none).is_ok());
        // Allowed networks let literal addresses through.
        let target = check_url("http://127.0.0.1:9/", &allow("127.0.0.0/8")).expect("allowed");
        assert_eq!((target.host(), target.port()), ("127.0.0.1", 9));
    }

    #[test]
    fn url_errors_read_as_sentences() {
        let none = AllowedNetworks::default();
        let message = |url: &str| check_url(url, &none).expect_err(url).to_string();
        assert_eq!(
            message("https://example.com/"),
            "https URLs are not supported: this server has no TLS client, so give an http:// URL"
        );
        assert_eq!(
            message("http://10.0.0.1/"),
            "10.0.0.1 is in the private range, to which webhooks are not delivered"
        );
        assert_eq!(
            message("gopher://example.com/"),
            "the URL's scheme is \"gopher\", and only http is supported"
        );
        assert!(message("http://exa mple.com/").starts_with("the URL is not valid: "));
    }

    #[tokio::test]
    async fn connect_checks_the_address_it_dials() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let local = listener.local_addr().expect("local addr");
        let loopback = allow("127.0.0.0/8");
        let target = check_url(&format!("http://127.0.0.1:{}/", local.port()), &loopback)
            .expect("allowed url");
        let second = Duration::from_secs(5);

        let refused = connect(&target, &AllowedNetworks::default(), second).await;
        match refused {
            Err(ConnectError::Refused { refused, .. }) => assert_eq!(refused.range, "loopback"),
            other => panic!("expected a refusal, got {other:?}"),
        }

        let (stream, addr) = connect(&target, &loopback, second).await.expect("connects");
        assert_eq!(addr, local);
        assert_eq!(stream.peer_addr().expect("peer"), local);
        let (_accepted, from) = listener.accept().await.expect("accept");
        assert_eq!(from, stream.local_addr().expect("local"));
    }

    #[tokio::test]
    async fn connect_refuses_a_name_that_resolves_to_loopback() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let none = AllowedNetworks::default();
        let target = check_url(&format!("http://localhost:{port}/"), &none)
            .expect("names pass registration");
        let error = connect(&target, &none, Duration::from_secs(5))
            .await
            .expect_err("localhost is loopback");
        match &error {
            ConnectError::Refused { host, refused } => {
                assert_eq!(host, "localhost");
                assert_eq!(refused.range, "loopback");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(
            error
                .to_string()
                .starts_with("every address of localhost is refused: "),
            "{error}"
        );
        // With loopback allowed, the same name connects.
        let (_, addr) = connect(&target, &allow("127.0.0.0/8, ::1"), Duration::from_secs(5))
            .await
            .expect("allowed");
        assert!(addr.ip().is_loopback());
    }

    #[tokio::test]
    async fn connect_reports_a_closed_port() {
        // Bind and drop, so the port is (almost certainly) closed.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("local addr").port()
        };
        let loopback = allow("127.0.0.0/8");
        let target = check_url(&format!("http://127.0.0.1:{port}/"), &loopback).expect("url");
        let error = connect(&target, &loopback, Duration::from_secs(5))
            .await
            .expect_err("nothing listens");
        assert!(
            matches!(&error, ConnectError::Connect { addr, .. } if addr.port() == port),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn connect_reports_an_unknown_name() {
        let none = AllowedNetworks::default();
        // `.invalid` never resolves (RFC 2606).
        let target = check_url("http://no-such-host.invalid/", &none).expect("url");
        let error = connect(&target, &none, Duration::from_secs(5))
            .await
            .expect_err("no such host");
        assert!(
            matches!(
                &error,
                ConnectError::Resolve { .. }
                    | ConnectError::NoAddress { .. }
                    | ConnectError::Timeout(_)
            ),
            "{error:?}"
        );
    }
}
