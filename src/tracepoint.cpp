// Tracepoints (tracepoint.hpp): copy-on-write probe lists.
#include <tasklife/tracepoint.hpp>

namespace tasklife {

std::uint64_t tracepoint::attach(probe p) {
  const detail::lock_guard lock(mutex_);
  auto next = probes_ ? std::make_shared<std::vector<entry>>(*probes_)
                      : std::make_shared<std::vector<entry>>();
  const std::uint64_t id = next_id_++;
  next->push_back(entry{id, std::move(p)});
  probes_ = std::move(next);
  enabled_.store(true, std::memory_order_release);  // pairs with enabled()
  return id;
}

bool tracepoint::detach(std::uint64_t id) {
  const detail::lock_guard lock(mutex_);
  if (!probes_) {
    return false;
  }
  auto next = std::make_shared<std::vector<entry>>(*probes_);
  const auto old_size = next->size();
  std::erase_if(*next, [id](const entry& e) { return e.id == id; });
  const bool removed = next->size() != old_size;
  enabled_.store(!next->empty(), std::memory_order_release);  // pairs with enabled()
  probes_ = std::move(next);
  return removed;
}

void tracepoint::fire_slow(task_struct* t) const {
  std::shared_ptr<const std::vector<entry>> probes;
  {
    const detail::lock_guard lock(mutex_);
    probes = probes_;
  }
  if (probes) {
    for (const entry& e : *probes) {
      e.fn(t);
    }
  }
}

}  // namespace tasklife
