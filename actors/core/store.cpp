#include "actors/core/store.hpp"

#include "persistence/logs.hpp"
#include "runtime/ground/logging.hpp"

namespace troupe {

namespace {

write_result apply_batch(persistence::txn& t, const write_batch& ops) {
  write_result result;
  for (auto& op : ops) {
    switch (op.kind) {
    case write_op::put:
      t.put(op.table, op.key, op.value);
      break;
    case write_op::erase:
      t.erase(op.table, op.key);
      break;
    case write_op::erase_range:
      t.erase_range(op.table, op.key, op.value);
      break;
    case write_op::append:
      result.appended.push_back(t.append(op.table, op.value));
      break;
    case write_op::log_append: {
      auto [first, count] = persistence::append_log_op(t, op.key, op.value);
      result.appended.push_back(first);
      result.appended.push_back(count);
      break;
    }
    default:
      throw std::invalid_argument("unknown write op kind " + std::to_string(op.kind));
    }
  }
  return result;
}

caf::error to_error(const std::exception& e) {
  if (dynamic_cast<const std::invalid_argument*>(&e))
    return caf::make_error(ec::invalid_argument, std::string{e.what()});
  return caf::make_error(ec::store_failure, std::string{e.what()});
}

void commit_queue(store_actor::stateful_pointer<store_state> self) {
  auto& st = self->state;
  st.commit_scheduled = false;
  auto queue = std::move(st.queue);
  st.queue.clear();
  if (!queue.empty()) {
    std::vector<write_result> results;
    results.reserve(queue.size());
    try {
      persistence::txn t{*st.env, false};
      for (auto& w : queue)
        results.push_back(apply_batch(t, w.ops));
      t.commit();
      ++st.commits;
      st.batches += queue.size();
      for (size_t i = 0; i < queue.size(); ++i)
        queue[i].promise.deliver(std::move(results[i]));
    } catch (const std::exception& e) {
      // One bad batch must not fail its neighbours: commit each alone.
      logging::get("store")->warn("group commit of {} batches failed ({}); retrying one by one",
                                  queue.size(), e.what());
      for (auto& w : queue) {
        try {
          persistence::txn t{*st.env, false};
          auto r = apply_batch(t, w.ops);
          t.commit();
          ++st.commits;
          ++st.batches;
          w.promise.deliver(std::move(r));
        } catch (const std::exception& e2) {
          logging::get("store")->error("write batch rejected: {}", e2.what());
          w.promise.deliver(to_error(e2));
        }
      }
    }
  }
  for (auto& rp : st.flush_waiters)
    rp.deliver(ok_atom::value);
  st.flush_waiters.clear();
}

void schedule_commit(store_actor::stateful_pointer<store_state> self) {
  if (!self->state.commit_scheduled) {
    self->state.commit_scheduled = true;
    self->send(self, commit_atom::value);
  }
}

} // namespace

store_actor::behavior_type store(store_actor::stateful_pointer<store_state> self,
                                 std::shared_ptr<persistence::lmdb_env> env) {
  self->state.env = std::move(env);
  // Writes accepted before a (non-kill) exit are committed, never dropped.
  self->set_exit_handler([self](caf::exit_msg& msg) {
    commit_queue(self);
    self->quit(std::move(msg.reason));
  });
  return {
      [self](write_atom, write_batch& ops) -> caf::result<write_result> {
        auto rp = self->make_response_promise<write_result>();
        self->state.queue.push_back({std::move(ops), rp});
        schedule_commit(self);
        return rp;
      },
      [self](flush_atom) -> caf::result<ok_atom> {
        if (self->state.queue.empty() && !self->state.commit_scheduled)
          return ok_atom::value;
        auto rp = self->make_response_promise<ok_atom>();
        self->state.flush_waiters.push_back(rp);
        schedule_commit(self);
        return rp;
      },
      [self](shutdown_atom) -> ok_atom {
        commit_queue(self);
        return ok_atom::value;
      },
      [self](commit_atom) { commit_queue(self); },
      [self](status_atom) {
        auto& st = self->state;
        component_status x{store_state::name, true, {}};
        caf::put(x.fields, "commits", st.commits);
        caf::put(x.fields, "batches", st.batches);
        caf::put(x.fields, "queued", st.queue.size());
        return x;
      },
  };
}

} // namespace troupe
