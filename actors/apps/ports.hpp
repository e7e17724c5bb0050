#pragma once

// The ports app instances listen on: one per instance port, from
// `apps.port_range`, never one that something else already holds on loopback.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/ground/config.hpp"

namespace troupe {

/// No free port is left in the range; the message names the range and why.
class port_exhausted : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// True if a TCP socket can bind 127.0.0.1:`port` right now (SO_REUSEADDR, so
/// a port in TIME_WAIT counts as free; a listener on 0.0.0.0 or 127.0.0.1 does
/// not).
bool bindable_on_loopback(uint16_t port);

/// Hands out ports of a range, next-fit (a released port is reused last, so a
/// stale route or a lingering client does not meet a new instance at once).
/// Not thread-safe: one owner (the node's app manager) allocates for all apps.
class port_allocator {
public:
  /// `is_free` checks the host (bindable_on_loopback; tests substitute it).
  explicit port_allocator(port_range range,
                          std::function<bool(uint16_t)> is_free = bindable_on_loopback);

  /// One port per entry; all or none. Throws port_exhausted.
  std::vector<uint16_t> allocate(size_t count);

  /// One free port. Throws port_exhausted.
  uint16_t allocate_one();

  /// Marks ports of an adopted instance (found running after a restart) as
  /// held; false for a port outside the range or held already.
  bool reserve(uint16_t port);

  /// Gives ports back (unknown ones are ignored).
  void release(const std::vector<uint16_t>& ports);
  void release(uint16_t port);

  /// Ports held by troupe.
  size_t held() const { return held_.size(); }
  bool holds(uint16_t port) const { return held_.count(port) != 0; }
  port_range range() const { return range_; }

private:
  port_range range_;
  std::function<bool(uint16_t)> is_free_;
  std::set<uint16_t> held_;
  /// Where the next search starts.
  uint32_t next_;
};

} // namespace troupe
