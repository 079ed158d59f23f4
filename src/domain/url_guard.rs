//! Which webhook targets this service may call: the save-time URL check and the per-address
//! check that delivery repeats on every DNS answer (SSRF protection).
//!
//! Two layers, because a URL that is safe when saved can become unsafe later (DNS can change,
//! or be attacker-controlled):
//! - [`check_webhook_url`] runs when settings are stored and gives users an actionable message;
//! - [`check_ip`] runs at every delivery attempt on every address the host resolves to (see
//!   `crate::delivery::resolver`), so the address actually connected to is always checked.
//!
//! Range decisions (see [`IpRange`] for the full list):
//! - Cloud metadata endpoints, unspecified, multicast and broadcast are refused always: no real
//!   receiver lives there, and metadata endpoints hand out credentials.
//! - Loopback, private, link-local, carrier-grade NAT, site-local and local-use NAT64 are
//!   refused unless [`TargetPolicy::allow_private`] is set (self-hosted receivers, tests).
//! - Documentation, benchmarking, reserved, IETF protocol-assignment and discard-only ranges are
//!   refused always: they are not routable receivers either.
//! - IPv6 forms that carry an IPv4 address (IPv4-mapped, IPv4-compatible, IPv4-translated,
//!   NAT64, 6to4, Teredo) are judged by the embedded IPv4 address under the same rules, because
//!   that is where the packets end up.
//! - IPv6 outside 2000::/3 that is not classified above is refused as reserved: only 2000::/3 is
//!   allocated for global unicast.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// Longest webhook URL accepted, in characters, both as typed and after normalisation.
pub const MAX_URL_LEN: usize = 2048;

/// Which non-public targets a deployment trusts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    /// Allow loopback, private, link-local, carrier-grade NAT, site-local and local-use NAT64
    /// targets, and the name `localhost`. For self-hosted receivers on an internal network and
    /// for tests. Cloud metadata, unspecified, multicast and broadcast stay refused regardless.
    pub allow_private: bool,
}

/// Why a webhook URL is refused. Display text is a complete, user-facing sentence fragment that
/// names the fix, e.g. "must be an absolute http or https URL, like `https://example.com/hook`".
/// It must never echo the URL's userinfo (user:password) or query string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlProblem {
    /// Nothing but whitespace was given.
    #[error(
        "must not be empty; enter an absolute http or https URL, like https://example.com/hook"
    )]
    Empty,
    /// Longer than [`MAX_URL_LEN`] characters, as typed or once normalised.
    #[error("must be at most {MAX_URL_LEN} characters long (this one has {len})")]
    TooLong {
        /// Length that exceeded the limit.
        len: usize,
    },
    /// Not parseable as an absolute URL.
    #[error("must be an absolute http or https URL, like https://example.com/hook")]
    NotAUrl,
    /// Spaces or control characters inside the URL, which the parser would silently rewrite.
    #[error(
        "must not contain spaces, tabs, line breaks or other control characters; \
         percent-encode them (a space is %20)"
    )]
    Whitespace,
    /// A scheme other than http or https. The scheme is not echoed: it is user-controlled text.
    #[error("must use http or https, like https://example.com/hook")]
    UnsupportedScheme,
    /// No host after the scheme.
    #[error("must name a host, like https://example.com/hook")]
    MissingHost,
    /// The host is neither a valid domain name nor a valid IP address.
    #[error("must have a valid host name or IP address, like https://example.com/hook")]
    InvalidHost,
    /// The port is not a number from 0 to 65535.
    #[error("must have a numeric port no greater than 65535, like https://example.com:8443/hook")]
    InvalidPort,
    /// A `user:password@` part; such credentials would be stored and logged in clear.
    #[error(
        "must not contain a user name or password before the host (user:password@); \
         remove that part"
    )]
    Credentials,
    /// The host is `localhost` in some spelling and the policy does not allow private targets.
    #[error("must not point at localhost; use a publicly reachable host")]
    Localhost,
    /// The host is an IP literal in a refused range.
    #[error("must not point at a non-public address ({0}); use a publicly reachable host")]
    RefusedAddress(IpRefusal),
}

/// Named address ranges a webhook target may not be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpRange {
    /// Instance/task metadata and credential endpoints: 169.254.169.254 (AWS, GCP, Azure, OCI,
    /// DigitalOcean...), 169.254.170.2 (AWS ECS), 169.254.170.23 (AWS EKS Pod Identity),
    /// 169.254.0.23 (Tencent Cloud), 100.100.100.200 (Alibaba Cloud), fd00:ec2::254 and
    /// fd00:ec2::23 (AWS over IPv6). Always refused.
    CloudMetadata,
    /// 0.0.0.0/8 and `::`. Always refused: connecting to 0.0.0.0 reaches the local host on Linux.
    Unspecified,
    /// 224.0.0.0/4 and ff00::/8. Always refused.
    Multicast,
    /// 255.255.255.255. Always refused.
    Broadcast,
    /// 127.0.0.0/8 and `::1`.
    Loopback,
    /// 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 and unique-local fc00::/7.
    Private,
    /// 169.254.0.0/16 and fe80::/10.
    LinkLocal,
    /// Carrier-grade NAT shared address space 100.64.0.0/10.
    CarrierGradeNat,
    /// Deprecated IPv6 site-local fec0::/10.
    SiteLocal,
    /// Local-use NAT64 prefix 64:ff9b:1::/48 (leads into the operator's own network).
    LocalUseNat64,
    /// 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32 and 3fff::/20.
    Documentation,
    /// 198.18.0.0/15 and 2001:2::/48.
    Benchmarking,
    /// 192.0.0.0/24.
    IetfProtocolAssignment,
    /// 240.0.0.0/4 (less broadcast), 192.88.99.0/24 (retired 6to4 relays), ORCHID
    /// 2001:10::/28 and 2001:20::/28, and IPv6 outside 2000::/3 not listed elsewhere.
    Reserved,
    /// IPv6 discard-only 100::/64.
    DiscardOnly,
}

impl IpRange {
    /// Phrase naming the range, to follow "is", e.g. "a loopback address".
    pub fn description(self) -> &'static str {
        match self {
            IpRange::CloudMetadata => "a cloud metadata endpoint",
            IpRange::Unspecified => "an unspecified (\"this host\") address",
            IpRange::Multicast => "a multicast address",
            IpRange::Broadcast => "the broadcast address",
            IpRange::Loopback => "a loopback address",
            IpRange::Private => "a private-network address",
            IpRange::LinkLocal => "a link-local address",
            IpRange::CarrierGradeNat => "a carrier-grade NAT (100.64.0.0/10) address",
            IpRange::SiteLocal => "a site-local address",
            IpRange::LocalUseNat64 => "a local-use NAT64 address",
            IpRange::Documentation => "a documentation-only address",
            IpRange::Benchmarking => "a benchmarking address",
            IpRange::IetfProtocolAssignment => "an IETF protocol-assignment address",
            IpRange::Reserved => "a reserved address",
            IpRange::DiscardOnly => "a discard-only address",
        }
    }

    /// Whether [`TargetPolicy::allow_private`] lifts the refusal for this range.
    pub fn allowed_with_private(self) -> bool {
        matches!(
            self,
            IpRange::Loopback
                | IpRange::Private
                | IpRange::LinkLocal
                | IpRange::CarrierGradeNat
                | IpRange::SiteLocal
                | IpRange::LocalUseNat64
        )
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

/// Why one address may not be connected to, e.g. "127.0.0.1 is a loopback address".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe_refusal(.ip, .embedded, .range))]
pub struct IpRefusal {
    /// The address that was checked.
    pub ip: IpAddr,
    /// The IPv4 address carried inside an IPv6 address, when that is what was refused.
    pub embedded: Option<Ipv4Addr>,
    /// The refused range.
    pub range: IpRange,
}

fn describe_refusal(ip: &IpAddr, embedded: &Option<Ipv4Addr>, range: &IpRange) -> String {
    match embedded {
        Some(v4) => format!("{ip} carries the IPv4 address {v4}, which is {range}"),
        None => format!("{ip} is {range}"),
    }
}

/// Parses and checks a webhook URL as stored settings require.
///
/// Returns the normalised URL (what should be stored). A host name is not resolved here: the
/// addresses it resolves to are checked at each delivery attempt instead.
pub fn check_webhook_url(raw: &str, policy: TargetPolicy) -> Result<Url, UrlProblem> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(UrlProblem::Empty);
    }
    let len = trimmed.chars().count();
    if len > MAX_URL_LEN {
        return Err(UrlProblem::TooLong { len });
    }
    let url = Url::parse(trimmed).map_err(|err| match err {
        url::ParseError::EmptyHost => UrlProblem::MissingHost,
        url::ParseError::InvalidPort => UrlProblem::InvalidPort,
        url::ParseError::IdnaError
        | url::ParseError::InvalidDomainCharacter
        | url::ParseError::InvalidIpv4Address
        | url::ParseError::InvalidIpv6Address => UrlProblem::InvalidHost,
        _ => UrlProblem::NotAUrl,
    })?;
    // Checked after parsing so that plain prose ("not a url") gets the clearer NotAUrl; the
    // parser would otherwise silently drop tabs/newlines, so what is stored would differ from
    // what the user sees.
    if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(UrlProblem::Whitespace);
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlProblem::UnsupportedScheme);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlProblem::Credentials);
    }
    // Port 0 parses but nothing can listen on it.
    if url.port() == Some(0) {
        return Err(UrlProblem::InvalidPort);
    }
    match url.host() {
        None => return Err(UrlProblem::MissingHost),
        Some(Host::Domain(name)) => {
            if is_localhost_name(name) && !policy.allow_private {
                return Err(UrlProblem::Localhost);
            }
        }
        Some(Host::Ipv4(v4)) => check_ip(IpAddr::V4(v4), policy)?,
        Some(Host::Ipv6(v6)) => check_ip(IpAddr::V6(v6), policy)?,
    }
    // Percent-encoding and punycode can lengthen the URL; the limit applies to what is stored.
    let normalised_len = url.as_str().chars().count();
    if normalised_len > MAX_URL_LEN {
        return Err(UrlProblem::TooLong {
            len: normalised_len,
        });
    }
    Ok(url)
}

impl From<IpRefusal> for UrlProblem {
    fn from(refusal: IpRefusal) -> Self {
        UrlProblem::RefusedAddress(refusal)
    }
}

/// Checks one resolved or literal address. Used at every delivery attempt on each DNS answer.
pub fn check_ip(ip: IpAddr, policy: TargetPolicy) -> Result<(), IpRefusal> {
    let Some((range, embedded)) = classify(ip) else {
        return Ok(());
    };
    if policy.allow_private && range.allowed_with_private() {
        return Ok(());
    }
    Err(IpRefusal {
        ip,
        embedded,
        range,
    })
}

/// Whether the host name is `localhost` in any spelling (case, trailing dot, `*.localhost`).
///
/// Also matches `localhost.localdomain`, `ip6-localhost` and `ip6-loopback`, which common
/// `/etc/hosts` files map to loopback. Resolved addresses are checked anyway; matching the
/// name lets the save-time check give a clear message without a lookup.
pub fn is_localhost_name(host: &str) -> bool {
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || matches!(
            name.as_str(),
            "localhost.localdomain" | "ip6-localhost" | "ip6-loopback"
        )
}

/// A safe-to-log rendering of a URL: scheme, host, port, path; no userinfo, no query, no fragment.
pub fn redact(url: &Url) -> String {
    let scheme = url.scheme();
    let path = url.path();
    match url.host_str() {
        // host_str() already brackets IPv6 literals.
        Some(host) => match url.port() {
            Some(port) => format!("{scheme}://{host}:{port}{path}"),
            None => format!("{scheme}://{host}{path}"),
        },
        None => format!("{scheme}:{path}"),
    }
}

/// The refused range an address falls in, with the IPv4 address it carries when that decided.
/// `None` means a public address.
fn classify(ip: IpAddr) -> Option<(IpRange, Option<Ipv4Addr>)> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4).map(|range| (range, None)),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix_len: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix_len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], prefix_len: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix_len).unwrap_or(0);
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(net)) & mask
}

const METADATA_V4: [Ipv4Addr; 5] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(169, 254, 170, 23),
    Ipv4Addr::new(169, 254, 0, 23),
    Ipv4Addr::new(100, 100, 100, 200),
];

const METADATA_V6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23),
];

fn classify_v4(ip: Ipv4Addr) -> Option<IpRange> {
    // Most specific first: metadata sits inside link-local and CGNAT, broadcast inside 240/4.
    if METADATA_V4.contains(&ip) {
        return Some(IpRange::CloudMetadata);
    }
    if ip == Ipv4Addr::BROADCAST {
        return Some(IpRange::Broadcast);
    }
    const TABLE: &[([u8; 4], u32, IpRange)] = &[
        ([0, 0, 0, 0], 8, IpRange::Unspecified),
        ([10, 0, 0, 0], 8, IpRange::Private),
        ([100, 64, 0, 0], 10, IpRange::CarrierGradeNat),
        ([127, 0, 0, 0], 8, IpRange::Loopback),
        ([169, 254, 0, 0], 16, IpRange::LinkLocal),
        ([172, 16, 0, 0], 12, IpRange::Private),
        ([192, 0, 0, 0], 24, IpRange::IetfProtocolAssignment),
        ([192, 0, 2, 0], 24, IpRange::Documentation),
        ([192, 88, 99, 0], 24, IpRange::Reserved),
        ([192, 168, 0, 0], 16, IpRange::Private),
        ([198, 18, 0, 0], 15, IpRange::Benchmarking),
        ([198, 51, 100, 0], 24, IpRange::Documentation),
        ([203, 0, 113, 0], 24, IpRange::Documentation),
        ([224, 0, 0, 0], 4, IpRange::Multicast),
        ([240, 0, 0, 0], 4, IpRange::Reserved),
    ];
    TABLE
        .iter()
        .find(|(net, len, _)| in_v4(ip, *net, *len))
        .map(|(_, _, range)| *range)
}

fn v4_at(ip: Ipv6Addr, bit_offset: u32) -> Ipv4Addr {
    // Truncation to the 32 bits that start `bit_offset` bits from the top is the point.
    Ipv4Addr::from((u128::from(ip) >> (96 - bit_offset)) as u32)
}

/// The IPv4 addresses an IPv6 address delivers to, for the forms that embed one.
fn embedded_v4(ip: Ipv6Addr) -> Vec<Ipv4Addr> {
    // IPv4-mapped ::ffff:0:0/96, IPv4-translated ::ffff:0:0:0/96, NAT64 64:ff9b::/96 and the
    // deprecated IPv4-compatible ::/96 all carry the address in the low 32 bits.
    if in_v6(ip, [0, 0, 0, 0, 0, 0xffff, 0, 0], 96)
        || in_v6(ip, [0, 0, 0, 0, 0xffff, 0, 0, 0], 96)
        || in_v6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96)
        || in_v6(ip, [0, 0, 0, 0, 0, 0, 0, 0], 96)
    {
        return vec![v4_at(ip, 96)];
    }
    // 6to4 2002:AABB:CCDD::/48 carries the site's IPv4 in bits 16..48.
    if in_v6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        return vec![v4_at(ip, 16)];
    }
    // Teredo 2001:0::/32 carries the server's IPv4 in bits 32..64 and the client's, inverted,
    // in the low 32 bits. Either could be the one that ends up being reached, so check both.
    if in_v6(ip, [0x2001, 0, 0, 0, 0, 0, 0, 0], 32) {
        return vec![v4_at(ip, 32), !v4_at(ip, 96)];
    }
    Vec::new()
}

fn classify_v6(ip: Ipv6Addr) -> Option<(IpRange, Option<Ipv4Addr>)> {
    if METADATA_V6.contains(&ip) {
        return Some((IpRange::CloudMetadata, None));
    }
    if ip.is_unspecified() {
        return Some((IpRange::Unspecified, None));
    }
    if ip.is_loopback() {
        return Some((IpRange::Loopback, None));
    }
    for v4 in embedded_v4(ip) {
        if let Some(range) = classify_v4(v4) {
            return Some((range, Some(v4)));
        }
    }
    // A local-use NAT64 prefix may embed at /96 too; a refused embedded address (metadata
    // above all) must win over the weaker "local-use" classification.
    if in_v6(ip, [0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48) {
        let v4 = v4_at(ip, 96);
        return Some(match classify_v4(v4) {
            Some(range) if !range.allowed_with_private() => (range, Some(v4)),
            _ => (IpRange::LocalUseNat64, None),
        });
    }
    const TABLE: &[([u16; 8], u32, IpRange)] = &[
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, IpRange::Private),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, IpRange::LinkLocal),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, IpRange::SiteLocal),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, IpRange::Multicast),
        (
            [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
            32,
            IpRange::Documentation,
        ),
        ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, IpRange::Documentation),
        ([0x2001, 2, 0, 0, 0, 0, 0, 0], 48, IpRange::Benchmarking),
        ([0x2001, 0x10, 0, 0, 0, 0, 0, 0], 28, IpRange::Reserved),
        ([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28, IpRange::Reserved),
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, IpRange::DiscardOnly),
    ];
    if let Some((_, _, range)) = TABLE.iter().find(|(net, len, _)| in_v6(ip, *net, *len)) {
        return Some((*range, None));
    }
    // Embedded forms with a public IPv4 address were handled above and are fine.
    if !embedded_v4(ip).is_empty() {
        return None;
    }
    if !in_v6(ip, [0x2000, 0, 0, 0, 0, 0, 0, 0], 3) {
        return Some((IpRange::Reserved, None));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: TargetPolicy = TargetPolicy {
        allow_private: false,
    };
    const LENIENT: TargetPolicy = TargetPolicy {
        allow_private: true,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse()
            .unwrap_or_else(|e| panic!("test address {s}: {e}"))
    }

    fn refused_range(addr: &str, policy: TargetPolicy) -> Option<IpRange> {
        check_ip(ip(addr), policy).err().map(|r| r.range)
    }

    #[test]
    fn public_addresses_pass_both_policies() {
        for addr in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "169.253.255.255",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            // Teredo: server 65.54.227.120, client (inverted low bits) 8.8.8.8.
            "2001:0:4136:e378:8000:63bf:f7f7:f7f7",
        ] {
            assert_eq!(check_ip(ip(addr), STRICT), Ok(()), "{addr} strict");
            assert_eq!(check_ip(ip(addr), LENIENT), Ok(()), "{addr} lenient");
        }
    }

    #[test]
    fn private_like_ranges_refused_strict_allowed_with_flag() {
        for (addr, range) in [
            ("127.0.0.1", IpRange::Loopback),
            ("127.255.255.254", IpRange::Loopback),
            ("::1", IpRange::Loopback),
            ("10.0.0.1", IpRange::Private),
            ("10.255.255.255", IpRange::Private),
            ("172.16.0.1", IpRange::Private),
            ("172.31.255.255", IpRange::Private),
            ("192.168.0.1", IpRange::Private),
            ("192.168.255.255", IpRange::Private),
            ("fc00::1", IpRange::Private),
            ("fd12:3456:789a::1", IpRange::Private),
            ("169.254.0.1", IpRange::LinkLocal),
            ("169.254.169.253", IpRange::LinkLocal),
            ("fe80::1", IpRange::LinkLocal),
            ("febf::1", IpRange::LinkLocal),
            ("100.64.0.1", IpRange::CarrierGradeNat),
            ("100.127.255.255", IpRange::CarrierGradeNat),
            ("fec0::1", IpRange::SiteLocal),
            ("64:ff9b:1::a00:1", IpRange::LocalUseNat64),
        ] {
            assert_eq!(refused_range(addr, STRICT), Some(range), "{addr} strict");
            assert_eq!(check_ip(ip(addr), LENIENT), Ok(()), "{addr} lenient");
        }
    }

    #[test]
    fn never_receivers_refused_even_with_flag() {
        for (addr, range) in [
            ("0.0.0.0", IpRange::Unspecified),
            ("0.1.2.3", IpRange::Unspecified),
            ("::", IpRange::Unspecified),
            ("224.0.0.1", IpRange::Multicast),
            ("239.255.255.250", IpRange::Multicast),
            ("ff02::1", IpRange::Multicast),
            ("ff05::1:3", IpRange::Multicast),
            ("255.255.255.255", IpRange::Broadcast),
            ("240.0.0.1", IpRange::Reserved),
            ("255.255.255.254", IpRange::Reserved),
            ("192.88.99.1", IpRange::Reserved),
            ("198.18.0.1", IpRange::Benchmarking),
            ("198.19.255.255", IpRange::Benchmarking),
            ("2001:2::1", IpRange::Benchmarking),
            ("192.0.0.1", IpRange::IetfProtocolAssignment),
            ("192.0.0.192", IpRange::IetfProtocolAssignment),
            ("192.0.2.1", IpRange::Documentation),
            ("198.51.100.7", IpRange::Documentation),
            ("203.0.113.255", IpRange::Documentation),
            ("2001:db8::1", IpRange::Documentation),
            ("3fff:fff::1", IpRange::Documentation),
            ("100::1", IpRange::DiscardOnly),
            ("2001:10::1", IpRange::Reserved),
            ("2001:20::1", IpRange::Reserved),
            ("::1:2:3:4", IpRange::Reserved),
            ("4000::1", IpRange::Reserved),
            ("5f00::1", IpRange::Reserved),
        ] {
            assert_eq!(refused_range(addr, STRICT), Some(range), "{addr} strict");
            assert_eq!(refused_range(addr, LENIENT), Some(range), "{addr} lenient");
        }
    }

    #[test]
    fn metadata_endpoints_refused_in_every_form_and_policy() {
        for (addr, embedded) in [
            ("169.254.169.254", None),
            ("169.254.170.2", None),
            ("169.254.170.23", None),
            ("169.254.0.23", None),
            ("100.100.100.200", None),
            ("fd00:ec2::254", None),
            ("fd00:ec2::23", None),
            ("::ffff:169.254.169.254", Some("169.254.169.254")),
            ("::ffff:a9fe:a9fe", Some("169.254.169.254")),
            ("::169.254.169.254", Some("169.254.169.254")),
            ("::ffff:0:a9fe:a9fe", Some("169.254.169.254")),
            ("64:ff9b::a9fe:a9fe", Some("169.254.169.254")),
            ("64:ff9b:1::a9fe:a9fe", Some("169.254.169.254")),
            ("2002:a9fe:a9fe::1", Some("169.254.169.254")),
            ("2002:6464:64c8::", Some("100.100.100.200")),
            // Teredo with the metadata address as server, then as (inverted) client.
            ("2001:0:a9fe:a9fe::", Some("169.254.169.254")),
            ("2001:0:808:808:0:0:5601:5601", Some("169.254.169.254")),
        ] {
            for policy in [STRICT, LENIENT] {
                let refusal = check_ip(ip(addr), policy).expect_err(addr);
                assert_eq!(refusal.range, IpRange::CloudMetadata, "{addr}");
                assert_eq!(
                    refusal.embedded,
                    embedded.map(|e| e.parse().unwrap()),
                    "{addr}"
                );
            }
        }
    }

    #[test]
    fn embedded_ipv4_judged_by_the_ipv4_rules() {
        for (addr, range, v4) in [
            ("::ffff:127.0.0.1", IpRange::Loopback, "127.0.0.1"),
            ("::ffff:7f00:1", IpRange::Loopback, "127.0.0.1"),
            ("::ffff:10.1.2.3", IpRange::Private, "10.1.2.3"),
            ("::127.0.0.1", IpRange::Loopback, "127.0.0.1"),
            ("::ffff:0:7f00:1", IpRange::Loopback, "127.0.0.1"),
            ("64:ff9b::7f00:1", IpRange::Loopback, "127.0.0.1"),
            ("64:ff9b::c0a8:101", IpRange::Private, "192.168.1.1"),
            ("2002:7f00:1::", IpRange::Loopback, "127.0.0.1"),
            ("2002:a00:1:1::1", IpRange::Private, "10.0.0.1"),
            // Teredo example from RFC 4380: client 192.0.2.45 is a documentation address.
            (
                "2001:0:4136:e378:8000:63bf:3fff:fdd2",
                IpRange::Documentation,
                "192.0.2.45",
            ),
            ("2001:0:7f00:1::", IpRange::Loopback, "127.0.0.1"),
        ] {
            let refusal = check_ip(ip(addr), STRICT).expect_err(addr);
            assert_eq!(refusal.range, range, "{addr}");
            assert_eq!(refusal.embedded, Some(v4.parse().unwrap()), "{addr}");
        }
        // Same rule with the flag: the embedded loopback is allowed, embedded never-receivers not.
        assert_eq!(check_ip(ip("::ffff:127.0.0.1"), LENIENT), Ok(()));
        assert_eq!(check_ip(ip("2002:a00:1::"), LENIENT), Ok(()));
        assert_eq!(
            refused_range("::ffff:0.0.0.0", LENIENT),
            Some(IpRange::Unspecified)
        );
        assert_eq!(
            refused_range("64:ff9b::e000:1", LENIENT),
            Some(IpRange::Multicast)
        );
        assert_eq!(
            refused_range("::ffff:255.255.255.255", LENIENT),
            Some(IpRange::Broadcast)
        );
    }

    #[test]
    fn refusal_display_names_address_and_range() {
        assert_eq!(
            check_ip(ip("127.0.0.1"), STRICT).unwrap_err().to_string(),
            "127.0.0.1 is a loopback address"
        );
        assert_eq!(
            check_ip(ip("169.254.169.254"), LENIENT)
                .unwrap_err()
                .to_string(),
            "169.254.169.254 is a cloud metadata endpoint"
        );
        assert_eq!(
            check_ip(ip("::ffff:10.0.0.1"), STRICT)
                .unwrap_err()
                .to_string(),
            "::ffff:10.0.0.1 carries the IPv4 address 10.0.0.1, which is a private-network address"
        );
    }

    fn url_problem(raw: &str, policy: TargetPolicy) -> UrlProblem {
        check_webhook_url(raw, policy).expect_err(raw)
    }

    #[test]
    fn accepts_ordinary_urls_and_normalises() {
        let url = check_webhook_url("  https://Example.COM/hook?x=1  ", STRICT).unwrap();
        assert_eq!(url.as_str(), "https://example.com/hook?x=1");
        let url = check_webhook_url("http://example.com:8080", STRICT).unwrap();
        assert_eq!(url.as_str(), "http://example.com:8080/");
        let url = check_webhook_url("https://8.8.8.8/x", STRICT).unwrap();
        assert_eq!(url.host(), Some(Host::Ipv4(Ipv4Addr::new(8, 8, 8, 8))));
        let url = check_webhook_url("https://[2606:4700::1111]/x", STRICT).unwrap();
        assert_eq!(url.host_str(), Some("[2606:4700::1111]"));
        // An empty userinfo is dropped by normalisation, so nothing secret is stored.
        let url = check_webhook_url("https://@example.com/", STRICT).unwrap();
        assert_eq!(url.as_str(), "https://example.com/");
    }

    #[test]
    fn rejects_non_urls_with_clear_messages() {
        assert_eq!(url_problem("", STRICT), UrlProblem::Empty);
        assert_eq!(url_problem(" \t\n ", STRICT), UrlProblem::Empty);
        assert_eq!(url_problem("not a url", STRICT), UrlProblem::NotAUrl);
        assert_eq!(url_problem("/relative/path", STRICT), UrlProblem::NotAUrl);
        assert_eq!(url_problem("example.com/hook", STRICT), UrlProblem::NotAUrl);
        assert_eq!(
            url_problem("ftp://example.com/x", STRICT),
            UrlProblem::UnsupportedScheme
        );
        assert_eq!(
            url_problem("file:///etc/passwd", STRICT),
            UrlProblem::UnsupportedScheme
        );
        assert_eq!(
            url_problem("javascript:alert(1)", STRICT),
            UrlProblem::UnsupportedScheme
        );
        assert_eq!(
            url_problem("gopher://127.0.0.1:6379/_x", LENIENT),
            UrlProblem::UnsupportedScheme
        );
        assert_eq!(url_problem("http://", STRICT), UrlProblem::MissingHost);
        assert_eq!(
            url_problem("https://:443/x", STRICT),
            UrlProblem::MissingHost
        );
        assert_eq!(
            url_problem("https://exa mple.com/", STRICT),
            UrlProblem::InvalidHost
        );
        assert_eq!(url_problem("http://[::1/", STRICT), UrlProblem::InvalidHost);
        assert_eq!(
            url_problem("https://example.com:99999/", STRICT),
            UrlProblem::InvalidPort
        );
        assert_eq!(
            url_problem("https://example.com/a b", STRICT),
            UrlProblem::Whitespace
        );
        assert_eq!(
            url_problem("https://exa\tmple.com/", STRICT),
            UrlProblem::Whitespace
        );
        assert_eq!(
            url_problem("https://example.com/\nx", STRICT),
            UrlProblem::Whitespace
        );
        assert_eq!(
            UrlProblem::NotAUrl.to_string(),
            "must be an absolute http or https URL, like https://example.com/hook"
        );
        assert_eq!(
            UrlProblem::UnsupportedScheme.to_string(),
            "must use http or https, like https://example.com/hook"
        );
    }

    #[test]
    fn rejects_userinfo_without_echoing_it() {
        for raw in [
            "https://user:hunter2@example.com/hook",
            "https://user@example.com/hook",
            "https://:hunter2@example.com/hook",
            "https://user:hunter2@127.0.0.1/hook",
        ] {
            let problem = url_problem(raw, LENIENT);
            assert_eq!(problem, UrlProblem::Credentials, "{raw}");
            let text = problem.to_string();
            assert!(!text.contains("hunter2"), "{text}");
            assert!(!text.contains("user@"), "{text}");
        }
    }

    #[test]
    fn length_limit_applies_as_typed_and_normalised() {
        let base = "https://example.com/";
        let at_limit = format!("{base}{}", "a".repeat(MAX_URL_LEN - base.len()));
        assert_eq!(at_limit.len(), MAX_URL_LEN);
        assert!(check_webhook_url(&at_limit, STRICT).is_ok());
        let over = format!("{at_limit}a");
        assert_eq!(
            url_problem(&over, STRICT),
            UrlProblem::TooLong {
                len: MAX_URL_LEN + 1
            }
        );
        // Counts characters, not bytes: 2048 two-byte characters are not too long as typed...
        let wide = format!("{base}{}", "é".repeat(MAX_URL_LEN - base.len()));
        // ...but percent-encoding makes each one 6 characters once normalised.
        assert_eq!(
            url_problem(&wide, STRICT),
            UrlProblem::TooLong {
                len: base.len() + 6 * (MAX_URL_LEN - base.len())
            }
        );
        // The typed length counts too, even where normalisation would strip characters.
        let tab_over = format!("{base}\t{}", &at_limit[base.len()..]);
        assert_eq!(
            url_problem(&tab_over, STRICT),
            UrlProblem::TooLong {
                len: MAX_URL_LEN + 1
            }
        );
        let text = url_problem(&over, STRICT).to_string();
        assert_eq!(
            text,
            "must be at most 2048 characters long (this one has 2049)"
        );
        // A huge input is refused on length before anything else looks at it.
        let huge = "x".repeat(1_000_000);
        assert_eq!(
            url_problem(&huge, STRICT),
            UrlProblem::TooLong { len: 1_000_000 }
        );
    }

    #[test]
    fn ip_literal_spellings_are_normalised_then_checked() {
        for (raw, range, embedded) in [
            ("http://127.0.0.1/", IpRange::Loopback, None),
            ("http://2130706433/", IpRange::Loopback, None),
            ("http://0x7f.1/", IpRange::Loopback, None),
            ("http://0x7f000001/", IpRange::Loopback, None),
            ("http://127.1/", IpRange::Loopback, None),
            ("http://0177.0.0.1/", IpRange::Loopback, None),
            ("http://127.0.0.1./", IpRange::Loopback, None),
            ("http://127%2e0%2e0%2e1/", IpRange::Loopback, None),
            (
                "http://127\u{3002}0\u{3002}0\u{3002}1/",
                IpRange::Loopback,
                None,
            ),
            ("http://[::1]/", IpRange::Loopback, None),
            ("http://[0:0:0:0:0:0:0:1]/", IpRange::Loopback, None),
            (
                "http://[::ffff:127.0.0.1]/",
                IpRange::Loopback,
                Some("127.0.0.1"),
            ),
            (
                "http://[::ffff:7f00:1]/",
                IpRange::Loopback,
                Some("127.0.0.1"),
            ),
            ("http://10.0.0.1:8080/x", IpRange::Private, None),
            ("http://167772161/", IpRange::Private, None),
            ("https://[fd00::1]/", IpRange::Private, None),
            ("http://100.64.0.1/", IpRange::CarrierGradeNat, None),
            ("http://[fe80::1]/", IpRange::LinkLocal, None),
        ] {
            let problem = url_problem(raw, STRICT);
            let UrlProblem::RefusedAddress(refusal) = &problem else {
                panic!("{raw}: {problem:?}");
            };
            assert_eq!(refusal.range, range, "{raw}");
            assert_eq!(
                refusal.embedded,
                embedded.map(|e| e.parse().unwrap()),
                "{raw}"
            );
            assert!(
                check_webhook_url(raw, LENIENT).is_ok(),
                "{raw} should pass with allow_private"
            );
        }
    }

    #[test]
    fn metadata_and_never_receivers_refused_in_urls_even_with_flag() {
        for (raw, range) in [
            (
                "http://169.254.169.254/latest/meta-data/",
                IpRange::CloudMetadata,
            ),
            ("http://2852039166/", IpRange::CloudMetadata),
            ("http://0xa9.0xfe.0xa9.0xfe/", IpRange::CloudMetadata),
            ("http://169.254.43518/", IpRange::CloudMetadata),
            (
                "http://[0:0:0:0:0:ffff:169.254.169.254]/",
                IpRange::CloudMetadata,
            ),
            ("http://[::ffff:a9fe:a9fe]/", IpRange::CloudMetadata),
            ("http://[fd00:ec2::254]/", IpRange::CloudMetadata),
            ("http://[64:ff9b::169.254.169.254]/", IpRange::CloudMetadata),
            ("http://[2002:a9fe:a9fe::]/", IpRange::CloudMetadata),
            ("http://100.100.100.200/", IpRange::CloudMetadata),
            ("http://0/", IpRange::Unspecified),
            ("http://0.0.0.0:8080/", IpRange::Unspecified),
            ("http://[::]/", IpRange::Unspecified),
            ("http://224.0.0.1/", IpRange::Multicast),
            ("http://[ff02::1]/", IpRange::Multicast),
            ("http://255.255.255.255/", IpRange::Broadcast),
            ("http://4294967295/", IpRange::Broadcast),
        ] {
            for policy in [STRICT, LENIENT] {
                let problem = url_problem(raw, policy);
                let UrlProblem::RefusedAddress(refusal) = &problem else {
                    panic!("{raw}: {problem:?}");
                };
                assert_eq!(refusal.range, range, "{raw}");
            }
        }
        assert_eq!(
            url_problem("http://169.254.169.254/", LENIENT).to_string(),
            "must not point at a non-public address (169.254.169.254 is a cloud metadata \
             endpoint); use a publicly reachable host"
        );
    }

    #[test]
    fn localhost_names_refused_unless_allowed() {
        for raw in [
            "http://localhost/",
            "http://LOCALHOST:8080/x",
            "http://LocalHost./",
            "http://localhost../",
            "http://api.localhost/",
            "http://a.b.LOCALHOST./",
            "http://%6c%6f%63%61%6c%68%6f%73%74/",
            "http://\u{ff4c}\u{ff4f}\u{ff43}\u{ff41}\u{ff4c}\u{ff48}\u{ff4f}\u{ff53}\u{ff54}/",
            "http://localhost.localdomain/",
            "http://ip6-localhost/",
        ] {
            assert_eq!(url_problem(raw, STRICT), UrlProblem::Localhost, "{raw}");
            assert!(check_webhook_url(raw, LENIENT).is_ok(), "{raw} lenient");
        }
        assert_eq!(
            UrlProblem::Localhost.to_string(),
            "must not point at localhost; use a publicly reachable host"
        );
    }

    #[test]
    fn localhost_name_matching() {
        for name in [
            "localhost",
            "LOCALHOST",
            "localhost.",
            "LocalHost.",
            "x.localhost",
            "a.b.localhost.",
            "ip6-loopback",
        ] {
            assert!(is_localhost_name(name), "{name}");
        }
        for name in [
            "localhost.example.com",
            "notlocalhost",
            "mylocalhost",
            "localhostx",
            "example.com",
            "",
        ] {
            assert!(!is_localhost_name(name), "{name}");
        }
    }

    #[test]
    fn problems_never_echo_userinfo_or_query() {
        for raw in [
            "https://bob:s3cret-pw@localhost/?token=s3cret-q",
            "https://localhost/?token=s3cret-q",
            "https://127.0.0.1/?token=s3cret-q",
            "ftp://bob:s3cret-pw@example.com/?token=s3cret-q",
            "https://example.com/a b?token=s3cret-q",
        ] {
            let text = url_problem(raw, STRICT).to_string();
            assert!(!text.contains("s3cret"), "{raw} -> {text}");
        }
    }

    #[test]
    fn redact_drops_userinfo_query_and_fragment() {
        let url = Url::parse("https://bob:s3cret@Example.com:8443/a/b?token=s3cret#frag").unwrap();
        assert_eq!(redact(&url), "https://example.com:8443/a/b");
        let url = Url::parse("http://example.com/?q=s3cret").unwrap();
        assert_eq!(redact(&url), "http://example.com/");
        let url = Url::parse("https://example.com:443/x").unwrap();
        assert_eq!(redact(&url), "https://example.com/x");
        let url = Url::parse("http://u:p@[2606:4700::1111]:81/x?y").unwrap();
        assert_eq!(redact(&url), "http://[2606:4700::1111]:81/x");
    }
}
