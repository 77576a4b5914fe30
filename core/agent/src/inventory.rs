//! What the agent tells the hub about its machine.

use std::path::Path;

use ferry_net::tasks::Inventory;

/// The machine's facts now. Blocks (reads /proc, asks the kernel).
pub(crate) fn gather(cache: &Path, server: &url::Url) -> Inventory {
    Inventory {
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default(),
        os: std::env::consts::OS.to_owned(),
        arch: std::env::consts::ARCH.to_owned(),
        addresses: addresses(),
        free_disk: free_bytes(cache).unwrap_or(0),
        on_battery: on_battery(),
        server: server.to_string(),
        ferry_version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

/// Free bytes for unprivileged use on the filesystem holding `path`.
pub(crate) fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `stat` a valid out
    // pointer for the call's duration.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut stat) };
    (rc == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// IPv4 and IPv6 addresses with their prefix length, loopback excluded.
fn addresses() -> Vec<String> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below; each node
    // and its address pointers are valid until freeifaddrs.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut node = head;
        while !node.is_null() {
            let ifa = &*node;
            if let (Some(addr), Some(mask)) = (sockaddr(ifa.ifa_addr), sockaddr(ifa.ifa_netmask))
                && !addr.is_loopback()
            {
                let prefix = match mask {
                    std::net::IpAddr::V4(m) => u32::from(m).count_ones(),
                    std::net::IpAddr::V6(m) => u128::from(m).count_ones(),
                };
                out.push(format!("{addr}/{prefix}"));
            }
            node = ifa.ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out.sort();
    out.dedup();
    out
}

/// # Safety
/// `sa` is null or points to a valid sockaddr of its family's size.
unsafe fn sockaddr(sa: *const libc::sockaddr) -> Option<std::net::IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: the caller guarantees `sa` points to a sockaddr of its family.
    unsafe {
        match (*sa).sa_family as i32 {
            libc::AF_INET => {
                let v4 = &*(sa as *const libc::sockaddr_in);
                Some(std::net::Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)).into())
            }
            libc::AF_INET6 => {
                let v6 = &*(sa as *const libc::sockaddr_in6);
                Some(std::net::Ipv6Addr::from(v6.sin6_addr.s6_addr).into())
            }
            _ => None,
        }
    }
}

/// Whether the machine runs on battery, from the kernel's power supplies.
fn on_battery() -> Option<bool> {
    let dir = std::fs::read_dir("/sys/class/power_supply").ok()?;
    let mut any_battery = false;
    for entry in dir.flatten() {
        let p = entry.path();
        let kind = std::fs::read_to_string(p.join("type")).unwrap_or_default();
        match kind.trim() {
            "Mains" if std::fs::read_to_string(p.join("online")).is_ok_and(|o| o.trim() == "1") => {
                return Some(false);
            }
            "Battery" => any_battery = true,
            _ => {}
        }
    }
    any_battery.then_some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventory_names_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let inv = gather(dir.path(), &url::Url::parse("https://hub:1").unwrap());
        assert_eq!(inv.os, std::env::consts::OS);
        assert!(inv.free_disk > 0, "statvfs of a temp dir gives free bytes");
        assert!(
            inv.addresses.iter().all(|a| a.contains('/')),
            "{:?}",
            inv.addresses
        );
        assert!(free_bytes(Path::new("/no/such/dir")).is_none());
    }
}
