//! The files Docker writes for every container and binds into it: /etc/hosts,
//! /etc/hostname and /etc/resolv.conf.

use std::net::Ipv4Addr;

/// /etc/hosts: Docker's fixed entries, then `--add-host`s, then the container's own
/// addresses with its hostname.
pub fn hosts(
    hostname: &str,
    domainname: &str,
    own: &[Ipv4Addr],
    extra: &[(String, String)],
) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for (name, addr) in extra {
        s.push_str(&format!("{addr}\t{name}\n"));
    }
    let names = if domainname.is_empty() {
        hostname.to_owned()
    } else {
        format!("{hostname}.{domainname} {hostname}")
    };
    for ip in own {
        s.push_str(&format!("{ip}\t{names}\n"));
    }
    s
}

/// The nameservers of a resolv.conf.
pub fn nameservers(conf: &str) -> Vec<String> {
    conf.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next().map(str::to_owned))?
        })
        .collect()
}

fn loopback(ns: &str) -> bool {
    ns.parse::<std::net::IpAddr>()
        .is_ok_and(|a| a.is_loopback())
}

/// A container's resolv.conf.
///
/// With an embedded DNS server (`dns`, user-defined networks) it is the one nameserver,
/// and forwards to `--dns` or the host's. Without (the default bridge), the container
/// gets `--dns` or the host's nameservers, loopback ones dropped (they would be the
/// container's own loopback), and Google's if none are left, as Docker does.
pub fn resolv_conf(
    host: &str,
    dns: Option<Ipv4Addr>,
    user_dns: &[String],
    search: &[String],
    options: &[String],
) -> String {
    let mut out = String::new();
    let servers: Vec<String> = match dns {
        Some(a) => vec![a.to_string()],
        None if !user_dns.is_empty() => user_dns.to_vec(),
        None => {
            let mut v: Vec<String> = nameservers(host)
                .into_iter()
                .filter(|n| !loopback(n))
                .collect();
            if v.is_empty() {
                v = vec!["8.8.8.8".into(), "8.8.4.4".into()];
            }
            v
        }
    };
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    let host_line = |key: &str| {
        host.lines()
            .rev()
            .find(|l| l.split_whitespace().next() == Some(key))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
    };
    let search = if search.is_empty() {
        host_line("search").unwrap_or_default()
    } else {
        search
            .iter()
            .filter(|s| s.as_str() != ".")
            .cloned()
            .collect::<Vec<_>>()
            .join(" ")
    };
    if !search.is_empty() {
        out.push_str(&format!("search {search}\n"));
    }
    let options = if options.is_empty() {
        host_line("options").unwrap_or_default()
    } else {
        options.join(" ")
    };
    if !options.is_empty() {
        out.push_str(&format!("options {options}\n"));
    }
    out
}

/// The nameservers the embedded DNS server forwards to for a container: its `--dns`, or
/// the host's (loopback ones included: berthd runs on the host and reaches them).
pub fn upstreams(host: &str, user_dns: &[String]) -> Vec<std::net::SocketAddr> {
    let list: Vec<String> = if user_dns.is_empty() {
        nameservers(host)
    } else {
        user_dns.to_vec()
    };
    list.iter()
        .filter_map(|s| s.parse::<std::net::IpAddr>().ok())
        .map(|a| std::net::SocketAddr::new(a, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_as_docker_writes_them() {
        let h = hosts(
            "web",
            "example.org",
            &[Ipv4Addr::new(172, 18, 0, 2)],
            &[("db".into(), "10.0.0.9".into())],
        );
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.contains("10.0.0.9\tdb\n"));
        assert!(h.ends_with("172.18.0.2\tweb.example.org web\n"), "{h}");
        let host = "# hi\nnameserver 127.0.0.53\nnameserver 10.1.1.1\nsearch corp\noptions edns0\n";
        assert_eq!(
            resolv_conf(host, None, &[], &[], &[]),
            "nameserver 10.1.1.1\nsearch corp\noptions edns0\n"
        );
        assert_eq!(
            resolv_conf("nameserver 127.0.0.1\n", None, &[], &[], &[]),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        assert_eq!(
            resolv_conf(
                host,
                Some(Ipv4Addr::new(172, 18, 0, 1)),
                &["9.9.9.9".into()],
                &["a.b".into()],
                &["ndots:2".into()]
            ),
            "nameserver 172.18.0.1\nsearch a.b\noptions ndots:2\n"
        );
        assert_eq!(upstreams(host, &[]).len(), 2);
        assert_eq!(
            upstreams(host, &["9.9.9.9".into()])[0].to_string(),
            "9.9.9.9:53"
        );
    }
}
