#include "workers.hpp"

#include <exception>

namespace calico_mesos {

namespace {

void finish(const Done& done, const std::string& error) {
  try {
    done(error);
  } catch (...) {
    // Nobody is left to tell; the thread (and the agent) carry on.
  }
}

}  // namespace

Workers::Workers(size_t max_threads)
    : max_threads_(max_threads > 0 ? max_threads : 1), idle_(0), stopping_(false) {
  // push_back never reallocates then: a std::thread dropped while joinable
  // would terminate the process.
  threads_.reserve(max_threads_);
}

Workers::~Workers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (size_t i = 0; i < threads_.size(); ++i) threads_[i].join();
}

void Workers::submit(const Job& job, const Done& done) {
  std::string error;
  try {
    std::unique_lock<std::mutex> lock(mutex_);
    queue_.push_back(std::make_pair(job, done));
    if (queue_.size() > idle_ && threads_.size() < max_threads_) {
      try {
        threads_.push_back(std::thread(&Workers::run, this));
      } catch (const std::exception& e) {
        // With a thread running, the job waits for it; else it fails now.
        if (threads_.empty()) {
          queue_.pop_back();
          error = std::string("calico-mesos cannot start a worker thread: ") + e.what();
        }
      }
    }
  } catch (const std::exception& e) {
    error = std::string("calico-mesos cannot queue the call: ") + e.what();
  } catch (...) {
    error = "calico-mesos cannot queue the call";
  }
  if (error.empty()) {
    wake_.notify_one();
  } else {
    finish(done, error);
  }
}

void Workers::run() {
  for (;;) {
    std::pair<Job, Done> work;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      ++idle_;
      wake_.wait(lock, [this]() { return stopping_ || !queue_.empty(); });
      --idle_;
      if (queue_.empty()) return;  // stopping, nothing left
      work = std::move(queue_.front());
      queue_.pop_front();
    }
    std::string error;
    try {
      error = work.first();
    } catch (const std::exception& e) {
      error = std::string("calico-mesos internal error: ") + e.what();
    } catch (...) {
      error = "calico-mesos internal error: unknown exception";
    }
    finish(work.second, error);
  }
}

}  // namespace calico_mesos
