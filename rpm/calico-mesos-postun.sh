# calico-mesos %postun: after an upgrade, reload units and restart the
# node if it was running.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -ge 1 ]; then
    systemctl try-restart calico-node.service >/dev/null 2>&1 || :
fi
