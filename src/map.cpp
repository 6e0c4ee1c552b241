// The registry of live map values and local objects (checked builds), so that a
// kptr slot can be validated without dereferencing it.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <tasklife/map.hpp>

namespace tasklife::detail {
namespace {

struct region {
  std::size_t size;
  std::string what;
  std::size_t stride;                   // one value's size
  std::vector<kptr_field_info> fields;  // its kptr fields
};

shared_mutex g_mutex;
std::map<std::uintptr_t, region> g_regions TASKLIFE_GUARDED_BY(g_mutex);  // by start address

}  // namespace

void register_kptr_region(const void* begin, std::size_t size, std::string_view what,
                          std::size_t stride, const kptr_field_info* fields, std::size_t nfields) {
  region r{size, std::string(what), stride == 0 ? 1 : stride,
           std::vector<kptr_field_info>(fields, fields + nfields)};
  const lock_guard lock(g_mutex);
  g_regions.insert_or_assign(reinterpret_cast<std::uintptr_t>(begin), std::move(r));
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

bool kptr_slot_valid(const void* slot, const void* type) noexcept {
  const auto addr = reinterpret_cast<std::uintptr_t>(slot);
  const shared_lock lock(g_mutex);
  auto it = g_regions.upper_bound(addr);
  if (it == g_regions.begin()) {
    return false;
  }
  --it;
  const region& r = it->second;
  if (addr < it->first || addr + sizeof(void*) > it->first + r.size) {
    return false;
  }
  const std::size_t offset = (addr - it->first) % r.stride;
  return std::any_of(r.fields.begin(), r.fields.end(), [&](const kptr_field_info& f) {
    // Tags are type names (kptr_tag): equal by content across shared objects.
    return f.offset == offset && f.type != nullptr && type != nullptr &&
           std::strcmp(static_cast<const char*>(f.type), static_cast<const char*>(type)) == 0;
  });
}

bool check_kptr_slot(const void* slot, const void* type, std::string_view op,
                     std::source_location where) {
  if (slot == nullptr) {
    report_contract_violation(contract_kind::null_argument, "map", op, {},
                              fmt::format("{}(): NULL kptr slot", op), where);
    return false;
  }
  if (!kptr_slot_valid(slot, type)) {
    diagnostic_object o;
    o.address = slot;
    const bool inside = kptr_region_contains(slot, sizeof(void*));
    report_contract_violation(
        contract_kind::foreign_object, "map", op, std::move(o),
        inside ? fmt::format("{}(): {} is not a kptr field of a live map value or local object: "
                             "it lies inside a value, but at no kptr field of this type (the "
                             "verifier: \"off=N doesn't point to kptr\")",
                             op, slot)
               : fmt::format("{}(): {} is not a kptr field of a live map value or local object "
                             "(a slot of a destroyed map, a dropped object, or not a slot at all)",
                             op, slot),
        where);
    return false;
  }
  return true;
}

std::uint32_t checked_max_entries(const kernel& k, std::string_view map, std::uint32_t max_entries,
                                  std::size_t bytes, std::source_location where) {
  if (max_entries == 0) {
    diagnostic_object o;
    o.kernel = k.name();
    o.map = std::string(map);
    report_contract_violation(
        contract_kind::invalid_argument, "map", "map_create", std::move(o),
        fmt::format("map '{}': max_entries = 0 (the kernel's map_create fails with -EINVAL); "
                    "the map is refused: it has no entries",
                    map),
        where);
    return 0;
  }
  if (bytes == 0 || bytes > map_memory_limit) {
    diagnostic_object o;
    o.kernel = k.name();
    o.map = std::string(map);
    report_contract_violation(
        contract_kind::limit_exceeded, "map", "map_create", std::move(o),
        fmt::format(
            "map '{}': max_entries = {} needs {} at creation, past tasklife's limit of {} "
            "bytes (the kernel's htab_map_alloc fails with -E2BIG past U32_MAX bytes of "
            "buckets); the map is refused: it has no entries",
            map, max_entries,
            bytes == 0 ? std::string("more than SIZE_MAX bytes") : fmt::format("{} bytes", bytes),
            map_memory_limit),
        where);
    return 0;
  }
  return max_entries;
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

void report_map_op_misuse(contract_kind kind, std::string_view map, std::string_view op,
                          std::string_view rest, std::source_location where) {
  report_map_misuse(kind, map, op, fmt::format("{}{}", op, rest), where);
}

void report_map_misuse(contract_kind kind, std::string_view map, std::string_view op,
                       std::string message, std::source_location where) {
  diagnostic_object o;
  o.map = std::string(map);
  report_contract_violation(kind, "map", op, std::move(o),
                            fmt::format("map '{}': {}", map, message), where);
}

}  // namespace tasklife::detail
