// The test suites beside client_test.cpp, run by its main().
#ifndef CALICO_MESOS_TESTS_SUITES_HPP
#define CALICO_MESOS_TESTS_SUITES_HPP

#include <string>

void isolator_logic_tests();
// `self`: this test binary, run again with --sigpipe-storm.
void subprocess_tests(const std::string& self);
void sigpipe_storm_main();
void config_tests();

#endif
