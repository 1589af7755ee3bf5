# Shared by el7.cfg, el8.cfg and el9.cfg: adds calico-mesos's dist/rpm (signed:
# packages and repodata checked against dist/RPM-GPG-KEY-calico-mesos) and,
# when MESOS_REPO_URL is set, a mesos repository to the chroot's package
# manager configuration (yum.conf on EL7, dnf.conf later).
import os
_repos = """
[calico-mesos-dist]
name=calico-mesos packages from dist/rpm
baseurl=file://{dist}
enabled=1
gpgcheck=1
repo_gpgcheck=1
gpgkey=file://{dist}/../RPM-GPG-KEY-calico-mesos
""".format(dist=os.environ['CALICO_MESOS_DIST_RPM'])
if os.environ.get('MESOS_REPO_URL'):
    _repos += """
[mesos]
name=mesos
baseurl={url}
enabled=1
gpgcheck=0
""".format(url=os.environ['MESOS_REPO_URL'])
for _key in ('dnf.conf', 'yum.conf'):
    if _key in config_opts:
        config_opts[_key] += _repos
