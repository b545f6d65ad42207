use super::*;

fn cfg(allowed: &[&str], private: &[&str]) -> WebhooksConfig {
    WebhooksConfig {
        allowed_hosts: allowed.iter().map(|s| (*s).to_owned()).collect(),
        allow_private_hosts: private.iter().map(|s| (*s).to_owned()).collect(),
        ..WebhooksConfig::default()
    }
}

#[test]
fn every_internal_range_is_refused_v4_and_v6_and_mapped() {
    let internal = [
        "127.0.0.1",
        "127.255.0.9",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "100.127.255.254",
        "0.0.0.0",
        "0.1.2.3",
        "255.255.255.255",
        "224.0.0.1",
        "240.0.0.1",
        "192.0.0.8",
        "198.18.0.1",
        "::1",
        "::",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "::127.0.0.1",
        "64:ff9b::a00:1",
        "2001:db8::1",
    ];
    for ip in internal {
        let ip: IpAddr = ip.parse().expect(ip);
        assert!(!is_public(ip), "{ip} must count as internal");
    }
    for ip in [
        "8.8.8.8",
        "1.1.1.1",
        "100.128.0.1",
        "172.32.0.1",
        "2606:4700::1111",
        "::ffff:8.8.8.8",
    ] {
        let ip: IpAddr = ip.parse().expect(ip);
        assert!(is_public(ip), "{ip} is public");
    }
}

#[test]
fn hosts_match_exactly_or_below_a_wildcard_with_an_optional_port() {
    let pats: Vec<String> = [
        "hooks.example.com",
        "*.acme.io",
        "127.0.0.1:9000",
        "[::1]:80",
    ]
    .map(String::from)
    .into();
    assert!(host_matches(&pats, "hooks.example.com", 443));
    assert!(host_matches(&pats, "hooks.example.com", 8443));
    assert!(!host_matches(&pats, "evil-hooks.example.com", 443));
    assert!(host_matches(&pats, "a.acme.io", 443));
    assert!(host_matches(&pats, "b.a.acme.io", 443));
    assert!(!host_matches(&pats, "acme.io", 443));
    assert!(!host_matches(&pats, "evilacme.io", 443));
    assert!(host_matches(&pats, "127.0.0.1", 9000));
    assert!(!host_matches(&pats, "127.0.0.1", 9001));
    assert!(host_matches(&pats, "::1", 80));
}

#[test]
fn admission_refuses_what_is_not_allowed_and_says_why() {
    let c = cfg(
        &["hooks.example.com", "127.0.0.1", "10.0.0.5"],
        &["127.0.0.1"],
    );
    assert!(check(&c, "https://hooks.example.com/done?x=1").is_ok());
    assert!(
        check(&c, "http://127.0.0.1:8080/hook").is_ok(),
        "private allowed explicitly"
    );
    let refused = [
        ("ftp://hooks.example.com/", "scheme"),
        ("https://user:pw@hooks.example.com/", "user info"),
        ("https://other.example.com/", "allowed_hosts"),
        ("http://10.0.0.5/", "private"),
        ("https://[::ffff:127.0.0.1]/", "allowed_hosts"),
        ("not a url", "not a URL"),
    ];
    for (url, why) in refused {
        let e = check(&c, url).expect_err(url);
        assert!(e.contains(why), "{url}: {e}");
    }
    let off = check(&WebhooksConfig::default(), "https://hooks.example.com/").expect_err("off");
    assert!(off.contains("not enabled"), "{off}");
}

#[test]
fn a_name_that_resolves_only_inside_is_refused_at_send_time() {
    let c = cfg(&["hooks.example.com", "localhost"], &["localhost"]);
    let t = Target::parse("https://hooks.example.com/").expect("url");
    let inside: Vec<SocketAddr> = vec![
        "10.0.0.1:443".parse().expect("a"),
        "[::1]:443".parse().expect("b"),
    ];
    assert!(public_addrs(&c, &t, &inside).is_err());
    let mixed = vec![
        "10.0.0.1:443".parse().expect("a"),
        "93.184.216.34:443".parse().expect("b"),
    ];
    assert_eq!(
        public_addrs(&c, &t, &mixed).expect("one public"),
        vec!["93.184.216.34:443".parse::<SocketAddr>().expect("b")]
    );
    let local = Target::parse("http://localhost:80/").expect("url");
    assert_eq!(public_addrs(&c, &local, &inside).expect("allowed").len(), 2);
}
