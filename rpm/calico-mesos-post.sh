# calico-mesos %post: let systemd see the unit; preset it on first install
# (presets leave it disabled unless the site enables it). No running
# systemd (a chroot, a container build) is fine.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    systemctl preset calico-node.service >/dev/null 2>&1 || :
fi
