// The registry of live map values and local objects (checked builds), so that a
// kptr slot can be validated without dereferencing it.
#include <cstdint>
#include <map>
#include <string>

#include <fmt/format.h>

#include <tasklife/map.hpp>

namespace tasklife::detail {
namespace {

struct region {
  std::size_t size;
  std::string what;
};

shared_mutex g_mutex;
std::map<std::uintptr_t, region> g_regions TASKLIFE_GUARDED_BY(g_mutex);  // by start address

}  // namespace

void register_kptr_region(const void* begin, std::size_t size, std::string_view what) {
  const lock_guard lock(g_mutex);
  g_regions.insert_or_assign(reinterpret_cast<std::uintptr_t>(begin),
                             region{size, std::string(what)});
}

void unregister_kptr_region(const void* begin) noexcept {
  const lock_guard lock(g_mutex);
  g_regions.erase(reinterpret_cast<std::uintptr_t>(begin));
}

bool kptr_region_contains(const void* p, std::size_t size) noexcept {
  const auto addr = reinterpret_cast<std::uintptr_t>(p);
  const shared_lock lock(g_mutex);
  auto it = g_regions.upper_bound(addr);
  if (it == g_regions.begin()) {
    return false;
  }
  --it;
  return addr >= it->first && addr + size <= it->first + it->second.size;
}

bool check_kptr_slot(const void* slot, std::size_t size, std::string_view op,
                     std::source_location where) {
  if (slot == nullptr) {
    report_contract_violation(contract_kind::null_argument, "map", op, {},
                              fmt::format("{}(): NULL kptr slot", op), where);
    return false;
  }
  if (!kptr_region_contains(slot, size)) {
    diagnostic_object o;
    o.address = slot;
    report_contract_violation(
        contract_kind::foreign_object, "map", op, std::move(o),
        fmt::format("{}(): {} is not a kptr field of a live map value or local object (a slot of "
                    "a destroyed map, a dropped object, or not a slot at all)",
                    op, slot),
        where);
    return false;
  }
  return true;
}

bool check_local_object(const void* obj, std::string_view op, std::source_location where) {
  {
    const shared_lock lock(g_mutex);
    const auto it = g_regions.find(reinterpret_cast<std::uintptr_t>(obj));
    if (it != g_regions.end() && it->second.what == "local object") {
      return true;
    }
  }
  diagnostic_object o;
  o.address = obj;
  report_contract_violation(
      contract_kind::foreign_object, "map", op, std::move(o),
      fmt::format("{}(): {} is not a live object from bpf_obj_new (a map value, a pointer into "
                  "an object, or an object already dropped)",
                  op, obj),
      where);
  return false;
}

void report_map_misuse(contract_kind kind, std::string_view map, std::string_view op,
                       std::string message, std::source_location where) {
  diagnostic_object o;
  o.map = std::string(map);
  report_contract_violation(kind, "map", op, std::move(o),
                            fmt::format("map '{}': {}", map, message), where);
}

}  // namespace tasklife::detail
