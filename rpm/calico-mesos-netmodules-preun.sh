# calico-mesos-netmodules %preun: on erase (not upgrade), take our entries
# out of the agent flag files; files agent-flags created go if nothing but
# Mesos' default is left.
if [ "$1" -eq 0 ]; then
    /usr/lib/calico-mesos/agent-flags remove
fi
