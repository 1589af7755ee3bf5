# calico-mesos %preun: on erase (not upgrade), stop and disable the units.
if [ "$1" -eq 0 ]; then
    systemctl --no-reload disable --now calico-node.service >/dev/null 2>&1 || :
    systemctl --no-reload disable --now calico-mesos-gc.timer >/dev/null 2>&1 || :
fi
