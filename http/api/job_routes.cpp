#include "http/api/job_routes.hpp"

#include <filesystem>

#include <caf/actor_system.hpp>
#include <caf/blocking_actor.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <nlohmann/json.hpp>

#include "actors/core/names.hpp"
#include "actors/jobs/archive.hpp"
#include "actors/jobs/job_spec.hpp"
#include "actors/jobs/job_stream.hpp"
#include "actors/jobs/log_download.hpp"
#include "http/api/ask.hpp"
#include "http/api/job_json.hpp"
#include "http/api/job_submit.hpp"
#include "http/api/page.hpp"
#include "http/api/query_params.hpp"
#include "http/multipart.hpp"
#include "persistence/jobs.hpp"
#include "persistence/lmdb_env.hpp"
#include "persistence/logs.hpp"
#include "runtime/ground/clock.hpp"
#include "runtime/ground/logging.hpp"

namespace troupe {

using nlohmann::json;
namespace js = persistence::job_status;

namespace {

/// The job controller, as the job routes ask it: a failed request is a 500.
const callee<job_controller_actor> controller{names::jobs, "the job controller is not running",
                                              std::chrono::seconds(60)};

/// Which endpoint a submission came through.
enum class submit_mode { jobs, sse, sse_with_id, async };

/// A submission parsed from the request, before anything is stored.
struct submission {
  job_spec spec;
  /// The archive part (empty: none), a view into the body.
  std::string_view archive;
  /// Keeps the body `archive` points into alive: the request, or the mapped
  /// upload file.
  std::shared_ptr<const void> body_owner;
};

std::string media_type(const http::request& req) {
  auto ct = req.header("content-type");
  auto semi = ct.find(';');
  auto t = ct.substr(0, semi);
  while (!t.empty() && t.back() == ' ')
    t.pop_back();
  for (auto& c : t)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return t;
}

job_spec parse_spec_text(std::string_view text, bool yaml,
                         const std::optional<std::string>& default_command) {
  std::string copy{text};
  return yaml ? parse_job_spec_yaml(copy, default_command)
              : parse_job_spec_json(copy, default_command);
}

/// Reads the parts of a multipart submission into `out`; replies and
/// returns false when they do not make a submission.
bool parse_form(const node_context& ctx, const http::exchange_ptr& ex, submit_mode mode,
                std::string_view body, std::optional<std::string> default_command,
                submission& out) {
  auto parts = http::parse_multipart(ex->req().header("content-type"), body);
  auto file = http::find_part(parts, "file");
  auto spec = http::find_part(parts, "spec");
  if (file == nullptr && mode != submit_mode::jobs) {
    ex->reply(http::response::error(400, "invalid_request",
                                    "a multipart field named file (the project archive) "
                                    "is required",
                                    "file"));
    return false;
  }
  if (file != nullptr) {
    out.archive = file->data;
    default_command = ctx.cfg->jobs.default_command;
  }
  if (spec != nullptr) {
    auto trimmed = spec->data.find_first_not_of(" \t\r\n");
    bool yaml = submission_format(spec->content_type) == body_format::yaml ||
                (trimmed != std::string_view::npos && spec->data[trimmed] != '{');
    out.spec = parse_spec_text(spec->data, yaml, default_command);
  } else if (default_command) {
    out.spec = parse_job_spec_json("{}", default_command);
  } else {
    ex->reply(http::response::error(400, "invalid_request",
                                    "multipart submissions need a file or a spec field", "spec"));
    return false;
  }
  return true;
}

/// The body format of a submission; replies 415 and returns nullopt for
/// any other. Only JSON, YAML and multipart bodies are ever read: a form or
/// untyped body (what a browser sends cross-origin unasked) is never parsed.
std::optional<body_format> accepted_format(const http::exchange_ptr& ex, submit_mode mode) {
  auto& req = ex->req();
  auto format = submission_format(req.header("content-type"));
  if (!format) {
    auto type = media_type(req);
    ex->reply(http::response::error(415, "unsupported_media_type",
                                    std::string{"Content-Type must be "} +
                                        accepted_submission_types + ", got " +
                                        (type.empty() ? "none" : type),
                                    "Content-Type"));
    return std::nullopt;
  }
  if (*format != body_format::multipart && mode != submit_mode::jobs) {
    ex->reply(http::response::error(415, "unsupported_media_type",
                                    "this endpoint takes multipart/form-data with a file "
                                    "field (the project archive)",
                                    "file"));
    return std::nullopt;
  }
  return format;
}

/// Parses the body of any submit endpoint; replies 4xx and returns nullopt
/// when it is not acceptable.
std::optional<submission> parse_submission(const node_context& ctx, const http::exchange_ptr& ex,
                                           submit_mode mode, body_format format) {
  auto& req = ex->req();
  std::optional<std::string> default_command;
  if (mode != submit_mode::jobs)
    default_command = ctx.cfg->jobs.default_command;
  submission out;
  try {
    auto body = request_body(req, ex);
    out.body_owner = std::move(body.owner);
    if (format == body_format::multipart) {
      if (!parse_form(ctx, ex, mode, body.bytes, default_command, out))
        return std::nullopt;
    } else {
      out.spec = parse_spec_text(body.bytes, format == body_format::yaml, default_command);
    }
  } catch (const spec_error& e) {
    ex->reply(http::response::error(400, "invalid_spec", e.what(), e.field()));
    return std::nullopt;
  } catch (const std::invalid_argument& e) {
    ex->reply(http::response::error(400, "invalid_multipart", e.what(), "body"));
    return std::nullopt;
  } catch (const std::system_error& e) {
    ex->reply(http::response::error(500, "internal", e.what()));
    return std::nullopt;
  }
  if (out.archive.size() > ctx.cfg->jobs.max_archive_bytes) {
    ex->reply(http::response::error(
        413, "payload_too_large",
        "the archive has " + std::to_string(out.archive.size()) + " bytes, more than " +
            std::to_string(ctx.cfg->jobs.max_archive_bytes) + " (jobs.max_archive_bytes)",
        "file"));
    return std::nullopt;
  }
  return out;
}

persistence::job_record make_record(const node_context& ctx, const job_spec& spec,
                                    const std::string& id, const http::request& req) {
  persistence::job_record rec;
  rec.id = id;
  rec.name = spec.name;
  rec.spec = to_json(spec);
  rec.priority = spec.priority;
  rec.labels = spec.labels;
  rec.retries = spec.retries;
  rec.request_id = req.request_id;
  rec.submitted_by = req.principal;
  rec.workspace = ctx.cfg->data_dir + "/workspaces/" + id;
  rec.queued_at = now_ns();
  return rec;
}

/// After the job is stored: the endpoint's answer.
void answer_submitted(const std::shared_ptr<node_context>& ctx, const http::exchange_ptr& ex,
                      submit_mode mode, const std::string& id) {
  switch (mode) {
  case submit_mode::jobs: {
    auto res = http::response::json(201, json{{"job_id", id}, {"status", js::queued}}.dump());
    res.headers.emplace_back("Location", "/jobs/" + id);
    ex->reply(std::move(res));
    return;
  }
  case submit_mode::async:
    ex->reply(http::response::json(200, json{{"job_id", id}}.dump()));
    return;
  case submit_mode::sse:
  case submit_mode::sse_with_id: {
    auto stream = ex->stream();
    if (mode == submit_mode::sse_with_id)
      stream->send({}, "job_id", json{{"type", "job_id"}, {"job_id", id}}.dump());
    auto controller = lookup(*ctx->sys, names::jobs).value_or(job_controller_actor{});
    job_stream_options opts;
    opts.job_id = id;
    opts.from_beginning = true;
    ctx->sys->spawn(job_stream, stream, ctx->env, controller, opts);
    return;
  }
  }
}

/// Removes a workspace on a pool worker: never on a scheduler thread (the
/// bridge's) or an io thread.
void remove_workspace(const std::shared_ptr<task_pool>& pool, std::string workspace) {
  pool->submit([workspace = std::move(workspace)] {
    std::error_code ignored;
    std::filesystem::remove_all(workspace, ignored);
  });
}

/// Stores the job through the controller (from a bridge actor).
void submit_to_controller(const std::shared_ptr<node_context>& ctx,
                          const std::shared_ptr<task_pool>& pool, const http::exchange_ptr& ex,
                          submit_mode mode, persistence::job_record rec) {
  auto workspace = rec.workspace;
  ask(
      *ctx, ex, controller, std::make_tuple(submit_atom::value, persistence::encode(rec)),
      [ctx, ex, mode](const std::string& id) { answer_submitted(ctx, ex, mode, id); },
      [pool, ex, workspace](const api_error& e) {
        remove_workspace(pool, workspace);
        ex->reply(to_response(e));
      });
}

/// Extracts the archive into the job's workspace, flushed to disk, on a pool
/// worker; replies and removes the workspace when that fails.
bool extract_upload(const config& cfg, const http::exchange_ptr& ex,
                    const persistence::job_record& rec, std::string_view archive) {
  archive_limits limits;
  limits.max_archive_bytes = cfg.jobs.max_archive_bytes;
  limits.max_entries = static_cast<uint64_t>(cfg.jobs.max_archive_entries);
  limits.max_expanded_bytes = cfg.jobs.max_expanded_bytes;
  limits.max_memory_bytes = cfg.jobs.max_archive_memory_bytes;
  std::optional<http::response> failure;
  try {
    auto stats = extract_archive(archive, rec.workspace, limits);
    logging::get("jobs")->info("job {}: archive extracted ({} entries, {} bytes)", rec.id,
                               stats.entries, stats.bytes);
    return true;
  } catch (const archive_memory_error& e) {
    failure = http::response::error(
        400, "invalid_archive", std::string{e.what()} + " (jobs.max_archive_memory_bytes)", "file");
  } catch (const archive_error& e) {
    failure = http::response::error(400, "invalid_archive", e.what(), "file");
  } catch (const std::exception& e) {
    logging::get("jobs")->error("job {}: extracting its archive failed: {}", rec.id, e.what());
    failure = http::response::error(500, "internal",
                                    "extracting the archive failed: " + std::string{e.what()});
  }
  std::error_code ignored;
  std::filesystem::remove_all(rec.workspace, ignored);
  ex->reply(std::move(*failure));
  return false;
}

/// Parses the submission, prepares its workspace (extracting the archive, if
/// any) and hands the job to the controller.
void accept(const std::shared_ptr<node_context>& ctx, const std::shared_ptr<task_pool>& pool,
            const http::exchange_ptr& ex, submit_mode mode, body_format format) {
  auto parsed = parse_submission(*ctx, ex, mode, format);
  if (!parsed)
    return;
  auto id = persistence::new_job_id();
  auto rec = make_record(*ctx, parsed->spec, id, ex->req());
  std::error_code fs_err;
  std::filesystem::create_directories(rec.workspace, fs_err);
  if (fs_err) {
    ex->reply(http::response::error(
        500, "internal", "cannot create workspace " + rec.workspace + ": " + fs_err.message()));
    return;
  }
  if (!parsed->archive.empty()) {
    bool extracted = extract_upload(*ctx->cfg, ex, rec, parsed->archive);
    parsed->body_owner.reset(); // unmaps the upload
    if (!extracted)
      return;
  }
  submit_to_controller(ctx, pool, ex, mode, std::move(rec));
}

void submit(const std::shared_ptr<node_context>& ctx, const std::shared_ptr<task_pool>& pool,
            const http::exchange_ptr& ex, submit_mode mode) {
  auto format = accepted_format(ex, mode);
  if (!format)
    return;
  if (*format != body_format::multipart) {
    accept(ctx, pool, ex, mode, *format);
    return;
  }
  // A multipart body carries the archive: reading it (the delimiter search
  // included) and extracting it block on disk and memory, so pool workers
  // (detached actors) do it, at most jobs.max_concurrent_extractions at once,
  // the rest in FIFO order; never an io thread or a scheduler thread.
  pool->submit([ctx, pool, ex, mode, rid = ex->req().request_id] {
    logging::request_scope scope{rid};
    try {
      accept(ctx, pool, ex, mode, body_format::multipart);
    } catch (const std::exception& e) {
      logging::get("jobs")->error("accepting a submission failed: {}", e.what());
      ex->reply(http::response::error(500, "internal", e.what()));
    }
  });
}

std::optional<persistence::job_record> find_job(const node_context& ctx,
                                                const http::exchange_ptr& ex) {
  auto& id = ex->req().params.at("id");
  auto rec = persistence::get_job(*ctx.env, id);
  if (!rec)
    ex->reply(http::response::error(404, "not_found", "no job " + id, "id"));
  return rec;
}

/// Records one GET /jobs page looks at, at most, and the stored bytes of the
/// records it returns (specs can be large) before it ends early.
constexpr size_t jobs_page_scan = 10'000;
constexpr size_t jobs_page_bytes = 8u << 20;

void list(const std::shared_ptr<node_context>& ctx, const http::exchange_ptr& ex) {
  auto& req = ex->req();
  persistence::job_filter filter;
  query_params params{req};
  filter.status = params.one_of("status", {js::queued, js::running, js::succeeded, js::failed,
                                           js::cancelled, js::timed_out, js::lost});
  filter.labels = params.key_values("label");
  filter.since_ns = params.time("since").value_or(filter.since_ns);
  auto limit = params.uint("limit", 100, 1, 1000);
  if (params.reply_if_bad(ex))
    return;
  // Off the io thread and off the scheduler, and bounded: however sparse the
  // filter, a page looks at jobs_page_scan records at most (it may then be
  // short, even empty, with a next_cursor to go on from).
  run_read(*ctx, ex, [ctx, filter, cursor = req.param("cursor").value_or(""), limit] {
    std::string next;
    auto jobs = persistence::list_jobs(*ctx->env, filter, cursor, limit, next, jobs_page_scan,
                                       jobs_page_bytes);
    return http::response::json(
        200, page_body(
                 "jobs", jobs, [](const persistence::job_record& r) { return to_api_json(r); },
                 "next_cursor", next.empty() ? "null" : json(next).dump()));
  });
}

void stream(const std::shared_ptr<node_context>& ctx, const http::exchange_ptr& ex) {
  auto rec = find_job(*ctx, ex);
  if (!rec)
    return;
  auto& req = ex->req();
  job_stream_options opts;
  opts.job_id = rec->id;
  query_params params{req};
  opts.from_beginning = params.flag("from_beginning", opts.from_beginning);
  opts.last_event_id = params.last_event_id();
  if (params.reply_if_bad(ex))
    return;
  auto controller = lookup(*ctx->sys, names::jobs).value_or(job_controller_actor{});
  auto s = ex->stream();
  ctx->sys->spawn(job_stream, s, ctx->env, controller, opts);
}

/// GET /jobs/{id}/logs: the stored lines so far (text, or NDJSON with
/// `Accept: application/x-ndjson`), streamed in pages.
void logs(const std::shared_ptr<node_context>& ctx, const http::exchange_ptr& ex) {
  auto rec = find_job(*ctx, ex);
  if (!rec)
    return;
  bool ndjson = ex->req().header("accept").find("application/x-ndjson") != std::string::npos;
  auto out = ex->chunked(ndjson ? "application/x-ndjson" : "text/plain; charset=utf-8");
  if (out->closed())
    return; // HEAD
  ctx->sys->spawn(log_download, ctx->env, rec->id, std::move(out), ndjson);
}

void cancel(const std::shared_ptr<node_context>& ctx, const http::exchange_ptr& ex) {
  auto rec = find_job(*ctx, ex);
  if (!rec)
    return;
  auto& req = ex->req();
  if (auto why = cancel_refusal(rec->id, rec->submitted_by, req.principal, req.granted)) {
    ex->reply(http::response::error(403, "forbidden", *why));
    return;
  }
  if (persistence::is_terminal(rec->status)) {
    ex->reply(http::response::error(409, "conflict",
                                    "job " + rec->id + " already ended: " + rec->status, "id"));
    return;
  }
  auto id = rec->id;
  ask(*ctx, ex, controller, std::make_tuple(cancel_atom::value, id),
      [ex, id](const std::string& status) {
        ex->reply(http::response::json(200, json{{"job_id", id}, {"status", status}}.dump()));
      });
}

/// Extraction workers: detached actors, jobs.max_concurrent_extractions at most.
std::shared_ptr<task_pool> extraction_pool(const std::shared_ptr<node_context>& ctx) {
  auto limit = static_cast<size_t>(ctx->cfg->jobs.max_concurrent_extractions);
  // ctx->sys is set once the actor system runs, after the routes are added.
  return task_pool::make(limit, [ctx](std::function<void()> work) {
    ctx->sys->spawn<caf::detached>([work = std::move(work)](caf::blocking_actor*) { work(); });
  });
}

} // namespace

void add_job_routes(http::router& r, std::shared_ptr<node_context> ctx) {
  auto pool = extraction_pool(ctx);
  auto submit_route = [ctx, pool](submit_mode mode) {
    return [ctx, pool, mode](const http::exchange_ptr& ex) { submit(ctx, pool, ex, mode); };
  };
  r.add("POST", "/jobs", {http::role::submit, http::body_kind::upload},
        submit_route(submit_mode::jobs));
  r.add("POST", "/submit", {http::role::submit, http::body_kind::upload},
        submit_route(submit_mode::sse));
  r.add("POST", "/submit-stream", {http::role::submit, http::body_kind::upload},
        submit_route(submit_mode::sse_with_id));
  r.add("POST", "/submit-async", {http::role::submit, http::body_kind::upload},
        submit_route(submit_mode::async));
  r.add("GET", "/jobs", {http::role::read}, [ctx](const http::exchange_ptr& ex) { list(ctx, ex); });
  r.add("GET", "/jobs/{id}", {http::role::read}, [ctx](const http::exchange_ptr& ex) {
    if (auto rec = find_job(*ctx, ex))
      ex->reply(http::response::json(200, to_api_json(*rec)));
  });
  r.add("GET", "/jobs/{id}/stream", {http::role::read, http::body_kind::none, true},
        [ctx](const http::exchange_ptr& ex) { stream(ctx, ex); });
  r.add("GET", "/jobs/{id}/logs", {http::role::read},
        [ctx](const http::exchange_ptr& ex) { logs(ctx, ex); });
  r.add("DELETE", "/jobs/{id}", {http::role::submit},
        [ctx](const http::exchange_ptr& ex) { cancel(ctx, ex); });
}

} // namespace troupe
