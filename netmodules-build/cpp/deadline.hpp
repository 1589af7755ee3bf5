// One time limit for a whole isolator call: every plugin run of a prepare
// (reserve, allocate, the rollback release) shares it, so the agent hears
// back within command_timeout however many runs the call needs.
#ifndef CALICO_MESOS_DEADLINE_HPP
#define CALICO_MESOS_DEADLINE_HPP

namespace calico_mesos {

// Milliseconds of a clock that never jumps.
long long monotonic_ms();

class Deadline {
public:
  // `budget_ms` from now.
  explicit Deadline(int budget_ms);
  int budget_ms() const { return budget_ms_; }
  // What is left, 0 once passed.
  int remaining_ms() const;

private:
  long long at_ms_;
  int budget_ms_;
};

}  // namespace calico_mesos

#endif
