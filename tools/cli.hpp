// The plumbing of the daxalloc command-line tool, kept apart from the
// subcommands (daxalloc.cpp) so that tests/cli can test it directly:
//
//   arguments   a command's options and positional arguments, parsed by hand
//               (GNU style: --name VALUE, --name=VALUE, --, -h/--help)
//   sizes       "64M", "1G", "2MiB", plain bytes: binary suffixes only
//   text        byte counts with units, hex offsets, percentages, tables
//   json        a small streaming writer that escapes every string
//   progress    a spinner on stderr while a long call runs, only on a terminal
//
// Usage errors (a bad option or value) are cli::usage_error; the tool turns
// them into exit status 2 and a hint to run `daxalloc COMMAND --help`.
#pragma once

#include <concepts>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace daxalloc::cli {

// Exit statuses, as documented in docs/cli.md.
inline constexpr int exit_ok = 0;
inline constexpr int exit_failed = 1;  // the operation failed, or check found problems
inline constexpr int exit_usage = 2;   // the command line was wrong

class usage_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// ---- arguments ----

struct option_spec {
  std::string_view name;        // without the leading "--"
  std::string_view value_name;  // empty: a flag without a value
  std::string_view help;
};

struct command_spec {
  std::string_view name;
  std::vector<std::string_view> positionals;  // names of the required arguments ("PATH")
  std::string_view synopsis;                  // the usage line after "daxalloc NAME"
  std::string_view summary;                   // one line, for `daxalloc --help`
  std::string_view description;  // paragraphs for `daxalloc NAME --help`, wrapped at 78 columns
  std::vector<option_spec> options;
};

struct parsed_args {
  std::vector<std::string> positionals;
  std::map<std::string, std::string, std::less<>> values;  // options with a value
  std::vector<std::string> flags;                          // flags that were given
  bool help = false;                                       // -h or --help

  [[nodiscard]] bool flag(std::string_view name) const;
  [[nodiscard]] std::optional<std::string> value(std::string_view name) const;
};

// Parses the arguments after the command name. Throws usage_error for an
// unknown option, a missing or unexpected value, an option given twice, or
// the wrong number of positional arguments (not checked when help is asked).
[[nodiscard]] parsed_args parse_args(const command_spec& spec, std::span<const std::string> args);

// "usage: daxalloc NAME ..." plus the description and the option table.
[[nodiscard]] std::string command_help(const command_spec& spec);

// ---- sizes and numbers ----

// Bytes from "123", "64K", "64KiB", "2M", "1G", "1T" (case-insensitive,
// powers of 1024, an optional "B"/"iB"). nullopt for anything else, zero
// included when allow_zero is false, and on overflow.
[[nodiscard]] std::optional<std::uint64_t> parse_size(std::string_view text,
                                                      bool allow_zero = false);
// A decimal unsigned integer, nothing else.
[[nodiscard]] std::optional<std::uint64_t> parse_uint(std::string_view text);

// ---- text for humans ----

// "0 B", "4 KiB", "1100 MiB" (exact, in the largest unit that keeps it under
// 10000), else two decimals: "246.08 MiB".
[[nodiscard]] std::string human_bytes(std::uint64_t bytes);
// "0x8000000"
[[nodiscard]] std::string hex(std::uint64_t value);
// "12.5 %" from a fraction in [0, 1]
[[nodiscard]] std::string percent(double fraction);
// "[0x0, 0x8000000)"
[[nodiscard]] std::string span_text(std::uint64_t start, std::uint64_t end);

// Rows of cells printed in aligned columns (the first row is the header);
// columns listed in right_aligned are padded on the left.
class table {
 public:
  explicit table(std::vector<std::string> header, std::vector<bool> right_aligned = {});
  void add(std::vector<std::string> row);
  [[nodiscard]] std::string render(std::string_view indent = "  ") const;
  [[nodiscard]] bool empty() const noexcept { return rows_.size() <= 1; }

 private:
  std::vector<std::vector<std::string>> rows_;
  std::vector<bool> right_;
};

// ---- json ----

// Escapes for a JSON string body: quote, backslash and control characters;
// bytes that are not valid UTF-8 (a file name can hold any) become U+FFFD so
// that the output is always valid JSON.
[[nodiscard]] std::string json_escape(std::string_view text);

// A streaming writer of pretty-printed JSON. Keys and values are written in
// order; commas, indentation and escaping are its business. Objects and
// arrays begun on_one_line (and everything inside them) go on one line.
class json_writer {
 public:
  json_writer& begin_object(bool on_one_line = false);
  json_writer& end_object();
  json_writer& begin_array(bool on_one_line = false);
  json_writer& end_array();
  json_writer& key(std::string_view name);

  json_writer& value(std::string_view text);
  json_writer& value(const char* text) { return value(std::string_view(text)); }
  json_writer& value(const std::string& text) { return value(std::string_view(text)); }
  json_writer& value(bool b);
  json_writer& value(double d);  // null when not finite
  template <std::integral T>
  requires(!std::same_as<T, bool>) json_writer& value(T v) {
    if constexpr (std::is_signed_v<T>)
      return raw(std::to_string(static_cast<long long>(v)));
    else
      return raw(std::to_string(static_cast<unsigned long long>(v)));
  }
  json_writer& null() { return raw("null"); }

  // key(name).value(v) in one call.
  template <class T>
  json_writer& field(std::string_view name, const T& v) {
    return key(name).value(v);
  }

  // The document, with a final newline; the writer must be back at depth 0.
  [[nodiscard]] std::string str() const;

 private:
  struct level {
    bool object;
    bool on_one_line;
    std::size_t count;
  };
  json_writer& raw(std::string_view token);
  json_writer& close_level(char bracket);
  void before_value();
  void newline();

  std::string out_;
  std::vector<level> stack_;
  bool after_key_ = false;
};

// ---- progress ----

// Shows "LABEL ... | 1.2 s" on stderr from its construction on, updated ten
// times a second, and erases it when destroyed. Does nothing when stderr is not a
// terminal (or when enabled is false), so scripts and logs see nothing.
class progress {
 public:
  explicit progress(std::string label, bool enabled = true);
  ~progress();
  progress(const progress&) = delete;
  progress& operator=(const progress&) = delete;

  [[nodiscard]] bool active() const noexcept { return thread_.joinable(); }

 private:
  void run();
  void draw(unsigned frame, double seconds) const;

  std::string label_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool done_ = false;  // guarded by mutex_
  std::thread thread_;
};

}  // namespace daxalloc::cli
