// A mutex for the allocator's short critical sections (a slab class, the page
// allocator): glibc's adaptive mutex, which spins for a while before it
// sleeps. With two threads taking the same lock every few operations, a
// plain std::mutex puts the waiter to sleep and wakes it with two system
// calls per hand-over, which costs more than the critical section itself.
#pragma once

#include <pthread.h>

namespace daxalloc::detail {

class spin_mutex {
 public:
  spin_mutex() = default;
  spin_mutex(const spin_mutex&) = delete;
  spin_mutex& operator=(const spin_mutex&) = delete;
  ~spin_mutex() { pthread_mutex_destroy(&m_); }

  void lock() noexcept { pthread_mutex_lock(&m_); }
  bool try_lock() noexcept { return pthread_mutex_trylock(&m_) == 0; }
  void unlock() noexcept { pthread_mutex_unlock(&m_); }

 private:
  pthread_mutex_t m_ = PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP;
};

}  // namespace daxalloc::detail
