// The test suites beside client_test.cpp, run by its main().
#ifndef CALICO_MESOS_TESTS_SUITES_HPP
#define CALICO_MESOS_TESTS_SUITES_HPP

#include <string>

void isolator_logic_tests();
// `self`: this test binary, run again with --sigpipe-storm.
void subprocess_tests(const std::string& self);
void sigpipe_storm_main();
// Run as "status-probe" (a symlink to the test binary) by subprocess_tests.
void status_probe_main();
void workers_tests(const std::string& self);
int workers_without_threads_main();
void store_tests();
void config_tests();

#endif
