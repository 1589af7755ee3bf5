# calico-mesos-netmodules %posttrans: after the whole transaction (the old
# package's files are gone), merge our isolator, hook and modules into the
# agent flag files; exactly one entry each, however often this runs.
/usr/lib/calico-mesos/agent-flags add
