//! Runs `packaging/agent-flags` (the script the module packages' scriptlets
//! call) over temporary roots, with every POSIX shell this machine has
//! (dash is Debian's /bin/sh, bash --posix stands in for EL's), and checks
//! the bytes it leaves in `etc/mesos-slave/`.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const ISOLATOR: &str = "com_mesosphere_mesos_NetworkIsolator";
const HOOK: &str = "com_mesosphere_mesos_NetworkHook";
const MODULES: &str = "file:///etc/calico/modules.json\n";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/agent-flags")
}

/// The shells to run the script with: every one of these that is installed.
fn shells() -> Vec<Vec<&'static str>> {
    let mut found = Vec::new();
    for shell in [vec!["dash"], vec!["bash", "--posix"], vec!["busybox", "sh"]] {
        let present = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {} >/dev/null", shell[0]))
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if present {
            found.push(shell);
        }
    }
    assert!(!found.is_empty(), "no POSIX shell (dash, bash) found");
    found
}

struct Root {
    _dir: tempfile::TempDir,
    path: PathBuf,
    shell: Vec<&'static str>,
}

struct Run {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Root {
    fn new(shell: &[&'static str]) -> Root {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        fs::create_dir_all(path.join("etc/mesos-slave")).unwrap();
        Root {
            _dir: dir,
            path,
            shell: shell.to_vec(),
        }
    }

    fn flags(&self) -> PathBuf {
        self.path.join("etc/mesos-slave")
    }

    fn write(&self, name: &str, content: &str) {
        fs::write(self.flags().join(name), content).unwrap();
    }

    fn read(&self, name: &str) -> Option<String> {
        fs::read_to_string(self.flags().join(name)).ok()
    }

    /// Every entry of etc/mesos-slave, sorted (temporary files included).
    fn listing(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.flags())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// Every file left under var/lib/calico-mesos (the script's state).
    fn state_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            let Ok(entries) = fs::read_dir(dir) else {
                return;
            };
            for e in entries {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, base, out);
                } else {
                    out.push(p.strip_prefix(base).unwrap().display().to_string());
                }
            }
        }
        walk(
            &self.path.join("var/lib/calico-mesos"),
            &self.path,
            &mut out,
        );
        out
    }

    fn run(&self, args: &[&str]) -> Run {
        let out = Command::new(self.shell[0])
            .args(&self.shell[1..])
            .arg(script())
            .args(args)
            .arg("--root")
            .arg(&self.path)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        Run {
            ok: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    /// Runs and expects success without a word on stdout or stderr.
    fn silent(&self, args: &[&str]) {
        let r = self.run(args);
        assert!(
            r.ok && r.stdout.is_empty() && r.stderr.is_empty(),
            "{:?} agent-flags {args:?}: status {:?}, stdout {:?}, stderr {:?}",
            self.shell,
            r.code,
            r.stdout,
            r.stderr
        );
    }
}

fn each_shell(test: impl Fn(&Root)) {
    for shell in shells() {
        test(&Root::new(&shell));
    }
}

#[test]
fn existing_isolation_keeps_the_operators_order_and_remove_restores_it() {
    each_shell(|r| {
        let operator = "cgroups/cpu,cgroups/mem,docker/runtime\n";
        r.write("isolation", operator);
        r.silent(&["add"]);
        assert_eq!(
            r.read("isolation").unwrap(),
            format!("cgroups/cpu,cgroups/mem,docker/runtime,{ISOLATOR}\n")
        );
        assert_eq!(r.read("hooks").unwrap(), format!("{HOOK}\n"));
        assert_eq!(r.read("modules").unwrap(), MODULES);
        assert_eq!(r.listing(), ["hooks", "isolation", "modules"]);

        r.silent(&["remove"]);
        assert_eq!(r.read("isolation").unwrap(), operator, "{:?}", r.shell);
        assert_eq!(r.listing(), ["isolation"], "{:?}", r.shell);
        assert!(r.state_files().is_empty(), "left {:?}", r.state_files());
    });
}

#[test]
fn no_files_get_mesos_defaults_plus_ours_and_remove_deletes_them() {
    each_shell(|r| {
        r.silent(&["add"]);
        assert_eq!(
            r.read("isolation").unwrap(),
            format!("posix/cpu,posix/mem,{ISOLATOR}\n")
        );
        assert_eq!(r.read("hooks").unwrap(), format!("{HOOK}\n"));
        assert_eq!(r.read("modules").unwrap(), MODULES);
        for name in ["isolation", "hooks", "modules"] {
            let mode = fs::metadata(r.flags().join(name)).unwrap().mode() & 0o7777;
            assert_eq!(mode, 0o644, "{name}");
        }
        r.silent(&["remove"]);
        assert!(r.listing().is_empty(), "left {:?}", r.listing());
        assert!(r.state_files().is_empty(), "left {:?}", r.state_files());
    });
}

#[test]
fn add_is_idempotent_and_removes_duplicates() {
    each_shell(|r| {
        r.write(
            "isolation",
            &format!("{ISOLATOR},cgroups/cpu,{ISOLATOR} ,cgroups/mem\n"),
        );
        r.write("hooks", &format!("{HOOK},{HOOK}"));
        r.silent(&["add"]);
        assert_eq!(
            r.read("isolation").unwrap(),
            format!("{ISOLATOR},cgroups/cpu,cgroups/mem\n")
        );
        assert_eq!(r.read("hooks").unwrap(), HOOK);
        let before: Vec<_> = ["isolation", "hooks", "modules"]
            .iter()
            .map(|n| fs::metadata(r.flags().join(n)).unwrap().ino())
            .collect();
        // A reinstall or upgrade runs add again: nothing changes, not even
        // the files' inodes.
        r.silent(&["add"]);
        r.silent(&["add"]);
        assert_eq!(
            r.read("isolation").unwrap(),
            format!("{ISOLATOR},cgroups/cpu,cgroups/mem\n")
        );
        let after: Vec<_> = ["isolation", "hooks", "modules"]
            .iter()
            .map(|n| fs::metadata(r.flags().join(n)).unwrap().ino())
            .collect();
        assert_eq!(before, after, "an add that changes nothing rewrote a file");
        assert_eq!(r.listing(), ["hooks", "isolation", "modules"]);
    });
}

#[test]
fn remove_restores_odd_formatting_byte_for_byte_and_twice_is_harmless() {
    each_shell(|r| {
        let isolation = "posix/cpu, posix/mem";
        let hooks = "org_example_Hook,,x\n\n";
        r.write("isolation", isolation);
        r.write("hooks", hooks);
        r.write("modules", "");
        fs::set_permissions(
            r.flags().join("isolation"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let inode = fs::metadata(r.flags().join("isolation")).unwrap().ino();
        r.silent(&["add"]);
        assert_eq!(
            r.read("isolation").unwrap(),
            format!("posix/cpu, posix/mem,{ISOLATOR}")
        );
        assert_eq!(
            r.read("hooks").unwrap(),
            format!("org_example_Hook,,x,{HOOK}\n\n")
        );
        assert_eq!(r.read("modules").unwrap(), MODULES.trim_end());
        let meta = fs::metadata(r.flags().join("isolation")).unwrap();
        assert_eq!(
            meta.mode() & 0o7777,
            0o600,
            "the operator's mode was not kept"
        );
        assert_ne!(
            meta.ino(),
            inode,
            "not written as a new file renamed over the old one"
        );
        r.silent(&["remove"]);
        r.silent(&["remove"]);
        assert_eq!(r.read("isolation").unwrap(), isolation);
        assert_eq!(r.read("hooks").unwrap(), hooks);
        assert_eq!(r.read("modules").unwrap(), "");
        assert_eq!(r.listing(), ["hooks", "isolation", "modules"]);
    });
}

#[test]
fn modules_pointing_elsewhere_are_left_alone_with_one_line_saying_what_to_add() {
    each_shell(|r| {
        let other = "file:///etc/mesos-slave-modules/site.json\n";
        r.write("modules", other);
        let run = r.run(&["add"]);
        assert!(run.ok, "{:?}: {}", r.shell, run.stderr);
        assert_eq!(r.read("modules").unwrap(), other);
        let said = format!("{}{}", run.stdout, run.stderr);
        assert_eq!(said.lines().count(), 1, "said: {said:?}");
        assert!(
            said.contains("/etc/calico/modules.json") && said.contains("site.json"),
            "said: {said:?}"
        );
        // The isolator and hook are still added: an agent that cannot load
        // them refuses to start instead of running tasks on the host network.
        assert!(r.read("isolation").unwrap().contains(ISOLATOR));
        r.silent(&["remove"]);
        assert_eq!(r.read("modules").unwrap(), other);
        assert_eq!(r.listing(), ["modules"]);
    });
}

/// The 2016 calico-mesos package pointed --modules at its own file, which
/// the upgrade to this one removes: add takes the flag over, remove deletes it.
#[test]
fn modules_of_the_2016_package_become_ours() {
    each_shell(|r| {
        r.write("modules", "file:///calico/modules.json\n");
        r.silent(&["add"]);
        assert_eq!(r.read("modules").unwrap(), MODULES);
        r.silent(&["remove"]);
        assert_eq!(r.read("modules"), None);
    });
}

#[test]
fn a_created_file_the_operator_extended_stays_without_our_entry() {
    each_shell(|r| {
        r.silent(&["add"]);
        r.write(
            "isolation",
            &format!("posix/cpu,posix/mem,{ISOLATOR},docker/runtime\n"),
        );
        r.silent(&["remove"]);
        assert_eq!(
            r.read("isolation").unwrap(),
            "posix/cpu,posix/mem,docker/runtime\n"
        );
        assert_eq!(r.listing(), ["isolation"]);
        assert!(r.state_files().is_empty(), "left {:?}", r.state_files());
    });
}

/// What the package scriptlets do on an upgrade from the packages that
/// shipped the three files as config files: the pre-install step moves them
/// to var/lib/calico-mesos/agent-flags/stash/, the package manager finds
/// nothing to replace or save, and add puts them back merged. Leftovers of
/// the old packages (.rpmnew, .dpkg-dist holding what they shipped) go.
#[test]
fn add_brings_back_files_stashed_by_an_upgrade_and_drops_old_leftovers() {
    each_shell(|r| {
        let stash = r.path.join("var/lib/calico-mesos/agent-flags/stash");
        fs::create_dir_all(&stash).unwrap();
        let operator = format!("cgroups/cpu,cgroups/mem,docker/runtime,{ISOLATOR}\n");
        fs::write(stash.join("isolation"), &operator).unwrap();
        fs::write(stash.join("hooks"), format!("{HOOK}\n")).unwrap();
        fs::write(stash.join("modules"), MODULES).unwrap();
        let shipped_isolation = format!("cgroups/cpu,cgroups/mem,{ISOLATOR}\n");
        r.write("isolation.rpmnew", &shipped_isolation);
        r.write("hooks.dpkg-dist", &format!("{HOOK}\n"));
        r.write("modules.rpmsave", "file:///somewhere/else.json\n");
        r.silent(&["add"]);
        assert_eq!(r.read("isolation").unwrap(), operator);
        assert_eq!(r.read("hooks").unwrap(), format!("{HOOK}\n"));
        assert_eq!(r.read("modules").unwrap(), MODULES);
        // A leftover that is not what the old packages shipped is the
        // operator's: kept.
        assert_eq!(
            r.listing(),
            ["hooks", "isolation", "modules", "modules.rpmsave"]
        );
        assert!(r.state_files().iter().all(|f| !f.contains("stash")));
        // hooks and modules held exactly what the old package shipped: they
        // were the package's, and go on erase.
        r.silent(&["remove"]);
        assert_eq!(
            r.read("isolation").unwrap(),
            "cgroups/cpu,cgroups/mem,docker/runtime\n"
        );
        assert_eq!(r.listing(), ["isolation", "modules.rpmsave"]);
        assert!(r.state_files().is_empty(), "left {:?}", r.state_files());
    });
}

/// An erase that runs while an upgrade holds the files in the stash (RPM:
/// one variant replaced by the other in one transaction) edits the stashed
/// copies; the add after it brings them back.
#[test]
fn remove_edits_stashed_files() {
    each_shell(|r| {
        r.write("isolation", "cgroups/cpu\n");
        r.silent(&["add"]);
        let stash = r.path.join("var/lib/calico-mesos/agent-flags/stash");
        fs::create_dir_all(&stash).unwrap();
        for name in ["isolation", "hooks", "modules"] {
            fs::rename(r.flags().join(name), stash.join(name)).unwrap();
        }
        r.silent(&["remove"]);
        assert_eq!(
            fs::read_to_string(stash.join("isolation")).unwrap(),
            "cgroups/cpu\n"
        );
        r.silent(&["add"]);
        assert_eq!(
            r.read("isolation").unwrap(),
            format!("cgroups/cpu,{ISOLATOR}\n")
        );
        assert_eq!(r.read("hooks").unwrap(), format!("{HOOK}\n"));
        r.silent(&["remove"]);
        assert_eq!(r.read("isolation").unwrap(), "cgroups/cpu\n");
        assert_eq!(r.listing(), ["isolation"]);
        assert!(r.state_files().is_empty(), "left {:?}", r.state_files());
    });
}

#[test]
fn usage_errors_exit_2_and_change_nothing() {
    each_shell(|r| {
        for args in [&[][..], &["frobnicate"][..]] {
            let run = r.run(args);
            assert_eq!(run.code, Some(2), "{args:?}");
            assert!(run.stderr.contains("usage"), "{}", run.stderr);
        }
        assert!(r.listing().is_empty());
    });
}

#[test]
fn an_unwritable_directory_fails_loudly() {
    // Only meaningful as a user whom permissions stop (root is not stopped).
    let me = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&me.stdout).trim() == "0" {
        // As root: a flag path that is a directory cannot be replaced.
        each_shell(|r| {
            fs::create_dir(r.flags().join("isolation")).unwrap();
            let run = r.run(&["add"]);
            assert!(!run.ok, "{:?}: add succeeded over a directory", r.shell);
            assert!(run.stderr.contains("isolation"), "{}", run.stderr);
        });
        return;
    }
    each_shell(|r| {
        fs::set_permissions(r.flags(), fs::Permissions::from_mode(0o555)).unwrap();
        let run = r.run(&["add"]);
        fs::set_permissions(r.flags(), fs::Permissions::from_mode(0o755)).unwrap();
        assert!(!run.ok);
        assert!(run.stderr.contains("agent-flags"), "{}", run.stderr);
    });
}
