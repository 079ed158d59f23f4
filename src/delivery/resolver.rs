//! DNS resolution for webhook delivery that only ever hands reqwest addresses that passed
//! [`check_ip`], so the address connected to is the address that was checked (no
//! check-then-resolve-again window for DNS rebinding).
//!
//! reqwest skips the resolver for IP-literal hosts, so delivery must also call
//! [`guard_literal_host`] before every attempt. The client must also be built so that nothing
//! else chooses the address: no proxy (`ClientBuilder::no_proxy`, or the proxy host is what gets
//! resolved), no `ClientBuilder::resolve` overrides, and redirects either off or re-checked
//! (a redirect to an IP literal would bypass this resolver).

use std::io;
use std::net::{IpAddr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use crate::domain::url_guard::{IpRefusal, TargetPolicy, check_ip, is_localhost_name};

/// Refused addresses listed in an error message; the rest are only counted.
const LISTED_REFUSALS: usize = 3;

/// A [`reqwest::dns::Resolve`] that resolves with the system resolver and returns only
/// addresses that pass [`check_ip`] under `policy`.
///
/// An answer that mixes public and refused addresses is refused whole: a name whose answers
/// are attacker-controlled could otherwise include an internal address and have it tried
/// whenever the public one is slow or refuses the connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuardedResolver {
    /// Which non-public targets are allowed.
    pub policy: TargetPolicy,
}

impl GuardedResolver {
    /// A resolver enforcing `policy`.
    pub fn new(policy: TargetPolicy) -> Self {
        Self { policy }
    }
}

/// Why a webhook host name yielded no address to connect to.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The name is `localhost` in some spelling and the policy does not allow private targets.
    #[error(
        "webhook host {host} names this machine (a loopback address), which is refused \
         unless the server runs with --allow-private-webhook-targets"
    )]
    Localhost {
        /// The host name as given.
        host: String,
    },
    /// The system resolver failed; usually transient or a typo, worth retrying later.
    #[error("could not resolve webhook host {host}: {cause}")]
    Lookup {
        /// The host name as given.
        host: String,
        /// The resolver's error.
        cause: io::Error,
    },
    /// The resolver answered with no addresses.
    #[error("webhook host {host} resolved to no addresses")]
    NoAddresses {
        /// The host name as given.
        host: String,
    },
    /// At least one address in the answer is refused, so the whole answer is.
    #[error("{}", describe_refused(.host, .refused, *.allowed))]
    Refused {
        /// The host name as given.
        host: String,
        /// Every refused address in the answer, in answer order.
        refused: Vec<IpRefusal>,
        /// How many addresses in the answer would have been allowed on their own.
        allowed: usize,
    },
}

fn describe_refused(host: &str, refused: &[IpRefusal], allowed: usize) -> String {
    let mut reasons = refused
        .iter()
        .take(LISTED_REFUSALS)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if refused.len() > LISTED_REFUSALS {
        reasons.push_str(&format!(" (and {} more)", refused.len() - LISTED_REFUSALS));
    }
    if allowed == 0 {
        format!("webhook host {host} resolves only to refused addresses: {reasons}")
    } else {
        format!(
            "webhook host {host} resolves to refused addresses as well as public ones, \
             so none are used: {reasons}"
        )
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Addrs = Box::new(resolve_checked(&host, policy).await?.into_iter());
            Ok(addrs)
        })
    }
}

async fn resolve_checked(
    host: &str,
    policy: TargetPolicy,
) -> Result<Vec<SocketAddr>, ResolveError> {
    // Refusing by name first gives the clearer message and skips a pointless lookup.
    if is_localhost_name(host) && !policy.allow_private {
        return Err(ResolveError::Localhost {
            host: host.to_owned(),
        });
    }
    // Port 0: reqwest substitutes the URL's port or the scheme default.
    let answer = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|cause| ResolveError::Lookup {
            host: host.to_owned(),
            cause,
        })?
        .collect();
    check_answer(host, answer, policy)
}

/// Returns the whole answer if every address passes, otherwise why not.
fn check_answer(
    host: &str,
    answer: Vec<SocketAddr>,
    policy: TargetPolicy,
) -> Result<Vec<SocketAddr>, ResolveError> {
    if answer.is_empty() {
        return Err(ResolveError::NoAddresses {
            host: host.to_owned(),
        });
    }
    let refused: Vec<IpRefusal> = answer
        .iter()
        .filter_map(|addr| check_ip(addr.ip(), policy).err())
        .collect();
    if refused.is_empty() {
        return Ok(answer);
    }
    Err(ResolveError::Refused {
        host: host.to_owned(),
        allowed: answer.len() - refused.len(),
        refused,
    })
}

/// Checks an IP-literal host (and a `localhost` name) before a delivery attempt, because
/// reqwest connects to IP literals without calling the resolver. Other host names pass here;
/// [`GuardedResolver`] checks what they resolve to.
pub fn guard_literal_host(url: &Url, policy: TargetPolicy) -> Result<(), String> {
    let ip = match url.host() {
        None => return Err("webhook URL has no host".to_owned()),
        Some(Host::Domain(name)) => {
            if is_localhost_name(name) && !policy.allow_private {
                return Err(ResolveError::Localhost {
                    host: name.to_owned(),
                }
                .to_string());
            }
            return Ok(());
        }
        Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
    };
    check_ip(ip, policy).map_err(|refusal| format!("webhook target refused: {refusal}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::url_guard::IpRange;
    use std::net::Ipv4Addr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const STRICT: TargetPolicy = TargetPolicy {
        allow_private: false,
    };
    const LENIENT: TargetPolicy = TargetPolicy {
        allow_private: true,
    };

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter()
            .map(|ip| SocketAddr::new(ip.parse().unwrap(), 0))
            .collect()
    }

    async fn resolve_via_trait(
        host: &str,
        policy: TargetPolicy,
    ) -> Result<Vec<SocketAddr>, String> {
        let name: Name = host.parse().unwrap();
        match GuardedResolver::new(policy).resolve(name).await {
            Ok(addrs) => Ok(addrs.collect()),
            Err(err) => Err(err.to_string()),
        }
    }

    #[test]
    fn public_answer_returned_unchanged() {
        let answer = addrs(&["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]);
        assert_eq!(
            check_answer("example.com", answer.clone(), STRICT).unwrap(),
            answer
        );
    }

    #[test]
    fn mixed_answer_refused_whole() {
        let answer = addrs(&["93.184.216.34", "10.0.0.5", "8.8.8.8"]);
        let err = check_answer("evil.example", answer, STRICT).unwrap_err();
        let ResolveError::Refused {
            refused, allowed, ..
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!(*allowed, 2);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].range, IpRange::Private);
        assert_eq!(
            err.to_string(),
            "webhook host evil.example resolves to refused addresses as well as public ones, \
             so none are used: 10.0.0.5 is a private-network address"
        );
    }

    #[test]
    fn metadata_in_answer_refused_even_with_flag() {
        let answer = addrs(&["10.0.0.5", "169.254.169.254"]);
        let err = check_answer("internal.example", answer, LENIENT).unwrap_err();
        assert_eq!(
            err.to_string(),
            "webhook host internal.example resolves to refused addresses as well as public \
             ones, so none are used: 169.254.169.254 is a cloud metadata endpoint"
        );
        let answer = addrs(&["::ffff:169.254.169.254"]);
        let err = check_answer("m.example", answer, LENIENT).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("which is a cloud metadata endpoint"),
            "{err}"
        );
    }

    #[test]
    fn private_answer_allowed_only_with_flag() {
        let answer = addrs(&["10.0.0.5", "fd00::5"]);
        assert_eq!(
            check_answer("intranet", answer.clone(), LENIENT).unwrap(),
            answer
        );
        let err = check_answer("intranet", answer, STRICT).unwrap_err();
        assert_eq!(
            err.to_string(),
            "webhook host intranet resolves only to refused addresses: 10.0.0.5 is a \
             private-network address; fd00::5 is a private-network address"
        );
    }

    #[test]
    fn long_refusal_lists_are_capped_and_empty_answers_refused() {
        let answer = addrs(&["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]);
        let text = check_answer("many", answer, STRICT)
            .unwrap_err()
            .to_string();
        assert!(
            text.ends_with("10.0.0.3 is a private-network address (and 2 more)"),
            "{text}"
        );
        let err = check_answer("none", Vec::new(), STRICT).unwrap_err();
        assert!(matches!(err, ResolveError::NoAddresses { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn localhost_refused_without_flag_before_any_lookup() {
        for host in ["localhost", "LOCALHOST.", "api.localhost"] {
            let err = resolve_checked(host, STRICT).await.unwrap_err();
            assert!(
                matches!(err, ResolveError::Localhost { .. }),
                "{host}: {err:?}"
            );
        }
        assert_eq!(
            resolve_via_trait("localhost", STRICT).await.unwrap_err(),
            "webhook host localhost names this machine (a loopback address), which is refused \
             unless the server runs with --allow-private-webhook-targets"
        );
    }

    #[tokio::test]
    async fn localhost_resolves_to_loopback_with_flag() {
        let got = resolve_via_trait("localhost", LENIENT).await.unwrap();
        assert!(
            got.contains(&SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0)),
            "{got:?}"
        );
        assert!(got.iter().all(|a| a.ip().is_loopback()), "{got:?}");
    }

    #[tokio::test]
    async fn resolved_loopback_refused_by_address_not_just_by_name() {
        // A numeric name goes through lookup_host without touching the network; the refusal
        // must come from the address check since the name is not localhost-like.
        assert_eq!(
            resolve_via_trait("127.0.0.1", STRICT).await.unwrap_err(),
            "webhook host 127.0.0.1 resolves only to refused addresses: 127.0.0.1 is a \
             loopback address"
        );
        let got = resolve_via_trait("127.0.0.1", LENIENT).await.unwrap();
        assert_eq!(got, addrs(&["127.0.0.1"]));
    }

    #[test]
    fn literal_hosts_checked_before_delivery() {
        let check = |raw: &str, policy| guard_literal_host(&Url::parse(raw).unwrap(), policy);
        assert_eq!(
            check("http://127.0.0.1:9/hook", STRICT),
            Err("webhook target refused: 127.0.0.1 is a loopback address".to_owned())
        );
        assert_eq!(check("http://127.0.0.1:9/hook", LENIENT), Ok(()));
        assert_eq!(
            check("http://[::ffff:169.254.169.254]/", LENIENT),
            Err(
                "webhook target refused: ::ffff:169.254.169.254 carries the IPv4 address \
                 169.254.169.254, which is a cloud metadata endpoint"
                    .to_owned()
            )
        );
        assert_eq!(
            check("http://[fe80::1]/", STRICT),
            Err("webhook target refused: fe80::1 is a link-local address".to_owned())
        );
        assert_eq!(check("https://8.8.8.8/", STRICT), Ok(()));
        assert_eq!(check("https://example.com/", STRICT), Ok(()));
        assert!(check("http://localhost./", STRICT).is_err());
        assert_eq!(check("http://localhost./", LENIENT), Ok(()));
    }

    /// A loopback listener that counts the connections it accepts.
    async fn counting_listener() -> (u16, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut conn, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).await;
                let _ = conn
                    .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                    .await;
            }
        });
        (port, hits)
    }

    fn client(policy: TargetPolicy) -> reqwest::Client {
        // Several tests may race to install it; only the first install matters.
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(GuardedResolver::new(policy))
            .build()
            .unwrap()
    }

    fn error_chain(err: &dyn std::error::Error) -> String {
        let mut text = err.to_string();
        let mut source = err.source();
        while let Some(inner) = source {
            text.push_str(" | ");
            text.push_str(&inner.to_string());
            source = inner.source();
        }
        text
    }

    #[tokio::test]
    async fn reqwest_uses_the_resolver_for_names_and_not_for_literals() {
        let (port, hits) = counting_listener().await;

        let err = client(STRICT)
            .get(format!("http://localhost:{port}/hook"))
            .send()
            .await
            .unwrap_err();
        assert!(
            error_chain(&err).contains("webhook host localhost names this machine"),
            "{}",
            error_chain(&err)
        );
        assert_eq!(
            hits.load(Ordering::SeqCst),
            0,
            "refused name must not connect"
        );

        let resp = client(LENIENT)
            .get(format!("http://localhost:{port}/hook"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204);
        assert_eq!(hits.load(Ordering::SeqCst), 1);

        // The reason guard_literal_host exists: reqwest connects to IP literals directly, so
        // even the strict resolver does not stop this request.
        let url = Url::parse(&format!("http://127.0.0.1:{port}/hook")).unwrap();
        assert!(guard_literal_host(&url, STRICT).is_err());
        let resp = client(STRICT).get(url).send().await.unwrap();
        assert_eq!(resp.status(), 204);
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }
}
