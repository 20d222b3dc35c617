//! The process's limit on open files (`RLIMIT_NOFILE`) and the connection
//! limits that must fit in it.
//!
//! Every client connection holds a file descriptor. Service managers
//! usually start a process with a soft limit of 1024 descriptors (systemd's
//! default) and a far higher hard limit; the soft limit is the process's
//! own to raise, so `serve` raises it to the hard limit at start. A
//! listener whose connection limit is above what the descriptors allow
//! runs out of descriptors before it sheds anything, and then accepts no
//! one; so where the hard limit is low too, the connection limits are
//! lowered to fit.

/// Descriptors kept for everything but client connections: the database
/// pool (an SQLite connection holds three), the change feed's connection,
/// webhook deliveries, the log, the async runtime's own.
pub const RESERVED: u64 = 64;

/// The soft limit before and after [`raise`], and the hard limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    pub before: u64,
    pub after: u64,
    pub hard: u64,
}

/// Raises the soft limit on open files to the hard limit.
pub fn raise() -> std::io::Result<Raised> {
    let (before, hard) = rlimit::Resource::NOFILE.get()?;
    let after = rlimit::increase_nofile_limit(u64::MAX)?;
    Ok(Raised {
        before,
        after,
        hard,
    })
}

/// The connection limits of the two listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub main: usize,
    pub gateway: Option<usize>,
}

/// `limits` lowered in proportion so that their connections fit in `soft`
/// descriptors, or `None` when they already fit. A connection to the main
/// listener holds one descriptor, a gateway connection two (its own and,
/// while a request is forwarded, one to the upstream); [`RESERVED`] are
/// kept for the rest.
pub fn fit(soft: u64, limits: Limits) -> Option<Limits> {
    let budget = u128::from(soft.saturating_sub(RESERVED).max(4));
    let main = limits.main as u128;
    let gateway = limits.gateway.map_or(0, |g| g as u128);
    let need = main + 2 * gateway;
    if need <= budget {
        return None;
    }
    let share = |n: u128| usize::try_from((n * budget / need).max(2)).unwrap_or(usize::MAX);
    Some(Limits {
        main: share(main),
        gateway: limits.gateway.map(|g| share(g as u128)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_that_fit_are_kept() {
        let limits = Limits {
            main: 4096,
            gateway: Some(4096),
        };
        assert_eq!(fit(524_288, limits), None);
        assert_eq!(fit(4096 * 3 + RESERVED, limits), None);
        assert_eq!(fit(u64::MAX, limits), None);
    }

    #[test]
    fn limits_over_the_descriptors_are_lowered_in_proportion() {
        let alone = Limits {
            main: 4096,
            gateway: None,
        };
        assert_eq!(
            fit(1024, alone),
            Some(Limits {
                main: 960,
                gateway: None
            })
        );
        let both = Limits {
            main: 4096,
            gateway: Some(4096),
        };
        let fitted = fit(256, both).expect("lowered");
        assert_eq!(fitted.main, 64);
        assert_eq!(fitted.gateway, Some(64));
        assert!(fitted.main as u64 + 2 * 64 <= 256 - RESERVED);
        // Never below two each, however few descriptors there are.
        let tiny = fit(10, both).expect("lowered");
        assert_eq!(tiny.main, 2);
        assert_eq!(tiny.gateway, Some(2));
    }
}
