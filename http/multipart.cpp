#include "http/multipart.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <functional>
#include <optional>
#include <stdexcept>
#include <system_error>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/ground/text.hpp"

namespace troupe::http {

namespace {

constexpr size_t max_boundary_size = 70;

[[noreturn]] void fail(const std::string& message) {
  throw std::invalid_argument(message);
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

bool is_blank(char c) {
  return c == ' ' || c == '\t';
}

/// `s` made safe to echo in an error: cut short, bytes outside printable ASCII
/// shown as '?' (messages end up in JSON).
std::string printable(std::string_view s) {
  constexpr size_t limit = 60;
  std::string out{s.substr(0, limit)};
  for (auto& c : out)
    if (c < 0x20 || c > 0x7E)
      c = '?';
  return s.size() > limit ? out + "..." : out;
}

bool is_token(std::string_view s) {
  auto tchar = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) ||
           std::string_view{"!#$%&'*+-.^_`|~"}.find(c) != std::string_view::npos;
  };
  return !s.empty() && std::all_of(s.begin(), s.end(), tchar);
}

struct parameter {
  std::string name; ///< lower case
  std::string value;
};

/// A header value split as `main; a=b; c="d"`.
struct header_value {
  std::string_view main;
  std::vector<parameter> params;
};

/// Reads the quoted string opening at `s[i]` and moves `i` past it. Only `\"`
/// and `\\` are escapes: browsers send Windows paths with bare backslashes.
std::string read_quoted(std::string_view s, size_t& i, std::string_view header) {
  std::string out;
  for (++i; i < s.size(); ++i) {
    if (s[i] == '"') {
      ++i;
      return out;
    }
    if (s[i] == '\\' && i + 1 < s.size() && (s[i + 1] == '"' || s[i + 1] == '\\'))
      ++i;
    out += s[i];
  }
  fail(std::string{header} + " has an unterminated quoted string");
}

/// Reads one `name=value` parameter starting at `s[i]`, leaving `i` at the
/// next `;` or the end.
parameter read_parameter(std::string_view s, size_t& i, std::string_view header) {
  auto eq = s.find_first_of("=;", i);
  auto name = trim_ows(s.substr(i, eq - i));
  if (eq == std::string_view::npos || s[eq] != '=' || !is_token(name))
    fail("malformed " + std::string{header} + " parameter: " + printable(s.substr(i)));
  parameter p;
  for (char c : name)
    p.name += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  i = eq + 1;
  while (i < s.size() && is_blank(s[i]))
    ++i;
  if (i < s.size() && s[i] == '"') {
    p.value = read_quoted(s, i, header);
    while (i < s.size() && is_blank(s[i]))
      ++i;
    if (i < s.size() && s[i] != ';')
      fail(std::string{header} + " has text after the quoted value of " + p.name);
    return p;
  }
  auto end = std::min(s.find(';', i), s.size());
  p.value = trim_ows(s.substr(i, end - i));
  i = end;
  return p;
}

header_value parse_header_value(std::string_view s, std::string_view header) {
  auto semi = std::min(s.find(';'), s.size());
  header_value out{trim_ows(s.substr(0, semi)), {}};
  for (size_t i = semi; i < s.size();) {
    ++i; // past ';'
    while (i < s.size() && is_blank(s[i]))
      ++i;
    if (i < s.size())
      out.params.push_back(read_parameter(s, i, header));
  }
  return out;
}

/// The parameter `name` if present; a repeated one is ambiguous, so refused.
std::optional<std::string> find_param(const header_value& hv, std::string_view name,
                                      std::string_view header) {
  std::optional<std::string> out;
  for (const auto& p : hv.params) {
    if (p.name != name)
      continue;
    if (out)
      fail(std::string{header} + " has more than one " + std::string{name} + " parameter");
    out = p.value;
  }
  return out;
}

/// RFC 2046: 1 to 70 of DIGIT ALPHA '()+_,-./:=? and space, not ending in space.
bool valid_boundary(std::string_view b) {
  auto bchar = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) ||
           std::string_view{"'()+_,-./:=? "}.find(c) != std::string_view::npos;
  };
  return !b.empty() && b.size() <= max_boundary_size && b.back() != ' ' &&
         std::all_of(b.begin(), b.end(), bchar);
}

std::string boundary_of(std::string_view content_type) {
  constexpr std::string_view header = "Content-Type";
  auto hv = parse_header_value(content_type, header);
  if (!iequals(hv.main, "multipart/form-data"))
    fail("Content-Type must be multipart/form-data, got " + printable(hv.main));
  auto boundary = find_param(hv, "boundary", header);
  if (!boundary)
    fail("Content-Type multipart/form-data has no boundary parameter");
  if (!valid_boundary(*boundary))
    fail("the multipart boundary must be 1 to 70 letters, digits or '()+_,-./:=? (not ending "
         "in a space), got " +
         printable(*boundary));
  return *boundary;
}

/// Locates delimiter lines: CRLF, "--boundary", then "--" (the last one) or
/// optional blanks and CRLF. Anything else after the boundary is data.
class delimiter_finder {
public:
  struct line {
    size_t begin; ///< where the delimiter (with its leading CRLF) starts
    size_t end;   ///< where the next part starts
    bool last;
  };

  delimiter_finder(std::string_view body, std::string_view boundary)
      : body_(body), pattern_("\r\n--" + std::string{boundary}),
        searcher_(pattern_.begin(), pattern_.end()) {}

  delimiter_finder(const delimiter_finder&) = delete; // searcher_ points into pattern_
  delimiter_finder& operator=(const delimiter_finder&) = delete;

  /// The first delimiter line at or after `from`; at 0 the body may open with
  /// one that lacks the CRLF.
  std::optional<line> find(size_t from) const {
    auto dash_boundary = std::string_view{pattern_}.substr(2);
    if (from == 0 && body_.substr(0, dash_boundary.size()) == dash_boundary)
      if (auto l = finish(0, dash_boundary.size()))
        return l;
    for (;;) {
      auto it = std::search(body_.begin() + from, body_.end(), searcher_);
      if (it == body_.end())
        return std::nullopt;
      auto at = static_cast<size_t>(it - body_.begin());
      if (auto l = finish(at, at + pattern_.size()))
        return l;
      from = at + 1;
    }
  }

private:
  /// Checks what follows the boundary that ends at `pos`.
  std::optional<line> finish(size_t begin, size_t pos) const {
    if (body_.substr(pos, 2) == "--")
      return line{begin, pos + 2, true};
    while (pos < body_.size() && is_blank(body_[pos]))
      ++pos;
    if (body_.substr(pos, 2) == "\r\n")
      return line{begin, pos + 2, false};
    return std::nullopt;
  }

  std::string_view body_;
  std::string pattern_;
  std::boyer_moore_horspool_searcher<std::string::const_iterator> searcher_;
};

void apply_disposition(std::string_view value, form_part& part) {
  constexpr std::string_view header = "Content-Disposition";
  auto hv = parse_header_value(value, header);
  if (!iequals(hv.main, "form-data"))
    fail("a part's Content-Disposition must be form-data, got " + printable(hv.main));
  auto name = find_param(hv, "name", header);
  if (!name)
    fail("a part's Content-Disposition has no name parameter");
  part.name = std::move(*name);
  part.filename = find_param(hv, "filename", header).value_or("");
}

/// Applies one `Name: value` header line; returns true for Content-Disposition.
bool apply_header(std::string_view line, form_part& part) {
  auto colon = line.find(':');
  if (colon == std::string_view::npos || !is_token(line.substr(0, colon)))
    fail("malformed part header: " + printable(line));
  auto name = line.substr(0, colon);
  auto value = trim_ows(line.substr(colon + 1));
  if (iequals(name, "content-disposition")) {
    apply_disposition(value, part);
    return true;
  }
  if (iequals(name, "content-type"))
    part.content_type = value;
  return false;
}

/// One part: header lines, a blank line, then the data.
form_part parse_part(std::string_view content) {
  form_part part;
  bool has_disposition = false;
  size_t pos = 0;
  while (pos < content.size()) {
    auto eol = content.find("\r\n", pos);
    if (eol == std::string_view::npos)
      fail("malformed part headers: expected header lines ending in CRLF, then a blank line");
    auto line = content.substr(pos, eol - pos);
    pos = eol + 2;
    if (line.empty())
      break;
    if (apply_header(line, part)) {
      if (has_disposition)
        fail("a part has more than one Content-Disposition header");
      has_disposition = true;
    }
  }
  if (!has_disposition)
    fail("a part has no Content-Disposition: form-data; name=... header");
  part.data = content.substr(pos);
  return part;
}

} // namespace

std::vector<form_part> parse_multipart(std::string_view content_type_header,
                                       std::string_view body) {
  auto boundary = boundary_of(content_type_header);
  delimiter_finder delimiters{body, boundary};
  auto at = delimiters.find(0);
  if (!at)
    fail("the multipart body has no --" + boundary + " delimiter");
  std::vector<form_part> parts;
  while (!at->last) {
    auto next = delimiters.find(at->end);
    if (!next)
      fail("the multipart body is missing its final delimiter --" + boundary + "--");
    parts.push_back(parse_part(body.substr(at->end, next->begin - at->end)));
    at = next;
  }
  return parts;
}

const form_part* find_part(const std::vector<form_part>& parts, std::string_view name) {
  auto it = std::find_if(parts.begin(), parts.end(),
                         [name](const form_part& p) { return p.name == name; });
  return it == parts.end() ? nullptr : &*it;
}

mapped_file::mapped_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    throw std::system_error(errno, std::system_category(), "opening upload '" + path + "'");
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    auto err = errno;
    ::close(fd);
    throw std::system_error(err, std::system_category(), "reading upload '" + path + "'");
  }
  size_ = static_cast<size_t>(st.st_size);
  // mmap refuses an empty mapping: an empty upload is an empty view.
  if (size_ > 0) {
    addr_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (addr_ == MAP_FAILED) {
      auto err = errno;
      ::close(fd);
      throw std::system_error(err, std::system_category(), "mapping upload '" + path + "'");
    }
  }
  // The mapping keeps the file's pages reachable on its own.
  ::close(fd);
}

mapped_file::~mapped_file() {
  if (size_ > 0)
    ::munmap(addr_, size_);
}

} // namespace troupe::http
