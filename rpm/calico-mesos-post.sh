# calico-mesos %post: let systemd see the unit; preset it on first install
# (presets leave it disabled unless the site enables it). No running
# systemd (a chroot, a container build) is fine.
# The log directory (cargo generate-rpm cannot own directories).
mkdir -p -m 0755 /var/log/calico
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    systemctl preset calico-node.service >/dev/null 2>&1 || :
fi
