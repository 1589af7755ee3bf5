# calico-mesos-netmodules %pre: keep the agent flag files out of rpm's way
# until %posttrans merges our entries into them (agent-flags add). The
# module packages up to 0.1.0-1 shipped them as config files, and erasing
# those after this install would delete them, or move edited ones to
# .rpmsave (the agent loses its flags; the init wrapper passes leftovers on
# as flags). So they wait in agent-flags' stash: a file holding exactly what
# those packages shipped is copied (rpm then removes it without a word),
# any other is moved (rpm finds nothing to save). agent-flags add brings
# them back, agent-flags remove edits them there meanwhile.
stash=/var/lib/calico-mesos/agent-flags/stash
nl='
'
for f in isolation hooks modules; do
    [ -f "/etc/mesos-slave/$f" ] && [ ! -e "$stash/$f" ] || continue
    case $f in
    isolation) shipped=cgroups/cpu,cgroups/mem,com_mesosphere_mesos_NetworkIsolator ;;
    hooks) shipped=com_mesosphere_mesos_NetworkHook ;;
    modules) shipped=file:///etc/calico/modules.json ;;
    esac
    mkdir -p -m 0755 "$stash" || exit 1
    if [ "$(cat "/etc/mesos-slave/$f" && echo x)" = "$shipped${nl}x" ]; then
        cp -p "/etc/mesos-slave/$f" "$stash/$f" || exit 1
    else
        mv -f "/etc/mesos-slave/$f" "$stash/$f" || exit 1
    fi
done
