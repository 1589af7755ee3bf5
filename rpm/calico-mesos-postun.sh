# calico-mesos %postun: reload units. No restart of calico-node on an
# upgrade: it does not run the plugin (the Mesos agent starts the plugin per
# request), and a restart would flap BIRD and Felix for nothing.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
