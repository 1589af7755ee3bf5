#include "deadline.hpp"

#include <time.h>

namespace calico_mesos {

long long monotonic_ms() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<long long>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

Deadline::Deadline(int budget_ms) : at_ms_(monotonic_ms() + budget_ms), budget_ms_(budget_ms) {}

int Deadline::remaining_ms() const {
  long long left = at_ms_ - monotonic_ms();
  return left > 0 ? static_cast<int>(left) : 0;
}

}  // namespace calico_mesos
