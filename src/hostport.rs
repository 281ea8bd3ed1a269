//! `host[:port]` as URLs write it, IPv6 hosts in brackets (`[::1]:1883`). Shared by every
//! address the config takes (MQTT brokers, forwarding targets).

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostPortError {
    #[error("{0:?} is not a port")]
    Port(String),
    #[error("no host")]
    NoHost,
}

/// The host (brackets taken off) and the port, if one is given.
pub fn split(authority: &str) -> Result<(&str, Option<u16>), HostPortError> {
    let (host, port) = match authority.rsplit_once(':') {
        // A colon inside brackets belongs to an IPv6 host.
        Some((h, p)) if !h.starts_with('[') || h.ends_with(']') => (
            h,
            Some(
                p.parse::<u16>()
                    .map_err(|_| HostPortError::Port(p.to_owned()))?,
            ),
        ),
        _ => (authority, None),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(HostPortError::NoHost);
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_ports_are_split() {
        assert_eq!(split("broker:1884"), Ok(("broker", Some(1884))));
        assert_eq!(split("broker"), Ok(("broker", None)));
        assert_eq!(split("[::1]:9"), Ok(("::1", Some(9))));
        assert_eq!(split("[::1]"), Ok(("::1", None)));
        assert_eq!(split("h:port"), Err(HostPortError::Port("port".into())));
        assert_eq!(split(""), Err(HostPortError::NoHost));
        assert_eq!(split(":80"), Err(HostPortError::NoHost));
    }
}
