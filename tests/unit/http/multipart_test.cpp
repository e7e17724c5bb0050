#define CAF_SUITE multipart
#include "support/dsl.hpp"

#include <stdexcept>
#include <string>
#include <vector>

#include "http/multipart.hpp"

using namespace troupe::http;

namespace {

// What `curl -F spec=... -F file=@project.tar.gz` sends.
const std::string curl_boundary = "------------------------d74496d66958873e";
const std::string curl_type = "multipart/form-data; boundary=" + curl_boundary;

/// Builds a body the way curl -F does.
struct form_builder {
  std::string boundary;
  std::string body;

  explicit form_builder(std::string b = curl_boundary) : boundary(std::move(b)) {}

  form_builder& field(const std::string& name, const std::string& value) {
    body += "--" + boundary + "\r\nContent-Disposition: form-data; name=\"" + name + "\"\r\n\r\n" +
            value + "\r\n";
    return *this;
  }

  form_builder& file(const std::string& name, const std::string& filename, const std::string& type,
                     const std::string& data) {
    body += "--" + boundary + "\r\nContent-Disposition: form-data; name=\"" + name +
            "\"; filename=\"" + filename + "\"\r\nContent-Type: " + type + "\r\n\r\n" + data +
            "\r\n";
    return *this;
  }

  std::string finish() const { return body + "--" + boundary + "--\r\n"; }
};

/// The message parse_multipart throws, or "ok".
std::string error_of(const std::string& content_type, const std::string& body) {
  try {
    parse_multipart(content_type, body);
    return "ok";
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
}

/// Every byte value, NULs, and things that look like delimiters but are not.
std::string tricky_payload() {
  std::string data;
  for (int i = 0; i < 256; ++i)
    data += static_cast<char>(i);
  data += std::string(3, '\0');
  data += "--" + curl_boundary + "\r\n";      // no CRLF before it
  data += "\n--" + curl_boundary + "\r\n";    // LF only
  data += "\r--" + curl_boundary + "--";      // CR only
  data += "\r\n--" + curl_boundary + "X\r\n"; // boundary followed by other text
  data += "\r\n--" + curl_boundary.substr(1); // a shorter boundary
  data += "\r\n-- \r\n\r\n";
  return data;
}

} // namespace

CAF_TEST(a curl style body yields its fields and files) {
  auto archive = std::string("\x1f\x8b\x08\0tar", 7);
  auto body = form_builder{}
                  .field("spec", R"({"command": "make"})")
                  .file("file", "project.tar.gz", "application/octet-stream", archive)
                  .finish();
  auto parts = parse_multipart(curl_type, body);
  CAF_REQUIRE_EQUAL(parts.size(), 2u);
  CAF_CHECK_EQUAL(parts[0].name, "spec");
  CAF_CHECK_EQUAL(parts[0].filename, "");
  CAF_CHECK_EQUAL(parts[0].content_type, "");
  CAF_CHECK_EQUAL(parts[0].data, R"({"command": "make"})");
  CAF_CHECK_EQUAL(parts[1].name, "file");
  CAF_CHECK_EQUAL(parts[1].filename, "project.tar.gz");
  CAF_CHECK_EQUAL(parts[1].content_type, "application/octet-stream");
  CAF_CHECK(parts[1].data == archive);
}

CAF_TEST(find_part returns the first part of that name) {
  auto body = form_builder{}.field("a", "1").field("b", "2").field("a", "3").finish();
  auto parts = parse_multipart(curl_type, body);
  CAF_REQUIRE(find_part(parts, "a") != nullptr);
  CAF_CHECK_EQUAL(find_part(parts, "a")->data, "1");
  CAF_CHECK_EQUAL(find_part(parts, "b")->data, "2");
  CAF_CHECK(find_part(parts, "c") == nullptr);
  CAF_CHECK(find_part({}, "a") == nullptr);
}

CAF_TEST(binary data is preserved exactly) {
  auto data = tricky_payload();
  auto body = form_builder{}
                  .file("file", "blob.bin", "application/octet-stream", data)
                  .field("after", "x")
                  .finish();
  auto parts = parse_multipart(curl_type, body);
  CAF_REQUIRE_EQUAL(parts.size(), 2u);
  CAF_CHECK_EQUAL(parts[0].data.size(), data.size());
  CAF_CHECK(parts[0].data == data);
  CAF_CHECK_EQUAL(parts[1].data, "x");
}

CAF_TEST(a large part is a view into the body and intact) {
  std::string data(8 << 20, '\0');
  for (size_t i = 0; i < data.size(); ++i)
    data[i] = static_cast<char>((i * 131) >> 3);
  auto body = form_builder{}.file("f", "big", "x/y", data).finish();
  auto parts = parse_multipart(curl_type, body);
  CAF_REQUIRE_EQUAL(parts.size(), 1u);
  CAF_CHECK(parts[0].data == data);
  // Not a copy: the part's bytes are the body's own.
  CAF_CHECK(parts[0].data.data() >= body.data());
  CAF_CHECK(parts[0].data.data() + parts[0].data.size() <= body.data() + body.size());
}

CAF_TEST(empty values and parts) {
  auto body = form_builder{}.field("empty", "").finish();
  auto parts = parse_multipart(curl_type, body);
  CAF_REQUIRE_EQUAL(parts.size(), 1u);
  CAF_CHECK_EQUAL(parts[0].data, "");
  // Headers straight followed by the delimiter: no blank line, no data.
  auto bare = "--b\r\nContent-Disposition: form-data; name=x\r\n\r\n--b--";
  parts = parse_multipart("multipart/form-data; boundary=b", bare);
  CAF_REQUIRE_EQUAL(parts.size(), 1u);
  CAF_CHECK_EQUAL(parts[0].name, "x");
  CAF_CHECK_EQUAL(parts[0].data, "");
  CAF_CHECK(parse_multipart("multipart/form-data; boundary=b", "--b--").empty());
}

CAF_TEST(the boundary may be quoted) {
  auto type = R"(multipart/form-data; charset=utf-8; boundary="simple boundary")";
  auto body = form_builder{"simple boundary"}.field("a", "1").finish();
  auto parts = parse_multipart(type, body);
  CAF_REQUIRE_EQUAL(parts.size(), 1u);
  CAF_CHECK_EQUAL(parts[0].data, "1");
  auto upper_body = form_builder{"xyz"}.field("a", "2").finish();
  auto upper = parse_multipart("Multipart/Form-Data;BOUNDARY=xyz", upper_body);
  CAF_REQUIRE_EQUAL(upper.size(), 1u);
  CAF_CHECK_EQUAL(upper[0].data, "2");
  auto longest = std::string(70, 'b');
  CAF_CHECK_EQUAL(parse_multipart("multipart/form-data; boundary=" + longest,
                                  form_builder{longest}.field("a", "3").finish())
                      .size(),
                  1u);
}

CAF_TEST(preamble epilogue and transport padding are ignored) {
  auto body = "This is the preamble.\r\n--b \t\r\n"
              "Content-Disposition: form-data; name=\"a\"\r\n\r\n"
              "one\r\n--b\r\n"
              "Content-Disposition: form-data; name=\"b\"\r\n\r\n"
              "two\r\n--b--\r\nThis is the epilogue, with --b\r\n in it.";
  auto parts = parse_multipart("multipart/form-data; boundary=b", body);
  CAF_REQUIRE_EQUAL(parts.size(), 2u);
  CAF_CHECK_EQUAL(parts[0].data, "one");
  CAF_CHECK_EQUAL(parts[1].data, "two");
}

CAF_TEST(header names are case insensitive and others are ignored) {
  auto body = "--b\r\n"
              "CONTENT-DISPOSITION: Form-Data; NAME=\"a\"; FileName=\"x.yaml\"\r\n"
              "content-type:application/yaml\r\n"
              "X-Extra: whatever\r\n"
              "\r\n"
              "command: ls\r\n--b--";
  auto parts = parse_multipart("multipart/form-data; boundary=b", body);
  CAF_REQUIRE_EQUAL(parts.size(), 1u);
  CAF_CHECK_EQUAL(parts[0].name, "a");
  CAF_CHECK_EQUAL(parts[0].filename, "x.yaml");
  CAF_CHECK_EQUAL(parts[0].content_type, "application/yaml");
  CAF_CHECK_EQUAL(parts[0].data, "command: ls");
}

CAF_TEST(names and filenames unescape quotes) {
  auto body = "--b\r\n"
              R"(Content-Disposition: form-data; name="say \"hi\""; filename="a;b \\ \"c\".txt")"
              "\r\n\r\n1\r\n--b\r\n"
              R"(Content-Disposition: form-data; name=plain; filename="C:\dir\f.txt")"
              "\r\n\r\n2\r\n--b--";
  auto parts = parse_multipart("multipart/form-data; boundary=b", body);
  CAF_REQUIRE_EQUAL(parts.size(), 2u);
  CAF_CHECK_EQUAL(parts[0].name, R"(say "hi")");
  CAF_CHECK_EQUAL(parts[0].filename, R"(a;b \ "c".txt)");
  CAF_CHECK_EQUAL(parts[1].name, "plain");
  CAF_CHECK_EQUAL(parts[1].filename, R"(C:\dir\f.txt)");
}

CAF_TEST(a bad content type header is refused) {
  auto body = form_builder{}.field("a", "1").finish();
  CAF_CHECK_EQUAL(error_of("application/json", body),
                  "Content-Type must be multipart/form-data, got application/json");
  CAF_CHECK_EQUAL(error_of("multipart/form-data", body),
                  "Content-Type multipart/form-data has no boundary parameter");
  CAF_CHECK_EQUAL(error_of("multipart/form-data; charset=utf-8", body),
                  "Content-Type multipart/form-data has no boundary parameter");
  auto bad_boundary = "the multipart boundary must be 1 to 70 letters, digits or '()+_,-./:=? "
                      "(not ending in a space), got ";
  CAF_CHECK_EQUAL(error_of("multipart/form-data; boundary=", body), bad_boundary);
  CAF_CHECK_EQUAL(error_of("multipart/form-data; boundary=\"\"", body), bad_boundary);
  CAF_CHECK_EQUAL(error_of("multipart/form-data; boundary=" + std::string(71, 'b'), body),
                  bad_boundary + std::string(60, 'b') + "...");
  CAF_CHECK_EQUAL(error_of("multipart/form-data; boundary=a@b", body),
                  std::string{bad_boundary} + "a@b");
  CAF_CHECK_EQUAL(error_of("multipart/form-data; boundary=\"ab \"", body),
                  std::string{bad_boundary} + "ab ");
  CAF_CHECK_EQUAL(error_of("multipart/form-data; boundary=\"abc", body),
                  "Content-Type has an unterminated quoted string");
  CAF_CHECK_EQUAL(error_of("multipart/form-data; boundary=a; boundary=b", body),
                  "Content-Type has more than one boundary parameter");
  CAF_CHECK_EQUAL(error_of("multipart/form-data; boundary", body),
                  "malformed Content-Type parameter: boundary");
}

CAF_TEST(delimiters must be present) {
  auto type = "multipart/form-data; boundary=b";
  CAF_CHECK_EQUAL(error_of(type, ""), "the multipart body has no --b delimiter");
  CAF_CHECK_EQUAL(error_of(type, "just text"), "the multipart body has no --b delimiter");
  auto missing_final = "the multipart body is missing its final delimiter --b--";
  auto part = std::string{"--b\r\nContent-Disposition: form-data; name=a\r\n\r\ndata"};
  CAF_CHECK_EQUAL(error_of(type, part), missing_final);
  CAF_CHECK_EQUAL(error_of(type, part + "\r\n"), missing_final);
  CAF_CHECK_EQUAL(error_of(type, part + "\r\n--b"), missing_final);
  CAF_CHECK_EQUAL(error_of(type, part + "\r\n--bc--"), missing_final);
  CAF_CHECK_EQUAL(error_of(type, part + "--b--"), missing_final);
}

CAF_TEST(every part needs a form data disposition with a name) {
  auto type = "multipart/form-data; boundary=b";
  auto wrap = [](const std::string& headers) { return "--b\r\n" + headers + "\r\ndata\r\n--b--"; };
  CAF_CHECK_EQUAL(error_of(type, wrap("Content-Type: text/plain\r\n")),
                  "a part has no Content-Disposition: form-data; name=... header");
  CAF_CHECK_EQUAL(error_of(type, wrap("")),
                  "a part has no Content-Disposition: form-data; name=... header");
  CAF_CHECK_EQUAL(error_of(type, wrap("Content-Disposition: attachment; name=a\r\n")),
                  "a part's Content-Disposition must be form-data, got attachment");
  CAF_CHECK_EQUAL(error_of(type, wrap("Content-Disposition: form-data; filename=\"a\"\r\n")),
                  "a part's Content-Disposition has no name parameter");
  CAF_CHECK_EQUAL(error_of(type, wrap("Content-Disposition: form-data\r\n")),
                  "a part's Content-Disposition has no name parameter");
  CAF_CHECK_EQUAL(error_of(type, wrap("Content-Disposition: form-data; name=a\r\n"
                                      "Content-Disposition: form-data; name=b\r\n")),
                  "a part has more than one Content-Disposition header");
  CAF_CHECK_EQUAL(error_of(type, wrap("Content-Disposition: form-data; name=a; name=b\r\n")),
                  "Content-Disposition has more than one name parameter");
}

CAF_TEST(malformed part headers are refused) {
  auto type = "multipart/form-data; boundary=b";
  auto wrap = [](const std::string& headers) { return "--b\r\n" + headers + "\r\ndata\r\n--b--"; };
  CAF_CHECK_EQUAL(error_of(type, wrap("no colon here\r\n")),
                  "malformed part header: no colon here");
  CAF_CHECK_EQUAL(error_of(type, wrap("Content-Disposition: form-data; name=a\r\n folded\r\n")),
                  "malformed part header:  folded");
  CAF_CHECK_EQUAL(error_of(type, wrap(": empty name\r\n")), "malformed part header: : empty name");
  CAF_CHECK_EQUAL(error_of(type, wrap("Bad\x01Name: x\r\n")), "malformed part header: Bad?Name: x");
  CAF_CHECK_EQUAL(error_of(type, "--b\r\nContent-Disposition: form-data; name=a\r\n--b--"),
                  "malformed part headers: expected header lines ending in CRLF, then a blank "
                  "line");
  CAF_CHECK_EQUAL(error_of(type, wrap("Content-Disposition: form-data; name=\"a\r\n")),
                  "Content-Disposition has an unterminated quoted string");
  CAF_CHECK_EQUAL(error_of(type, wrap("Content-Disposition: form-data; name=\"a\"b\r\n")),
                  "Content-Disposition has text after the quoted value of name");
  CAF_CHECK_EQUAL(error_of(type, wrap("Content-Disposition: form-data; name\r\n")),
                  "malformed Content-Disposition parameter: name");
}
