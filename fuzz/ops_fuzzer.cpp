// Harness `ops`: the heap's API against a reference model.
//
// The input decodes into up to max_ops_calls calls (fuzz/formats.hpp):
// allocate 1 B .. 8 MiB, deallocate a live object, double frees and interior
// or foreign pointers, reserve and cancel, the root object, allocate_publish
// and free_clear into the root's pptr slots, hot-add and hot-remove of
// 2 MiB-aligned (or deliberately misaligned) spans, close and reopen, and
// check(). Every call starts from a fresh 16 MiB heap (2 GiB range) and is
// checked by fuzz/api_driver.cpp; at the end the heap is audited, closed,
// reopened and audited again.
#include <optional>

#include "api_driver.hpp"

namespace {

using namespace fuzz;

void run(const std::uint8_t* data, std::size_t size) {
  static const auto path = scratch_file("ops");
  pristine_heap_image().write(path);
  std::optional<daxalloc::heap> h;
  daxalloc::heap_open_options o;
  o.mode = daxalloc::persistence_mode::none;
  try {
    h.emplace(daxalloc::heap::open(path, o));
  } catch (const std::exception& e) {
    finding(std::string("cannot open the pristine heap: ") + e.what());
  }
  api_driver driver(h, path, driver_options{});
  fuzz_input in(data, size);
  for (unsigned i = 0; i < max_ops_calls && !in.empty(); ++i) driver.run(decode_call(in));
  driver.audit("the last call");
  driver.run(call{call_kind::reopen});
  h.reset();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  run(data, size);
  return 0;
}
