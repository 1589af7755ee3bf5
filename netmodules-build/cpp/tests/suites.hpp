// The test suites beside client_test.cpp, run by its main().
#ifndef CALICO_MESOS_TESTS_SUITES_HPP
#define CALICO_MESOS_TESTS_SUITES_HPP

void isolator_logic_tests();
void config_tests();

#endif
