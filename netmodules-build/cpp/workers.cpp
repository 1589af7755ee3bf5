#include "workers.hpp"

#include <thread>

namespace calico_mesos {

void Workers::submit(const Job& job, const Done& done) {
  std::thread([job, done]() { done(job()); }).detach();
}

}  // namespace calico_mesos
