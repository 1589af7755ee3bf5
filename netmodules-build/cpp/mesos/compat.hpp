// Everything that differs between the Mesos versions we build for, in one
// place. NETMODULES_MESOS_MINOR comes from build.rs, which read it from the
// installed mesos/version.hpp; the static_assert checks the two agree.
#ifndef CALICO_MESOS_COMPAT_HPP
#define CALICO_MESOS_COMPAT_HPP

#include <string>
#include <vector>

#include <mesos/mesos.hpp>
#include <mesos/version.hpp>

#include "../isolator_logic.hpp"

#ifndef NETMODULES_MESOS_MINOR
#error "NETMODULES_MESOS_MINOR must be set by the build (netmodules-build/build.rs)"
#endif

namespace calico_mesos {
namespace compat {

constexpr int digits(const char* s, int acc) {
  return (*s >= '0' && *s <= '9') ? digits(s + 1, acc * 10 + (*s - '0')) : acc;
}
constexpr int minor_of(const char* s) { return *s == '.' ? digits(s + 1, 0) : minor_of(s + 1); }
static_assert(minor_of(MESOS_VERSION) == NETMODULES_MESOS_MINOR,
              "mesos/version.hpp does not match the version build.rs detected");

inline void add_request(Requested* r, bool v6, bool has_address, const std::string& address) {
  if (has_address) {
    (v6 ? r->ipv6 : r->ipv4).push_back(address);
  } else {
    ++(v6 ? r->any_ipv6 : r->any_ipv4);
  }
}

inline Requested requested(const mesos::NetworkInfo& info) {
  Requested r;
#if NETMODULES_MESOS_MINOR >= 26
  // 0.26: one entry per address; the single-address fields are deprecated
  // but still honoured when no entries are given.
  for (int i = 0; i < info.ip_addresses_size(); ++i) {
    const mesos::NetworkInfo::IPAddress& a = info.ip_addresses(i);
    add_request(&r, a.protocol() == mesos::NetworkInfo::IPv6, a.has_ip_address(), a.ip_address());
  }
  if (info.ip_addresses_size() > 0) return r;
#endif
  add_request(&r, info.protocol() == mesos::NetworkInfo::IPv6, info.has_ip_address(),
              info.ip_address());
  return r;
}

// Copies what the status hook reports into a TaskStatus's NetworkInfo:
// network_report() decided what; this only knows where the fields are.
inline void report(mesos::NetworkInfo* info, const NetworkReport& r) {
#if NETMODULES_MESOS_MINOR >= 26
  for (size_t i = 0; i < r.ip_addresses.size(); ++i) {
    mesos::NetworkInfo::IPAddress* a = info->add_ip_addresses();
    a->set_protocol(r.ip_addresses[i].ipv6 ? mesos::NetworkInfo::IPv6 : mesos::NetworkInfo::IPv4);
    a->set_ip_address(r.ip_addresses[i].ip);
  }
#endif
  if (r.has_ip_address) {
    info->set_protocol(r.ip_address.ipv6 ? mesos::NetworkInfo::IPv6 : mesos::NetworkInfo::IPv4);
    info->set_ip_address(r.ip_address.ip);
  }
  for (size_t i = 0; i < r.groups.size(); ++i) info->add_groups(r.groups[i]);
}

}  // namespace compat
}  // namespace calico_mesos

#endif
