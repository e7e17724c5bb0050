#pragma once

// What the job controller's files share (job_controller.cpp wires the
// behaviour; job_queue, job_recovery, job_retention and job_gauges are its
// parts). Internal to the controller: nothing else includes this.

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>
#include <spdlog/logger.h>

#include "actors/jobs/job_controller.hpp"

namespace troupe::job_control {

using self_ptr = job_controller_actor::stateful_pointer<job_controller_state>;

inline constexpr auto store_timeout = std::chrono::seconds(30);
/// A /proc scan or a tree deletion that takes longer is given up on.
inline constexpr auto janitor_timeout = std::chrono::seconds(120);

/// The controller's logger ("jobs").
std::shared_ptr<spdlog::logger> log();

/// Writes `batch`; a store that is away fails the write at once (the
/// controller's callers answer or retry on their own schedule).
void persist(self_ptr self, write_batch batch, std::function<void()> then,
             std::function<void(caf::error&)> failed);

/// The write that stores `r` in the jobs table.
write_op record_op(const persistence::job_record& r);

/// Announces a job transition (already committed) with the current counts.
void publish(self_ptr self, const std::string& type, const std::string& id,
             nlohmann::json extra = nlohmann::json::object());

} // namespace troupe::job_control
