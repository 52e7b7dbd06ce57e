// Device discovery through libdaxctl (devdax) and libndctl (fsdax and raw pmem
// namespaces). Both libraries scan sysfs; on a machine without NVDIMMs they
// find nothing, which is an empty list, not an error.
#include "daxalloc/devices.hpp"

#include <daxctl/libdaxctl.h>
#include <ndctl/libndctl.h>
#include <syslog.h>

#include <memory>

namespace daxalloc {
namespace {

void list_devdax(std::vector<dax_device>& out) {
  daxctl_ctx* raw = nullptr;
  if (daxctl_new(&raw) != 0 || raw == nullptr) return;
  std::unique_ptr<daxctl_ctx, decltype(&daxctl_unref)> ctx(raw, &daxctl_unref);
  daxctl_set_log_priority(ctx.get(), LOG_CRIT);
  daxctl_region* region = nullptr;
  daxctl_region_foreach(ctx.get(), region) {
    daxctl_dev* dev = nullptr;
    daxctl_dev_foreach(region, dev) {
      if (daxctl_dev_get_size(dev) == 0) continue;  // the unconfigured seed device
      dax_device d;
      d.name = daxctl_dev_get_devname(dev);
      d.path = "/dev/" + d.name;
      d.mode = "devdax";
      d.size = daxctl_dev_get_size(dev);
      d.align = daxctl_dev_get_align(dev);
      if (d.align == 0) d.align = daxctl_region_get_align(region);
      d.numa_node = daxctl_dev_get_target_node(dev);
      d.region_id = daxctl_region_get_id(region);
      out.push_back(std::move(d));
    }
  }
}

void list_pmem_namespaces(std::vector<dax_device>& out) {
  ndctl_ctx* raw = nullptr;
  if (ndctl_new(&raw) != 0 || raw == nullptr) return;
  std::unique_ptr<ndctl_ctx, decltype(&ndctl_unref)> ctx(raw, &ndctl_unref);
  ndctl_set_log_priority(ctx.get(), LOG_CRIT);
  ndctl_bus* bus = nullptr;
  ndctl_bus_foreach(ctx.get(), bus) {
    ndctl_region* region = nullptr;
    ndctl_region_foreach(bus, region) {
      ndctl_namespace* ns = nullptr;
      ndctl_namespace_foreach(region, ns) {
        if (!ndctl_namespace_is_active(ns)) continue;
        dax_device d;
        const char* block = nullptr;
        switch (ndctl_namespace_get_mode(ns)) {
          case NDCTL_NS_MODE_FSDAX:
            if (ndctl_pfn* pfn = ndctl_namespace_get_pfn(ns)) {
              block = ndctl_pfn_get_block_device(pfn);
              d.size = ndctl_pfn_get_size(pfn);
            }
            if (block == nullptr ||
                *block == '\0') {  // a legacy (memmap=) region: map=mem, no pfn device
              block = ndctl_namespace_get_block_device(ns);
              d.size = ndctl_namespace_get_size(ns);
            }
            d.mode = "fsdax";
            break;
          case NDCTL_NS_MODE_RAW:
            block = ndctl_namespace_get_block_device(ns);
            d.size = ndctl_namespace_get_size(ns);
            d.mode = "raw";
            break;
          default:
            continue;  // devdax is listed through libdaxctl; sector mode has no DAX
        }
        if (block == nullptr || *block == '\0') continue;
        d.name = block;
        d.path = "/dev/" + d.name;
        d.numa_node = ndctl_namespace_get_numa_node(ns);
        d.region_id = static_cast<int>(ndctl_region_get_id(region));
        out.push_back(std::move(d));
      }
    }
  }
}

}  // namespace

std::vector<dax_device> list_devices() {
  std::vector<dax_device> devices;
  list_devdax(devices);
  list_pmem_namespaces(devices);
  return devices;
}

}  // namespace daxalloc
