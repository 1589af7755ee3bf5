#!/usr/bin/env python3
"""The source packages' build recipes, rendered from the binary packages'
metadata, so that what a package holds is written down once:

  ci/pkgmeta.py spec FILE      the RPM spec (calico-mesos.spec)
  ci/pkgmeta.py debian DIR     the debian/ directory of the Debian source package
  ci/pkgmeta.py version        <version>-<release> (the same for all packages)

The inputs are the `[package.metadata.generate-rpm]` and
`[package.metadata.deb]` sections (and their variants) of plugin/Cargo.toml
and netmodules-build/Cargo.toml, the scriptlets in rpm/, the maintainer
scripts in deb/<package>/ and deb/changelog: the same files cargo
generate-rpm and cargo deb read for the binary packages in dist/.
ci/test-source-packages compares what these recipes build with those.
"""

import email.utils
import os
import pathlib
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PLUGIN = "plugin"
MODULE = "netmodules-build"
# The module packages, by the variant ci/stage reports for a header tree.
MODULE_VARIANTS = {"mesos026": None, "mesos025": "mesos025"}
RPM_SCRIPTS = {
    "pre_install_script": "pre",
    "post_install_script": "post",
    "pre_uninstall_script": "preun",
    "post_uninstall_script": "postun",
    "post_trans_script": "posttrans",
}
DEB_SCRIPTS = ["preinst", "postinst", "prerm", "postrm"]


def cargo_toml(crate):
    with open(ROOT / crate / "Cargo.toml", "rb") as f:
        return tomllib.load(f)


def workspace():
    return cargo_toml(".")["workspace"]["package"]


def merged(base, variant):
    """A variant's tables over the base, as cargo generate-rpm and cargo
    deb merge them."""
    out = dict(base)
    out.pop("variants", None)
    for key, value in (variant or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def package_meta(crate, fmt, variant=None):
    toml = cargo_toml(crate)
    meta = toml["package"]["metadata"][fmt]
    if variant:
        meta = merged(meta, meta["variants"][variant])
    else:
        meta = merged(meta, None)
    meta.setdefault("name", toml["package"]["name"])
    meta.setdefault("description", toml["package"].get("description", ""))
    return meta


def rpm_packages():
    """(spec name, metadata, module variant or None) of every RPM."""
    out = [(None, package_meta(PLUGIN, "generate-rpm"), None)]
    for variant, key in MODULE_VARIANTS.items():
        out.append((variant, package_meta(MODULE, "generate-rpm", key), variant))
    return out


def deb_packages():
    out = [(PLUGIN, package_meta(PLUGIN, "deb"), None)]
    for variant, key in MODULE_VARIANTS.items():
        out.append((MODULE, package_meta(MODULE, "deb", key), variant))
    return out


def version():
    v = workspace()["version"]
    rel = package_meta(PLUGIN, "generate-rpm")["release"]
    return v, rel


# ------------------------------------------------------------- changelog
def changelog_entries():
    """(who, date, version, [lines]) per deb/changelog entry."""
    entries, head, body = [], None, []
    for line in (ROOT / "deb/changelog").read_text().splitlines():
        if not line.strip():
            continue
        if not line.startswith(" "):
            head = line[line.index("(") + 1 : line.index(")")]
            continue
        if line.startswith(" -- "):
            who, date = line[4:].split("  ", 1)
            entries.append((who.strip(), date.strip(), head, body))
            head, body = None, []
            continue
        text = line[2:] if line.startswith("  ") else line.lstrip()
        body.append(text.rstrip())
    return entries


def rpm_changelog(epoch):
    """deb/changelog as %changelog: the entries ci/cargo-generate-rpm.patch
    writes into the binary RPMs (same name, text and day)."""
    out = []
    for who, date, ver, body in changelog_entries():
        t = email.utils.parsedate_to_datetime(date)
        day = t.astimezone(__import__("datetime").timezone.utc).strftime("%a %b %d %Y")
        out.append(f"* {day} {who} - {ver}")
        out += ["- " + b[2:] if b.startswith("* ") else b for b in body]
        out.append("")
    return "\n".join(out).replace("%", "%%")


# ------------------------------------------------------------------ spec
def spec_quote(text):
    return text.replace("%", "%%")


def spec_paths(text):
    """/usr/lib/<dir> written through %{_exec_prefix} (the same path once
    expanded), which rpmlint does not take for a hard-coded library path."""
    return text.replace("/usr/lib/", "%{_exec_prefix}/lib/")


def rpm_relations(meta):
    lines = []
    for key, tag in (("requires", "Requires"), ("provides", "Provides"), ("conflicts", "Conflicts"), ("obsoletes", "Obsoletes")):
        for name, constraint in (meta.get(key) or {}).items():
            c = constraint.strip()
            lines.append(f"{tag}: {name}" + ("" if c == "*" else f" {c}"))
    return lines


def rpm_description(meta):
    """cargo generate-rpm's %description: the summary, else the description."""
    return meta.get("summary") or meta["description"]


def rpm_install_lines(meta):
    """%install commands and %files lines of one package's assets."""
    install, files = [], []
    for a in meta["assets"]:
        mode = int(str(a["mode"]), 8)
        dest = a["dest"]
        src = a["source"]
        if src.startswith("target/release/"):
            # ci/stage builds for the host triple, as ci/dist does for EL7's.
            src = "target/${CALICO_MESOS_HOST}/release/" + src[len("target/release/") :]
        if mode & 0o170000 == 0o040000:
            install.append(f'install -d -m {mode & 0o7777:04o} "%{{buildroot}}{dest}"')
            files.append(f"%dir %attr({mode & 0o7777:04o},root,root) {dest}")
            continue
        install.append(f'install -D -m {mode & 0o7777:04o} "{src}" "%{{buildroot}}{dest}"')
        prefix = ""
        if a.get("config"):
            prefix = "%config(noreplace) " if a["config"] == "noreplace" else "%config "
        if a.get("doc"):
            prefix += "%doc "
        files.append(f"{prefix}%attr({mode & 0o7777:04o},root,root) {dest}")
    return install, files


def render_spec():
    ver, rel = version()
    ws = workspace()
    plugin = package_meta(PLUGIN, "generate-rpm")
    with_module_requires = package_meta(PLUGIN, "generate-rpm", "with-module")["requires"]
    extra = [n for n in with_module_requires if n not in (plugin.get("requires") or {})]
    epoch = plugin.get("epoch")
    src = ["# Generated by ci/pkgmeta.py from plugin/Cargo.toml, netmodules-build/Cargo.toml,",
           "# rpm/ and deb/changelog: edit those, not this file.",
           "#",
           "# rpmbuild --rebuild calico-mesos-*.src.rpm builds the plugin package and,",
           "# where Mesos headers are installed (mesos-devel, or --define 'mesos_home DIR'",
           "# for a tree with DIR/include/mesos/version.hpp), the module package for",
           "# that Mesos: calico-mesos-netmodules (0.26) or -mesos025 (0.25, deprecated).",
           "# --without module builds the plugin package alone. Everything builds offline",
           "# from the vendored crates (Source1).",
           "%bcond_without module",
           "# No debuginfo subpackage (the binary is built without debug info) and",
           "# no /usr/lib/.build-id links: the file lists are the binary RPMs'.",
           "%global debug_package %{nil}",
           "%global _build_id_links none",
           "",
           f"Name: {plugin['name']}",
           f"Version: {ver}",
           f"Release: {rel}",
           ]
    if epoch is not None:
        src.append(f"Epoch: {epoch}")
    src += [
        f"Summary: {spec_quote(plugin['summary'])}",
        f"License: {ws['license']}",
        f"URL: {plugin.get('url', ws['repository'])}",
        f"Group: {plugin['group']}",
        f"Packager: {plugin['packager']}",
        "Source0: %{name}-%{version}.tar.gz",
        "# The crates of Cargo.lock (cargo vendor): the build never reaches a registry.",
        "Source1: %{name}-%{version}-vendor.tar.gz",
        "# ci/mesos-variant, for the spec's choice of module package.",
        "Source2: calico-mesos-mesos-variant",
        "# The module package follows the headers, read as netmodules-build reads them.",
        "%global mesos_variant %{?with_module:%(sh %{SOURCE2} %{?mesos_home} 2>/dev/null)}",
        f"BuildRequires: cargo >= {ws['rust-version']}",
        f"BuildRequires: rust >= {ws['rust-version']}",
        "BuildRequires: gcc",
        "BuildRequires: gcc-c++",
        "# etcd-client's build script runs protoc, which needs the well-known types.",
        "BuildRequires: protobuf-compiler",
        "BuildRequires: protobuf-devel",
        "BuildRequires: python3",
        "%if %{with module}",
        "%{!?mesos_home:BuildRequires: mesos-devel >= 0.25}",
        "%endif",
        # What cargo generate-rpm writes: no automatic dependencies.
        # Like cargo generate-rpm: requirements found in the binaries, no
        # provides of their own.
        "AutoProv: no",
    ]
    src += rpm_relations(plugin)
    src += ["%if \"%{?mesos_variant}\" != \"\""]
    src += [f"Requires: {n}" for n in extra]
    src += ["%endif", "", "%description", spec_quote(rpm_description(plugin)), ""]

    installs, files_sections, scripts = [], [], []
    for variant, meta, _ in rpm_packages():
        install, files = rpm_install_lines(meta)
        sub = "" if variant is None else f" -n {meta['name']}"
        body = []
        if variant is not None:
            body += [f"%if \"%{{?mesos_variant}}\" == \"{variant}\"",
                     f"%package -n {meta['name']}",
                     f"Summary: {spec_quote(meta['summary'])}",
                     # Its own epoch (cargo generate-rpm writes 0 where the
                     # metadata has none), not the plugin's.
                     f"Epoch: {meta.get('epoch', 0)}",
                     f"Group: {meta['group']}",
                     "AutoProv: no"]
            body += rpm_relations(meta)
            body += ["", f"%description -n {meta['name']}", spec_quote(rpm_description(meta)), "%endif", ""]
            src += body
        cond_open = [] if variant is None else [f"%if \"%{{?mesos_variant}}\" == \"{variant}\""]
        cond_close = [] if variant is None else ["%endif"]
        installs += cond_open + [spec_paths(l) for l in install] + cond_close
        files_sections += cond_open + [f"%files{sub}"] + [spec_paths(l) for l in files] + cond_close + [""]
        for key, section in RPM_SCRIPTS.items():
            if key in meta:
                text = (ROOT / meta[key]).read_text().rstrip("\n")
                scripts += cond_open + [f"%{section}{sub}", spec_paths(spec_quote(text))] + cond_close + [""]

    src += [
        "%prep",
        "%setup -q",
        "%setup -q -T -D -a 1",
        "",
        "%build",
        "# Cargo's home is in the build tree: no registry, no user configuration.",
        "export CARGO_HOME=$PWD/.cargo",
        "mkdir -p .cargo",
        "cat > .cargo/config.toml <<'CONFIG'",
        "[source.crates-io]",
        'replace-with = "vendored"',
        "[source.vendored]",
        'directory = "vendor"',
        "[net]",
        "offline = true",
        "CONFIG",
        "ci/stage plugin",
        "%if \"%{?mesos_variant}\" != \"\"",
        "variant=$(ci/stage module %{?mesos_home})",
        "if [ \"$variant\" != \"%{mesos_variant}\" ]; then",
        "    echo \"the module build found ${variant:-no Mesos headers}, the spec expected %{mesos_variant}\" >&2",
        "    exit 1",
        "fi",
        "%endif",
        "ci/stage configs",
        "",
        "%install",
        "export CALICO_MESOS_HOST=$(rustc -vV | sed -n 's/^host: //p')",
    ]
    src += installs
    src += [""]
    src += scripts
    src += files_sections
    src += ["%changelog", rpm_changelog(epoch)]
    return "\n".join(src).rstrip("\n") + "\n"


# ---------------------------------------------------------------- debian
def deb_assets(meta):
    """(source relative to the tree's root, destination, mode) per asset."""
    out = []
    for src, dest, mode in meta["assets"]:
        if src.startswith("target/release/"):
            src = "target/$(CALICO_MESOS_HOST)/release/" + src[len("target/release/") :]
        elif src.startswith("../"):
            src = src[3:]
        if dest.endswith("/"):
            dest += os.path.basename(src)
        out.append((src, dest, mode))
    return out


def render_debian(out):
    ver, rel = version()
    ws = workspace()
    debs = deb_packages()
    plugin = debs[0][1]
    out = pathlib.Path(out)
    (out / "source").mkdir(parents=True, exist_ok=True)
    (out / "source/format").write_text("3.0 (quilt)\n")
    # The changelog is deb/changelog itself.
    (out / "changelog").write_text((ROOT / "deb/changelog").read_text())
    (out / "copyright").write_text(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        f"Upstream-Name: calico-mesos\nSource: {ws['repository']}\n\n"
        f"Files: *\nCopyright: {plugin['copyright']}\nLicense: {ws['license']}\n"
        " On Debian systems, the full text of the Apache License 2.0 is in\n"
        " /usr/share/common-licenses/Apache-2.0.\n\n"
        "Files: vendor/*\nCopyright: the authors of each crate (see its Cargo.toml)\n"
        "License: various\n The licenses each crate's Cargo.toml names (cargo vendor).\n")

    control = [
        "Source: calico-mesos",
        f"Section: {plugin['section']}",
        f"Priority: {plugin['priority']}",
        f"Maintainer: {plugin['maintainer']}",
        "Build-Depends: debhelper-compat (= 13),",
        f" cargo (>= {ws['rust-version']}) | rustup,",
        " g++,",
        " protobuf-compiler,",
        " libprotobuf-dev,",
        " python3,",
        " mesos (>= 0.25) <!pkg.calico-mesos.nomodule>",
        "Standards-Version: 4.6.2",
        f"Homepage: {ws['repository']}",
        "Rules-Requires-Root: no",
        "",
    ]
    for crate, meta, variant in debs:
        depends = meta.get("depends", "$auto").replace("$auto", "${shlibs:Depends}")
        if variant is None:
            # debian/rules sets it when it builds a module package too.
            depends += ", ${calico:Module}"
        control += [f"Package: {meta['name']}", "Architecture: amd64",
                    f"Depends: {depends}, ${{misc:Depends}}"]
        for key in ("recommends", "suggests", "conflicts", "breaks", "replaces", "provides"):
            if key in meta:
                control.append(f"{key.capitalize()}: {meta[key]}")
        if variant is not None:
            control.append("Build-Profiles: <!pkg.calico-mesos.nomodule>")
        control.append(f"Description: {meta['description']}")
        for para in meta["extended-description"].split("\n\n"):
            words, line = para.split(), ""
            lines = []
            for w in words:
                # cargo deb's width, so that both descriptions read alike.
                if line and len(line) + 1 + len(w) > 80:
                    lines.append(line)
                    line = w
                else:
                    line = f"{line} {w}" if line else w
            lines.append(line)
            control += [" " + l for l in lines] + [" ."]
        control.pop()
        control.append("")
    (out / "control").write_text("\n".join(control))

    # Files, conffiles and maintainer scripts per binary package.
    install = []
    for crate, meta, variant in debs:
        name = meta["name"]
        cond = f"ifeq ($(MODULE_VARIANT),{variant})" if variant else None
        lines = [f"\tinstall -D -m {mode} {src} debian/{name}/{dest}" for src, dest, mode in deb_assets(meta)]
        if variant is None:
            # What ci/dist adds to the plugin package (cargo deb cannot ship a
            # directory).
            lines.append(f"\tinstall -d -m 0755 debian/{name}/var/log/calico")
        install += ([cond] if cond else []) + lines + (["endif"] if cond else [])
        # The scripts carry no #DEBHELPER#: they are the whole scripts, as
        # cargo deb ships them (dh adds nothing: see override_dh_installsystemd).
        scripts = ROOT / "deb" / pathlib.Path(meta["maintainer-scripts"]).name
        for s in DEB_SCRIPTS:
            if (scripts / s).exists():
                (out / f"{name}.{s}").write_text((scripts / s).read_text())
        # dh_installdeb makes every file under /etc a conffile: the metadata
        # must say the same.
        etc = {"/" + d for _, d, _ in deb_assets(meta) if d.startswith("etc/")}
        if set(meta.get("conf-files", [])) != etc:
            sys.exit(f"ci/pkgmeta.py: {name}: conf-files {sorted(meta.get('conf-files', []))} "
                     f"are not the files under /etc {sorted(etc)} (dh makes those conffiles)")

    rules = f"""#!/usr/bin/make -f
# Generated by ci/pkgmeta.py from plugin/Cargo.toml, netmodules-build/Cargo.toml
# and deb/: edit those, not this file.
#
# Builds offline from the vendored crates (the orig-vendor tarball). The
# module package follows the Mesos headers found (MESOS_HOME=DIR for a tree
# with DIR/include/mesos/version.hpp, else the installed mesos package's);
# the build profile pkg.calico-mesos.nomodule builds the plugin package alone.
export CARGO_HOME := $(CURDIR)/.cargo
export CALICO_MESOS_HOST := $(shell rustc -vV | sed -n 's/^host: //p')
ifneq ($(filter pkg.calico-mesos.nomodule,$(DEB_BUILD_PROFILES)),)
MODULE_VARIANT :=
else
MODULE_VARIANT := $(shell sh ci/mesos-variant $(MESOS_HOME))
endif
MODULE_PACKAGES := {' '.join(m['name'] for _, m, v in debs if v)}
BUILT_MODULE := $(if $(MODULE_VARIANT),calico-mesos-netmodules$(subst -mesos026,,-$(MODULE_VARIANT)))
NOT_BUILT := $(filter-out $(BUILT_MODULE),$(MODULE_PACKAGES))

%:
\tdh $@ $(addprefix -N,$(NOT_BUILT))

override_dh_auto_configure:
\tmkdir -p .cargo
\tprintf '[source.crates-io]\\nreplace-with = "vendored"\\n[source.vendored]\\ndirectory = "vendor"\\n[net]\\noffline = true\\n' > .cargo/config.toml

override_dh_auto_build:
\tci/stage plugin
ifneq ($(MODULE_VARIANT),)
\ttest "$$(ci/stage module $(MESOS_HOME))" = "$(MODULE_VARIANT)"
endif
\tci/stage configs

# With a module package in the same build, the plugin pulls one in (the
# with-module variant's depends).
override_dh_gencontrol:
\tdh_gencontrol -- $(if $(MODULE_VARIANT),-Vcalico:Module=calico-mesos-module)

# The tests need etcd and network namespaces (ci/test runs them).
override_dh_auto_test:

override_dh_auto_install:
{chr(10).join(install)}

override_dh_auto_clean:
\trm -rf target .cargo

# dh_clean deletes *.orig files: the vendored crates' Cargo.toml.orig are
# in their checksums.
override_dh_clean:
\tdh_clean -XCargo.toml.orig

# The maintainer scripts handle the units (deb/<package>/): calico-node is
# never enabled, started or restarted by the package.
override_dh_installsystemd:

# No -dbgsym packages: the binary is built without debug information.
override_dh_strip:
\tdh_strip --no-automatic-dbgsym

# The README stays uncompressed, as in the binary packages.
override_dh_compress:
\tdh_compress -X README.md
"""
    (out / "rules").write_text(rules)
    # Fixed modes, whatever the umask: the source package is reproducible.
    for path in [out, out / "source", *out.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() or path.name == "rules" else 0o644)


def main(argv):
    if len(argv) == 2 and argv[1] == "version":
        ver, rel = version()
        print(f"{ver}-{rel}")
    elif len(argv) == 3 and argv[1] == "spec":
        pathlib.Path(argv[2]).write_text(render_spec())
    elif len(argv) == 3 and argv[1] == "debian":
        render_debian(argv[2])
    else:
        print("usage: ci/pkgmeta.py spec FILE | debian DIR | version", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
