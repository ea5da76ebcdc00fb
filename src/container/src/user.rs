//! Docker's `--user`: `name`, `uid`, `name:group`, `uid:gid`, resolved against the
//! container's own /etc/passwd and /etc/group.

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Home directory (for $HOME).
    pub home: String,
}

/// Resolves `spec` with the contents of /etc/passwd and /etc/group.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<User, String> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 7)
        .collect();
    let found = entries
        .iter()
        .find(|f| f[0] == u || (u.parse::<u32>().is_ok() && f[2] == u));
    let mut user = match (found, u.parse::<u32>()) {
        (Some(f), _) => User {
            uid: f[2]
                .parse()
                .map_err(|_| format!("bad uid for {u} in /etc/passwd"))?,
            gid: f[3]
                .parse()
                .map_err(|_| format!("bad gid for {u} in /etc/passwd"))?,
            groups: vec![],
            home: f[5].to_owned(),
        },
        (None, Ok(uid)) => User {
            uid,
            gid: 0,
            groups: vec![],
            home: "/".into(),
        },
        (None, Err(_)) => {
            return Err(format!(
                "unable to find user {u}: no matching entries in passwd file"
            ))
        }
    };
    let groups: Vec<Vec<&str>> = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    if let Some(g) = g {
        user.gid = match groups.iter().find(|f| f[0] == g) {
            Some(f) => f[2]
                .parse()
                .map_err(|_| format!("bad gid for group {g} in /etc/group"))?,
            None => g.parse().map_err(|_| {
                format!("unable to find group {g}: no matching entries in group file")
            })?,
        };
    }
    let name = found.map(|f| f[0]).unwrap_or_default();
    if !name.is_empty() {
        for f in &groups {
            if f[3].split(',').any(|m| m == name) {
                if let Ok(gid) = f[2].parse() {
                    if gid != user.gid && !user.groups.contains(&gid) {
                        user.groups.push(gid);
                    }
                }
            }
        }
    }
    Ok(user)
}

/// A group's ID: its name in /etc/group, or a number.
pub fn group_id(g: &str, group: &str) -> Result<u32, String> {
    let found = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .find(|f| f[0] == g);
    match found {
        Some(f) => f[2]
            .parse()
            .map_err(|_| format!("bad gid for group {g} in /etc/group")),
        None => g
            .parse()
            .map_err(|_| format!("Unable to find group {g}: no matching entries in group file")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nwww:x:33:33::/var/www:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwww:x:33:\naudio:x:29:www,other\nnogroup:x:65534:\n";

    #[test]
    fn added_groups_by_name_or_number() {
        assert_eq!(group_id("audio", GROUP), Ok(29));
        assert_eq!(group_id("4242", GROUP), Ok(4242));
        assert!(group_id("nosuch", GROUP)
            .unwrap_err()
            .contains("Unable to find group nosuch"));
    }

    #[test]
    fn names_and_numbers_resolve() {
        let u = resolve("www", PASSWD, GROUP).unwrap();
        assert_eq!(
            (u.uid, u.gid, u.groups.clone(), u.home.as_str()),
            (33, 33, vec![29], "/var/www")
        );
        assert_eq!(resolve("65534", PASSWD, GROUP).unwrap().gid, 65534);
        let u = resolve("1234:5678", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid), (1234, 5678));
        assert_eq!(resolve("nobody:audio", PASSWD, GROUP).unwrap().gid, 29);
    }

    #[test]
    fn unknown_names_use_dockers_wording() {
        assert_eq!(
            resolve("ghost", PASSWD, GROUP).unwrap_err(),
            "unable to find user ghost: no matching entries in passwd file"
        );
        assert!(resolve("root:nogroupatall", PASSWD, GROUP)
            .unwrap_err()
            .contains("unable to find group"));
    }
}
