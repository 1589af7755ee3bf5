// The little the C++ test files share: checks that count, a scratch
// directory, and fake plugins written as /bin/sh scripts.
#ifndef CALICO_MESOS_TESTS_HARNESS_HPP
#define CALICO_MESOS_TESTS_HARNESS_HPP

#include <string>

namespace harness {

// The scratch directory given on the command line.
extern std::string dir;

void check(bool ok, const std::string& name, const std::string& detail);
int passed();
int failed();

bool contains(const std::string& s, const std::string& part);

// Writes an executable /bin/sh script under `dir` and returns its path.
std::string script(const std::string& name, const std::string& body);

// The whole file, "" when it cannot be read.
std::string read_file(const std::string& path);

}  // namespace harness

#endif
