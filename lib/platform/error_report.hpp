// How the non-throwing (std::error_code) forms of the public calls report an
// error: the code into the caller's error_code, the full message into
// last_error_message().
#pragma once

#include <new>
#include <string>
#include <system_error>
#include <type_traits>

#include "daxalloc/error.hpp"

namespace daxalloc::detail {

void report_error(std::error_code& ec, const std::error_code& code, const char* message) noexcept;

inline void report_error(std::error_code& ec, errc code, const std::string& message) noexcept {
  report_error(ec, make_error_code(code), message.c_str());
}

// Runs f and returns what it returns; an exception of the library (any
// std::system_error: daxalloc::error, std::filesystem::filesystem_error) or
// std::bad_alloc becomes `ec` and a value-initialised result. Anything else
// (a caller's constructor throwing something of its own) is not ours to
// translate, and the noexcept of the callers turns it into std::terminate.
template <class F>
auto into_error_code(std::error_code& ec, F&& f) noexcept -> decltype(f()) {
  using result = decltype(f());
  ec.clear();
  try {
    return f();
  } catch (const std::system_error& e) {
    report_error(ec, e.code(), e.what());
  } catch (const std::bad_alloc& e) {
    report_error(ec, std::make_error_code(std::errc::not_enough_memory), e.what());
  }
  if constexpr (!std::is_void_v<result>) return result();
}

}  // namespace daxalloc::detail
